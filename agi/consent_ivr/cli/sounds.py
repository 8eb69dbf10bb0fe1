"""Build the prompt audio of a flow with espeak-ng + sox, and keep the manifest that ties each
audio file to the exact text it speaks.

For every prompt and language: `espeak-ng -v <voice> -s <speed> -w tmp.wav` (text on stdin, so a
text can never be mistaken for an option), then `sox -R tmp.wav -r 8000 -c 1 -b 16 -e
signed-integer out.wav` (`-R`: repeatable output, the same text always gives the same bytes).
Voices: `de` -> `de`, `en` -> `en-gb` (the British voice: European callers, and espeak-ng's
best-maintained English); any other language code is passed to espeak-ng as is. `sounds build
--voice LANG=VOICE` picks another espeak-ng voice for a language (`espeak-ng --voices=LANG` lists
them); the build prints the voice of each language. Speed 170 words per minute: a little slower
than espeak-ng's 175, clearer on a narrowband line. A flow's other formats (``sounds: formats:
[wav, alaw, ...]``) are made with the WAV (`soundformats`).

The manifest `<sounds_root>/<flow id>.manifest.json` maps `"<lang>/<prompt id>"` to
`{"text_sha256", "audio_sha256", "generator"}`, plus `"formats": {format: sha256}` for the other
formats; the loader refuses audio whose text hash no longer matches or whose bytes are not the
ones hashed (R13). A studio recording is put in place by hand and approved for the current text
with `consent-ivr sounds approve` (generator ``recorded ...``), which makes its other formats;
a build keeps it while its text and bytes are unchanged. The build deletes a prompt's files only
in formats the flow no longer lists (Asterisk would play them); never files or manifest entries
of prompts that were removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO, TypeVar

from consent_ivr import paths
from consent_ivr.cli.soundformats import (
    SoundsError,
    Staged,
    commit,
    dropped_formats,
    formats_of_recordings,
    stage_formats,
)
from consent_ivr.cli.speech import (
    SPEED_WPM,
    VOICES,
    UnknownVoiceError,
    check_voices,
    espeak_version,
    find_tool,
    synthesize,
    voice_choice,
    voice_for,
)
from consent_ivr.flow.audiofiles import format_path
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import (
    audio_path,
    load_flow,
    manifest_path,
    resolve_flow_path,
    text_sha256,
)
from consent_ivr.wav import WavError, is_telephony_format, read_wav_info

T = TypeVar("T")


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable: rebuilt from scratch
    return data if isinstance(data, dict) else {}


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


#: The manifest's generator for audio a person recorded and approved for a text.
RECORDED = "recorded"


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _recording_intact(wav: Path, entry: Any, text_hash: str) -> bool:
    """Whether `entry` is a recording approved for this text whose WAV is still the one hashed."""
    if not isinstance(entry, dict) or not str(entry.get("generator", "")).startswith(RECORDED):
        return False
    return entry.get("text_sha256") == text_hash and entry.get("audio_sha256") == _sha(wav)


def _formats_up_to_date(wav: Path, entry: dict[str, Any], formats: tuple[str, ...]) -> bool:
    """The entry lists exactly the flow's other formats, and each file is the one it hashed."""
    others = formats[1:]
    if not others:
        return "formats" not in entry
    listed = entry.get("formats")
    if not isinstance(listed, dict) or sorted(listed) != sorted(others):
        return False
    return all(listed[f] == _sha(Path(format_path(str(wav), f))) for f in others)


def _up_to_date(
    wav: Path, entry: Any, text_hash: str, generator: str, formats: tuple[str, ...] = ("wav",)
) -> bool:
    if not isinstance(entry, dict):
        return False
    recorded = str(entry.get("generator", "")).startswith(RECORDED)
    if entry.get("text_sha256") != text_hash or (
        entry.get("generator") != generator and not recorded
    ):
        return False
    try:
        if not is_telephony_format(read_wav_info(wav)):
            return False
        if entry.get("audio_sha256") != hashlib.sha256(wav.read_bytes()).hexdigest():
            return False
    except (WavError, OSError):
        return False
    return _formats_up_to_date(wav, entry, formats)


def build_sounds(
    flow_path: str | os.PathLike[str],
    sounds_root: Path | None = None,
    *,
    only_changed: bool = True,
    voices: Mapping[str, str] | None = None,
) -> list[Path]:
    """(Re)generate the audio of every prompt and language of a flow, in each of its formats
    (``sounds: formats:``); return the files written (a file made again with the bytes it
    already has is left alone, and not among them).

    With `only_changed`, a prompt is skipped when its manifest entry matches the current text,
    voice settings, formats and file bytes; a recording approved for its text keeps its WAV,
    and gets its other formats made from it. Files of formats the flow no longer lists are
    removed. `voices` maps a language to the espeak-ng voice that speaks it instead of the
    default (`voice_for`). Raises `FlowError` for an invalid flow, `SoundsError` when espeak-ng
    or sox is missing or fails.
    """
    flow = load_flow(flow_path, sounds_root=sounds_root, check_audio=False)
    root = sounds_root if sounds_root is not None else paths.sounds_dir()
    espeak = find_tool("espeak-ng", "espeak-ng")
    sox = find_tool("sox", "sox")
    check_voices({lang: voice_for(lang, voices) for lang in flow.languages}, espeak)
    version = espeak_version(espeak)
    formats = flow.sound_formats
    mpath = manifest_path(root, flow.id)
    manifest = read_manifest(mpath)
    # Every changed prompt is synthesised first, into <sounds>/.building/ (same file system,
    # outside the prompt folders: a call fails if its folder changes); then all are renamed into
    # place and the manifest written, in moments: a live file is never rewritten in place (a
    # call may be playing it), and flows do not see a mix of old and new for the length of the
    # build. A file whose bytes did not change is left alone (no folder change).
    staging = root / ".building"
    staging.mkdir(parents=True, exist_ok=True)
    staged: list[Staged] = []
    dropped: list[Path] = []
    try:
        for prompt in flow.all_prompts():
            for lang in flow.languages:
                text = prompt.text[lang]
                voice = voice_for(lang, voices)
                generator = f"espeak-ng {version} voice {voice} speed {SPEED_WPM}"
                wav = audio_path(root, lang, flow.id, prompt.id)
                key = f"{lang}/{prompt.id}"
                th = text_sha256(text)
                entry = manifest.get(key)
                dropped += dropped_formats(wav, formats)
                if only_changed and _up_to_date(wav, entry, th, generator, formats):
                    continue
                wav.parent.mkdir(parents=True, exist_ok=True)
                tmp = staging / f"{flow.id}.{lang}.{wav.name}"
                if only_changed and _recording_intact(wav, entry, th):
                    assert isinstance(entry, dict)  # a recording: only its formats are made
                    job = Staged(key, dict(entry))
                    staged.append(job)
                    shutil.copyfile(wav, tmp)  # staged copy: its formats are made beside it
                    try:
                        stage_formats(job, formats, tmp, wav, wav, sox)
                    finally:
                        tmp.unlink()
                    continue
                job = Staged(key, {"generator": generator, "text_sha256": th})
                job.files.append(("wav", tmp, wav))
                staged.append(job)
                wide = staging / f"{flow.id}.{lang}.{prompt.id}.tts.wav"
                try:
                    if len(formats) > 1:
                        synthesize(text, lang, tmp, espeak=espeak, sox=sox, voice=voice, wide=wide)
                        stage_formats(job, formats, tmp, wav, wide, sox)
                    else:
                        synthesize(text, lang, tmp, espeak=espeak, sox=sox, voice=voice)
                finally:
                    wide.unlink(missing_ok=True)
        written: list[Path] = []
        for job in staged:
            commit(job, manifest, written)
        for path in dropped:
            path.unlink(missing_ok=True)
        if staged or not mpath.exists():
            write_manifest(mpath, manifest)
        return written
    finally:
        for job in staged:
            for _fmt, tmp, _live in job.files:
                tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only if empty: another build may be running
            staging.rmdir()


def _command(action: Callable[[Path], T], flow: str, err: TextIO, tool_status: int) -> T | int:
    """Run a sounds command on a flow; an error is one line to `err` and an exit status: 2 for
    an invalid flow, `tool_status` for a tool or recording problem, 1 when a file cannot be
    written. Never a traceback."""
    try:
        return action(resolve_flow_path(flow))
    except FlowError as exc:
        print(exc, file=err)
        return 2
    except UnknownVoiceError as exc:  # the user's choice, not a tool's failure
        print(f"error: {exc}", file=err)
        return 2
    except SoundsError as exc:
        print(f"error: {exc}", file=err)
        return tool_status
    except OSError as exc:
        print(f"error: cannot write: {exc}", file=err)
        return 1


def run_sounds_build(
    flow: str,
    sounds_root: Path | None,
    out: TextIO,
    err: TextIO,
    voices: Mapping[str, str] | None = None,
) -> int:
    """`consent-ivr sounds build FLOW [--voice LANG=VOICE]...`: prints the voice of each language
    and how to choose another; 0 when done, 2 for an invalid flow, a voice for a language the
    flow does not serve or one espeak-ng does not have, 1 when a tool is missing or fails."""
    voices = dict(voices or {})
    languages = _command(
        lambda path: load_flow(path, sounds_root=sounds_root, check_audio=False).languages,
        flow,
        err,
        tool_status=1,
    )
    if isinstance(languages, int):
        return languages
    unserved = sorted(set(voices) - set(languages))
    if unserved:
        print(
            f"error: --voice {unserved[0]}=...: {flow} does not speak {unserved[0]!r};"
            f" expected one of {', '.join(languages)}",
            file=err,
        )
        return 2
    for lang in languages:
        chosen = " (--voice)" if lang in voices else ""
        print(f"voice {lang}: espeak-ng {voice_for(lang, voices)}{chosen}", file=out)
    print(
        "  another voice: --voice LANG=VOICE, a voice espeak-ng --voices=LANG lists"
        " (e.g. --voice en=en-us)",
        file=out,
    )
    done = _command(
        lambda path: (path, build_sounds(path, sounds_root, voices=voices)),
        flow,
        err,
        tool_status=1,
    )
    if isinstance(done, int):
        return done
    path, written = done
    for wav in written:
        print(f"built {wav}", file=out)
    print(f"ok: {len(written)} audio file(s) built for {path}", file=out)
    return 0


def approve_recordings(
    flow_path: str | os.PathLike[str],
    prompt_ids: list[str],
    lang: str | None = None,
    sounds_root: Path | None = None,
) -> list[str]:
    """Record in the manifest that the WAV now in place for each prompt (and language) speaks
    the prompt's current text: the manifest entry gets the text's hash and the file's, and, for
    a flow with more formats, the hash of each format made from the WAV (written here). Returns
    the entries approved; raises `FlowError` for an invalid flow, `SoundsError` for a missing or
    unusable recording or an unknown prompt, or when sox fails."""
    flow = load_flow(flow_path, sounds_root=sounds_root, check_audio=False)
    root = sounds_root if sounds_root is not None else paths.sounds_dir()
    prompts = {p.id: p for p in flow.all_prompts()}
    unknown = [pid for pid in prompt_ids if pid not in prompts]
    if unknown:
        raise SoundsError(
            f"no prompt {', '.join(unknown)} in flow {flow.id}; its prompts:"
            f" {', '.join(sorted(prompts))}"
        )
    if lang is not None and lang not in flow.languages:
        raise SoundsError(f"flow {flow.id} does not serve language {lang!r}")
    langs = [lang] if lang else list(flow.languages)
    mpath = manifest_path(root, flow.id)
    manifest = read_manifest(mpath)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    jobs: list[tuple[Staged, Path]] = []
    for pid in prompt_ids:
        for lg in langs:
            wav = audio_path(root, lg, flow.id, pid)
            try:
                info = read_wav_info(wav)
                data = wav.read_bytes()
            except (OSError, WavError) as exc:
                raise SoundsError(f"cannot use the recording {wav}: {exc}") from exc
            if not is_telephony_format(info):
                raise SoundsError(
                    f"{wav} is {info.describe()}; expected 8000 Hz, 1 channel, 16-bit PCM"
                    f" (e.g. sox in.wav -r 8000 -c 1 -b 16 -e signed-integer {wav.name})"
                )
            entry = {
                "audio_sha256": hashlib.sha256(data).hexdigest(),
                "generator": f"{RECORDED}, approved {today}",
                "text_sha256": text_sha256(prompts[pid].text[lg]),
            }
            jobs.append((Staged(f"{lg}/{pid}", entry), wav))
    if len(flow.sound_formats) > 1:  # every recording is usable: make its other formats
        sox = find_tool("sox", "sox")
        formats_of_recordings(jobs, flow.sound_formats, root / ".building", sox, manifest)
    else:
        for job, _wav in jobs:
            commit(job, manifest, [])
    write_manifest(mpath, manifest)
    return [job.key for job, _wav in jobs]


def run_sounds_approve(
    flow: str,
    prompt_ids: list[str],
    lang: str | None,
    sounds_root: Path | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """`consent-ivr sounds approve FLOW PROMPT... [--lang L]`: 0 when done, 2 for an invalid flow
    or recording."""
    done = _command(
        lambda path: approve_recordings(path, prompt_ids, lang, sounds_root), flow, err, 2
    )
    if isinstance(done, int):
        return done
    for key in done:
        print(f"approved {key}: the recording is now the audio of its current text", file=out)
    return 0


def add_parsers(sub: Any) -> None:
    s = sub.add_parser("sounds", help="prompt audio")
    ssub = s.add_subparsers(dest="sounds_command", required=True, metavar="ACTION")
    b = ssub.add_parser("build", help="regenerate prompt audio with espeak-ng and sox")
    b.add_argument("flow", metavar="FLOW")
    b.add_argument("--sounds", type=Path, default=None, help="sounds folder (default: sounds/)")
    b.add_argument(
        "--voice",
        action="append",
        type=voice_choice,
        default=[],
        metavar="LANG=VOICE",
        help="the espeak-ng voice for a language (default: "
        + ", ".join(f"{lang}={voice}" for lang, voice in VOICES.items())
        + ", else the language code); espeak-ng --voices=LANG lists them; repeatable",
    )
    b.set_defaults(
        run=lambda a, out, err: run_sounds_build(a.flow, a.sounds, out, err, dict(a.voice))
    )
    a = ssub.add_parser(
        "approve",
        help="record in the manifest that a studio recording speaks a prompt's current text (R13)",
    )
    a.add_argument("flow", metavar="FLOW")
    a.add_argument("prompts", nargs="+", metavar="PROMPT", help="prompt ids, e.g. who google")
    a.add_argument("--lang", default=None, help="only this language (default: every language)")
    a.add_argument("--sounds", type=Path, default=None, help="sounds folder (default: sounds/)")

    a.set_defaults(
        run=lambda a, out, err: run_sounds_approve(a.flow, a.prompts, a.lang, a.sounds, out, err)
    )
