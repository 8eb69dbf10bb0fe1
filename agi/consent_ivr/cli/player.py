"""`simulate --interactive --audio`: a prompt's audio played on this machine's speaker, with
sox's ``play`` (at the call's ``--speed``) or ``aplay``, one at a time, stopped when a key or a
hang-up cuts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from consent_ivr.harness.asterisk import TICKS_PER_SECOND, WavSoundCatalog


class Player:
    """Plays prompt files with sox's ``play`` or ``aplay``; one at a time, stopped on demand."""

    def __init__(self, command: str, speed: float) -> None:
        self.command = command
        self.speed = speed
        self.catalog = WavSoundCatalog()
        self.failed: int | None = None  # the exit status of a player that could not play
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def find(cls, speed: float) -> Player | None:
        for name in ("play", "aplay"):
            found = shutil.which(name)
            if found:
                return cls(found, speed)
        return None

    def note(self) -> str:
        name = Path(self.command).name
        if name == "aplay" and self.speed != 1:
            return f"audio: {name} (at normal speed; --speed {self.speed:g} needs sox's play)"
        return f"audio: {name}"

    def start(self, file: str, offset: int) -> None:
        self.stop()
        path = next((p for p in self.catalog.candidates(file) if p.is_file()), None)
        if path is None:
            return
        if Path(self.command).name == "play":
            argv = [self.command, "-q", str(path), "trim", f"{offset / TICKS_PER_SECOND:.3f}"]
            if self.speed != 1:
                argv += ["tempo", f"{self.speed:g}"]
        else:
            argv = [self.command, "-q", str(path)]
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                self._proc.wait()
            elif self._proc.returncode != 0:  # it ended by itself, failing (no sound device...)
                self.failed = self._proc.returncode
        self._proc = None
