"""Write a prompt's audio in the other formats of its flow (``sounds: formats:``), staged
beside the live files and then renamed into place, for ``consent-ivr sounds build`` and
``sounds approve``.

* ``ulaw`` and ``alaw``: G.711, by sox from the prompt's 8 kHz WAV (``-D``: plain companding,
  no dither, as Asterisk's own translator does), so they speak exactly what the WAV speaks.
* ``g722``: ITU-T G.722 at 64 kbit/s, by the ``G722`` package (libg722: Steve Underwood's
  bit-exact coder, the one Asterisk's codec_g722 is built on), from 16 kHz audio: for a
  synthesised prompt espeak-ng's own wideband output (sox resamples it to 16 kHz), so G.722
  callers hear the wider band; for a recording the WAV upsampled, since 8 kHz is all there is.

Every file has one byte per 8 kHz sample of the WAV (G.722 codes two 16 kHz samples in a byte),
so Asterisk's file positions (``endpos``) mean the same in every format; the loader checks it.
sox writes raw little-endian; `-R` keeps every output repeatable.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import G722

from consent_ivr.flow.audiofiles import FORMATS, format_path
from consent_ivr.wav import read_wav_info

#: sox's encoding of each G.711 format.
_G711 = {"ulaw": "u-law", "alaw": "a-law"}
#: G.722's sample rate and bit rate (format_pcm.c's g722 files are 64 kbit/s).
G722_RATE, G722_BITRATE = 16000, 64000


class SoundsError(Exception):
    """A tool is missing or failed; the message says what to do."""


def run_tool(cmd: list[str], what: str, stdin: str | None = None) -> None:
    """Run a command; `SoundsError` with its own words if it cannot start or fails."""
    try:
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SoundsError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        raise SoundsError(f"{what} failed: {detail}")


def _raw16(sox: str, source: Path, rate: int, samples: int) -> array.array[int]:
    """`source` as `samples` mono 16-bit samples at `rate` (cut or padded with silence at the
    end: resampling may round the length by a sample)."""
    with tempfile.TemporaryDirectory(prefix="consent-ivr-fmt-") as tmp:
        raw = Path(tmp) / "audio.raw"
        to_raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-c", "1"]
        run_tool(
            [sox, "-R", "-D", str(source), *to_raw, "-r", str(rate), str(raw)],
            f"sox (16-bit {rate} Hz)",
        )
        pcm = array.array("h", raw.read_bytes()[: samples * 2])
    if sys.byteorder == "big":
        pcm.byteswap()
    pcm.extend([0] * (samples - len(pcm)))
    return pcm


def write_format(fmt: str, wav: Path, frames: int, out: Path, *, sox: str, wide: Path) -> None:
    """Write `out`, the prompt in `fmt`: G.711 from the 8 kHz `wav` of `frames` samples, G.722
    from `wide` (audio at any rate, at best 16 kHz or more)."""
    if fmt in _G711:
        run_tool(
            [sox, "-R", "-D", str(wav), "-t", "raw", "-e", _G711[fmt], "-b", "8", str(out)],
            f"sox ({fmt})",
        )
    elif fmt == "g722":
        pcm = _raw16(sox, wide, G722_RATE, frames * 2)
        out.write_bytes(bytes(G722.G722(G722_RATE, G722_BITRATE).encode(pcm)))
    else:  # the loader allows no other
        raise SoundsError(f"cannot write audio format {fmt}")
    size = out.stat().st_size
    if size != frames:
        raise SoundsError(f"{out} came out {size} bytes long; expected {frames}, one per sample")


class Staged:
    """A prompt's files made in the staging folder: (format, staged file, live file) each."""

    def __init__(self, key: str, entry: dict[str, str]) -> None:
        self.key, self.entry = key, entry
        self.files: list[tuple[str, Path, Path]] = []


def stage_formats(
    job: Staged, formats: tuple[str, ...], wav: Path, live: Path, wide: Path, sox: str
) -> None:
    """Stage the prompt's other formats, made from the staged (or live) WAV `wav`."""
    frames = read_wav_info(wav).frames
    for fmt in formats[1:]:
        tmp = wav.with_name(f"{wav.name.removesuffix('.wav')}.{fmt}")
        job.files.append((fmt, tmp, Path(format_path(str(live), fmt))))
        write_format(fmt, wav, frames, tmp, sox=sox, wide=wide)


def dropped_formats(live: Path, formats: tuple[str, ...]) -> list[Path]:
    """The prompt's files in formats the flow no longer lists (Asterisk would play them)."""
    paths = (Path(format_path(str(live), f)) for f in FORMATS if f not in formats)
    return [p for p in paths if p.is_file()]


def commit(job: Staged, manifest: dict[str, Any], written: list[Path]) -> None:
    """Rename a prompt's staged files into place and record their hashes in its entry; the
    files actually replaced are added to `written` (one with the same bytes is left alone)."""
    hashes: dict[str, str] = {}
    for fmt, tmp, live in job.files:
        data = tmp.read_bytes()
        hashes[fmt] = hashlib.sha256(data).hexdigest()
        if live.is_file() and live.read_bytes() == data:
            tmp.unlink()  # the same audio: keep the live file (and calls playing it) as is
        else:
            os.replace(tmp, live)
            written.append(live)
    entry: dict[str, Any] = dict(job.entry)
    if "wav" in hashes:
        entry["audio_sha256"] = hashes.pop("wav")
    entry.pop("formats", None)
    if hashes:
        entry["formats"] = dict(sorted(hashes.items()))
    manifest[job.key] = entry


def formats_of_recordings(
    jobs: list[tuple[Staged, Path]],
    formats: tuple[str, ...],
    staging: Path,
    sox: str,
    manifest: dict[str, Any],
) -> None:
    """Make the other formats of approved recordings (job, live WAV) in `staging`, then rename
    them into place and record them in the jobs' manifest entries: all made before any is put
    in place, so a failure changes no live file."""
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for job, wav in jobs:
            tmp = staging / f"{job.key.replace('/', '.')}.{wav.name}"
            shutil.copyfile(wav, tmp)  # the formats are made beside a staged copy
            try:
                stage_formats(job, formats, tmp, wav, wav, sox)
            finally:
                tmp.unlink()
        for job, _wav in jobs:
            commit(job, manifest, [])
    finally:
        for job, _wav in jobs:
            for _fmt, tmp, _live in job.files:
                tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only if empty: a build may be running
            staging.rmdir()
