"""The audio check (R13): every prompt text has its WAV, and the WAV is the audio made for it.

For each prompt and language: `<sounds_root>/<lang>/<flow id>/<prompt id>.wav` exists, is 8 kHz
mono 16-bit PCM, shares its folder with no other file Asterisk could play instead
(`audiofiles.folder_problem`), and its manifest entry (written by ``consent-ivr sounds build``)
names this very text (`text_sha256`) and these very bytes (``audio_sha256``). A flow with more
formats (``sounds: formats: [wav, alaw, ...]``) needs each prompt's ``<prompt id>.<format>``
too, as long as the WAV (one byte per 8 kHz sample) and with the hash its manifest entry lists
under ``formats``: Asterisk plays whichever format is cheapest for the channel, so every one must
be audio made or approved for the text. What passes is kept for the `Flow`: the files' paths,
hashes and identities, the prompt's length, and its folder's identity, so that a call can later
tell whether the audio on disk is still what was hashed (`audiofiles`, which stays apart: it runs
on the process-AGI path to the first prompt).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from consent_ivr.flow.audiofiles import (
    DirIdent,
    FileIdent,
    dir_ident,
    file_ident,
    folder_problem,
    format_path,
)
from consent_ivr.flow.schema import Checker, Parsed, prompt_specs
from consent_ivr.wav import WavError, is_telephony_format, read_wav_info


def text_sha256(text: str) -> str:
    """The manifest hash of a prompt text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_path(sounds_root: Path, flow_id: str) -> Path:
    """Where `consent-ivr sounds build` records which text each audio file speaks."""
    return sounds_root / f"{flow_id}.manifest.json"


def audio_path(sounds_root: Path, lang: str, flow_id: str, prompt_id: str) -> Path:
    """`<sounds_root>/<lang>/<flow id>/<prompt id>.wav`."""
    return sounds_root / lang / flow_id / f"{prompt_id}.wav"


@dataclass
class PromptAudio:
    """What the audio check found for one prompt, per language: the file, its hash, its length
    (only once matched to the text) and the identities of the file and its folder."""

    audio: dict[str, str] = field(default_factory=dict)
    sha: dict[str, str] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    file: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: per language, format -> hash, and (path, identity) of each format's file (not the WAV's)
    format_sha: dict[str, dict[str, str]] = field(default_factory=dict)
    format_files: dict[str, tuple[tuple[str, FileIdent], ...]] = field(default_factory=dict)


def _check_formats(
    c: Checker,
    node: Node,
    wav: Path,
    frames: int,
    formats: tuple[str, ...],
    entry: dict[str, Any],
    mpath: Path,
    fix: str,
) -> tuple[dict[str, str], tuple[tuple[str, FileIdent], ...]] | None:
    """The prompt's file in each format besides the WAV: there, as long as the WAV, and the
    bytes its manifest entry lists. (format -> hash, files) when all are; else None, reported."""
    listed = entry.get("formats")
    shas: dict[str, str] = {}
    files: list[tuple[str, FileIdent]] = []
    for fmt in formats[1:]:
        path = format_path(os.path.abspath(wav), fmt)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError:
            c.error(
                node,
                f"missing audio {path}: the flow's sounds formats list {fmt}",
                f"expected the {fmt} file made with the WAV; {fix}",
                "R13",
            )
            return None
        except OSError as exc:
            c.error(
                node,
                f"cannot read audio {path} ({exc.strerror or exc})",
                f"expected a readable file; {fix}",
                "R13",
            )
            return None
        if len(data) != frames:
            c.error(
                node,
                f"audio {path} is {len(data)} bytes long, its WAV {frames} samples",
                f"expected one byte per 8 kHz sample of the WAV ({frames}); {fix}",
                "R13",
            )
            return None
        sha = hashlib.sha256(data).hexdigest()
        if not isinstance(listed, dict) or listed.get(fmt) != sha:
            c.error(
                node,
                f"audio {path} is not the audio made or approved for this text (its bytes"
                f" differ from the manifest's formats.{fmt} in {mpath})",
                f"{fix}; Asterisk may play any format of a prompt, so each must be hashed",
                "R13",
            )
            return None
        shas[fmt] = sha
        files.append((path, file_ident(st)))
    return shas, tuple(files)


def check_audio_files(
    c: Checker, p: Parsed, sounds_root: Path, build_hint: str
) -> dict[str, PromptAudio]:
    """Every prompt text has an 8 kHz mono 16-bit WAV whose manifest entry matches the text."""
    out: dict[str, PromptAudio] = {}
    if p.flow_id is None or p.flow_id_node is None or c.langs is None:
        return out
    fix = f"run `consent-ivr sounds build {build_hint}`"
    # a text that names a key placeholder while choice.keys has an error cannot be spoken: its
    # audio is not compared with it (the key error refuses the flow; `sounds build` refuses it
    # too), so that error is not buried under "no longer matches" for every such text
    keys_failed = p.keys is None and any(d.is_error for d in c.diags)
    mpath = manifest_path(sounds_root, p.flow_id)
    manifest: dict[str, Any] | None = None
    manifest_reported = False
    try:
        loaded = json.loads(mpath.read_bytes())
        if isinstance(loaded, dict):
            manifest = loaded
        else:
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        manifest_reported = True
        c.error(
            p.flow_id_node,
            f"audio manifest {mpath} is unreadable ({exc})",
            f"expected JSON; {fix}",
            "R13",
        )
    folders: dict[str, DirIdent] = {}
    unreadable: set[str] = set()
    before = len(c.diags)
    missing = total = 0
    for spec in prompt_specs(p):
        if spec.id is None or spec.text is None:
            continue
        total += len(spec.text.texts)
        info = out.setdefault(spec.id, PromptAudio())
        for lang, text in spec.text.texts.items():
            node = spec.text.nodes[lang]
            wav = audio_path(sounds_root, lang, p.flow_id, spec.id)
            info.audio[lang] = os.path.abspath(wav)
            try:
                with open(wav, "rb") as fh:  # the identity of exactly the bytes hashed
                    st = os.fstat(fh.fileno())
                    data = fh.read()
                info.file[lang] = file_ident(st)
            except FileNotFoundError:
                missing += 1
                c.error(
                    node,
                    f"missing audio {wav} for the '{lang}' text of prompt '{spec.id}'",
                    f"expected an 8 kHz mono 16-bit PCM WAV file; {fix}",
                    "R13",
                )
                continue
            except OSError as exc:
                c.error(
                    node,
                    f"cannot read audio {wav} ({exc.strerror or exc})",
                    f"expected a readable file; {fix}",
                    "R13",
                )
                continue
            try:
                winfo = read_wav_info(wav)
            except WavError as exc:
                c.error(
                    node,
                    f"audio {wav} is not usable: {exc}",
                    f"expected an 8 kHz mono 16-bit PCM WAV file; {fix}",
                    "R13",
                )
                continue
            if not is_telephony_format(winfo):
                c.error(
                    node,
                    f"audio {wav} is {winfo.describe()}",
                    f"expected 8000 Hz, 1 channel, 16-bit PCM (telephone audio); {fix}",
                    "R13",
                )
                continue
            folder = str(wav.parent)
            if folder in unreadable:  # reported once, at its first prompt
                continue
            try:
                if folder not in folders:  # before the listing: a later change then shows
                    folders[folder] = dir_ident(os.stat(folder))
                problem = folder_problem(folder, spec.id, p.formats)
            except OSError as exc:
                unreadable.add(folder)
                c.error(
                    node,
                    f"cannot list the audio folder {folder} ({exc.strerror or exc})",
                    "expected a folder this user can read, so that no other format of a"
                    " prompt can hide in it",
                    "R13",
                )
                continue
            if problem is not None:
                files = (
                    "the WAV files"
                    if p.formats == ("wav",)
                    else f"the files of the flow's sounds formats ({', '.join(p.formats)})"
                )
                expected = f"expected only {files} of the prompts; remove {problem[1]}"
                c.error(node, problem[0], expected, "R13")
                continue
            info.dirs[lang] = folders[folder]
            info.sha[lang] = hashlib.sha256(data).hexdigest()
            if manifest is None:
                if not manifest_reported:
                    manifest_reported = True
                    c.error(
                        p.flow_id_node,
                        f"no audio manifest {mpath}, so the audio cannot be matched to the texts",
                        f"expected the manifest written by sounds build; {fix}",
                        "R13",
                    )
                continue
            entry = manifest.get(f"{lang}/{spec.id}")
            if keys_failed and lang in spec.text.unbuilt:
                continue
            if not isinstance(entry, dict) or "text_sha256" not in entry:
                c.error(
                    node,
                    f"audio {wav} has no entry in the manifest {mpath}",
                    f"expected audio built from this text; {fix}",
                    "R13",
                )
            elif entry["text_sha256"] != text_sha256(text):
                c.error(node, f"audio {wav} no longer matches its text", fix, "R13")
            elif entry.get("audio_sha256") != info.sha[lang]:
                c.error(
                    node,
                    f"audio {wav} is not the audio made or approved for this text (its bytes"
                    " differ from the manifest's audio_sha256)",
                    f"{fix}, or `consent-ivr sounds approve {build_hint} {spec.id}` for a"
                    " recording made from this text",
                    "R13",
                )
            elif (
                found := _check_formats(c, node, wav, winfo.frames, p.formats, entry, mpath, fix)
            ) is not None:  # audio verified for this text: its length is the prompt's length
                info.samples[lang] = winfo.frames
                if found[1]:
                    info.format_sha[lang], info.format_files[lang] = found
    if total and missing == total:  # never built: one finding, not one per prompt
        del c.diags[before:]
        c.error(
            p.flow_id_node,
            f"no audio for flow {p.flow_id}: none of its {total} prompt texts has a WAV in"
            f" {sounds_root}/<language>/{p.flow_id}/",
            f"expected the audio made from the texts; {fix}",
            "R13",
        )
    return out
