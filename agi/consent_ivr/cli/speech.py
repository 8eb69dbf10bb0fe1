"""Speaking a prompt's text with espeak-ng and sox: the voice per language (`--voice LANG=VOICE`
checked against the voices espeak-ng lists), its version for the manifest's generator, and
`synthesize` (8 kHz mono 16-bit PCM; optionally espeak-ng's own wideband output for G.722).
`cli/sounds.py` decides which prompts to build and keeps the manifest.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from consent_ivr.cli.soundformats import SoundsError, run_tool

VOICES = {"de": "de", "en": "en-gb"}
SPEED_WPM = 170


class UnknownVoiceError(SoundsError):
    """A voice espeak-ng does not have (it would speak another language's voice instead)."""


def voice_for(lang: str, voices: Mapping[str, str] | None = None) -> str:
    """The espeak-ng voice for `lang`: the one `voices` (`--voice`) names, else the default."""
    if voices and lang in voices:
        return voices[lang]
    return VOICES.get(lang, lang.replace("_", "-"))


def voice_choice(text: str) -> tuple[str, str]:
    """`--voice LANG=VOICE` -> (lang, voice)."""
    lang, sep, voice = text.partition("=")
    if not sep or not lang.strip() or not voice.strip() or any(c.isspace() for c in voice.strip()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected LANG=VOICE with an espeak-ng voice, e.g. en=en-us"
            " (espeak-ng --voices=en lists them)"
        )
    return lang.strip(), voice.strip()


def find_tool(name: str, package: str) -> str:
    """The path of a tool on PATH, else `SoundsError` saying which Debian package has it."""
    found = shutil.which(name)
    if found is None:
        raise SoundsError(
            f"{name} not found on PATH; install it (Debian/Ubuntu: apt-get install {package})"
        )
    return found


def _espeak_says(espeak: str, option: str) -> str:
    """What `espeak-ng OPTION` prints; `SoundsError` if it cannot run or fails."""
    try:
        return subprocess.run(
            [espeak, option], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SoundsError(f"espeak-ng {option} failed: {exc}") from exc


def espeak_version(espeak: str) -> str:
    """E.g. `1.51` from `espeak-ng --version`."""
    words = _espeak_says(espeak, "--version").split()
    for i, word in enumerate(words):
        if word.rstrip(":") == "speech" and i + 1 < len(words):
            return words[i + 1]
    return words[words.index("NG") + 2] if "NG" in words[:-2] else "unknown"


def espeak_voices(espeak: str) -> set[str]:
    """The names `espeak-ng -v` takes for a voice, lower case: each voice's language and file
    (`espeak-ng --voices`; its VoiceName column writes spaces as `_`, which `-v` does not take)."""
    listing = _espeak_says(espeak, "--voices")
    names: set[str] = set()
    for line in listing.splitlines()[1:]:  # Pty Language Age/Gender VoiceName File ...
        cols = line.split()
        if len(cols) >= 5:
            names.update(c.lower() for c in (cols[1], cols[4], cols[4].split("/")[-1]))
    return names


def check_voices(voices: Mapping[str, str], espeak: str) -> None:
    """`UnknownVoiceError` for a voice espeak-ng does not list (a `+variant` aside): espeak-ng
    itself falls back to whatever voice a prefix names (`no-such` speaks Norwegian)."""
    known = espeak_voices(espeak)
    for lang, voice in sorted(voices.items()):
        if voice.split("+")[0].lower() not in known:
            raise UnknownVoiceError(
                f"espeak-ng has no voice {voice!r} (for {lang}); `espeak-ng --voices={lang}`"
                " lists the voices for that language"
            )


def synthesize(
    text: str,
    lang: str,
    out: Path,
    *,
    espeak: str,
    sox: str,
    voice: str | None = None,
    wide: Path | None = None,
) -> None:
    """Speak `text` into `out` as 8 kHz mono 16-bit PCM (in `voice`, default `voice_for(lang)`);
    `wide`, if given, gets espeak-ng's own output (22 kHz), the source of a wideband format."""
    voice = voice or voice_for(lang)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="consent-ivr-tts-") as tmp:
        raw = Path(tmp) / "tts.wav"
        converted = Path(tmp) / "out.wav"
        run_tool(
            [espeak, "-v", voice, "-s", str(SPEED_WPM), "-w", str(raw), "--stdin"],
            f"espeak-ng (voice {voice}; espeak-ng --voices lists the voices)",
            stdin=text,
        )
        run_tool(
            [
                sox,
                "-R",
                str(raw),
                "-r",
                "8000",
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(converted),
            ],
            "sox",
        )
        shutil.copyfile(converted, out)  # `out` is a staged name: build_sounds renames it
        if wide is not None:
            shutil.copyfile(raw, wide)
