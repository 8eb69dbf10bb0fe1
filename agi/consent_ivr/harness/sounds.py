"""Sound catalogs: how long a prompt file plays, in ticks, or None when it is missing.

The simulated Asterisk needs only a file's length (it plays nothing): a catalog is any callable
from the file argument of STREAM FILE & co. to a sample count at 8 kHz.
"""

from __future__ import annotations

import os
import wave
from collections.abc import Callable, Mapping
from pathlib import Path

from consent_ivr.harness.clock import TICKS_PER_SECOND

SoundCatalog = Callable[[str], int | None]


class WavSoundCatalog:
    """Look up ``<name>.wav`` on disk and return its length in 8 kHz-equivalent samples.

    ``name`` is the file argument of STREAM FILE & co. (no extension). An absolute name is used
    as is; a relative one is tried under ``base_dir`` and then under ``base_dir/<language>``.
    Missing or unreadable files give None (Asterisk's "File ... does not exist").
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None, language: str = "en"):
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.language = language
        self._cache: dict[str, int | None] = {}

    def candidates(self, name: str) -> list[Path]:
        """The paths tried for ``name``, in order."""
        path = Path(name + ".wav")
        if path.is_absolute():
            return [path]
        return [self.base_dir / path, self.base_dir / self.language / path]

    def __call__(self, name: str) -> int | None:
        if name not in self._cache:
            self._cache[name] = self._lookup(name)
        return self._cache[name]

    def _lookup(self, name: str) -> int | None:
        for path in self.candidates(name):
            if path.is_file():
                try:
                    with wave.open(str(path), "rb") as wav:
                        frames = wav.getnframes()
                        rate = wav.getframerate()
                except (wave.Error, EOFError, OSError):
                    return None
                return round(frames * TICKS_PER_SECOND / rate) if rate > 0 else None
        return None


def mapping_catalog(lengths: Mapping[str, int]) -> SoundCatalog:
    """A catalog from a ``{name: samples at 8 kHz}`` mapping; names not in it are missing."""
    table = dict(lengths)

    def lookup(name: str) -> int | None:
        return table.get(name)

    return lookup
