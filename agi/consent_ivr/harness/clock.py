"""The simulated Asterisk's virtual clock: call time counted in 8 kHz samples ("ticks").

The core never reads a real clock: a playback lasts its sample count, a wait its milliseconds,
and a DTMF event's ``@seconds`` becomes a tick. Only the runners use real time (peer timeouts).
"""

from __future__ import annotations

TICKS_PER_SECOND = 8000


def ms_to_ticks(ms: int) -> int:
    """Milliseconds as ticks (rounded down)."""
    return ms * TICKS_PER_SECOND // 1000


def sec(ticks: int) -> float:
    """Ticks as seconds of virtual time."""
    return ticks / TICKS_PER_SECOND
