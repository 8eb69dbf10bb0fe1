"""WAV header facts (rate, channels, sample width, frames) via the stdlib `wave` module.

Only the header is read, never the sample data, so checking every prompt per call is cheap.
"""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass

#: The one audio format every prompt must have: what Asterisk plays natively on a narrowband call.
TELEPHONY_RATE = 8000
TELEPHONY_CHANNELS = 1
TELEPHONY_SAMPLE_WIDTH = 2  # bytes, i.e. 16-bit signed PCM


class WavError(Exception):
    """The file is missing, not a WAV file, or a WAV file that `wave` cannot read (e.g. not PCM)."""


@dataclass(frozen=True)
class WavInfo:
    rate: int
    channels: int
    sample_width: int  # bytes per sample
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate else 0.0

    def describe(self) -> str:
        """E.g. `16000 Hz, 1 channel, 16-bit`."""
        ch = "1 channel" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.rate} Hz, {ch}, {self.sample_width * 8}-bit"


def read_wav_info(path: str | os.PathLike[str]) -> WavInfo:
    """The header facts of a WAV file; raises `WavError` with a readable reason otherwise."""
    try:
        with wave.open(os.fspath(path), "rb") as w:
            return WavInfo(
                rate=w.getframerate(),
                channels=w.getnchannels(),
                sample_width=w.getsampwidth(),
                frames=w.getnframes(),
            )
    except FileNotFoundError as exc:
        raise WavError(f"no such file: {os.fspath(path)}") from exc
    except (wave.Error, EOFError) as exc:
        raise WavError(f"not a PCM WAV file ({exc or 'truncated header'})") from exc
    except OSError as exc:
        raise WavError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from exc


def is_telephony_format(info: WavInfo) -> bool:
    """True for 8000 Hz, mono, 16-bit PCM."""
    return (
        info.rate == TELEPHONY_RATE
        and info.channels == TELEPHONY_CHANNELS
        and info.sample_width == TELEPHONY_SAMPLE_WIDTH
    )
