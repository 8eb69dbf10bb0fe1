"""The scripted caller: DTMF script events (keys, silences, hang-ups) and their parser.

The script's grammar is that of :func:`parse_dtmf_script`; how an event meets the running
command (a playback, a digit wait) is the channel's business (``channel.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from consent_ivr.harness.clock import TICKS_PER_SECOND

DTMF_KEYS = "0123456789*#ABCD"
ALL_DIGITS = frozenset("0123456789")

_EVENT_RE = re.compile(r"^(?P<what>[0-9*#A-Da-d]|-|[hH])(?:@(?P<at>.*))?$")
_TIME_RE = re.compile(r"^(?:\d+(?:\.\d*)?|\.\d+)$")


@dataclass(frozen=True)
class DtmfEvent:
    """One event of a DTMF script: a key, a silence (``-``) or a hang-up (``h``), maybe timed."""

    kind: Literal["key", "silence", "hangup"]
    key: str | None = None
    #: Virtual call time in seconds (since the env block), or None for "at the next input point".
    at: float | None = None
    text: str = ""

    @property
    def tick(self) -> int | None:
        """The event time in ticks (8 kHz samples), or None when untimed."""
        return None if self.at is None else round(self.at * TICKS_PER_SECOND)


@dataclass(frozen=True)
class DtmfScript:
    """A parsed DTMF script: the events in the order the caller performs them."""

    events: tuple[DtmfEvent, ...] = ()
    text: str = ""

    def __len__(self) -> int:
        return len(self.events)


def parse_dtmf_script(text: str) -> DtmfScript:
    """Parse a DTMF script such as ``"1@4.2, -, 2, h@30"``.

    Grammar: comma-separated events, whitespace around events ignored, empty text = no events.

    * ``K`` (one of ``0-9 * # A-D``; ``a-d`` are accepted as ``A-D``): press K at the next input
      point (the start of the next WAIT FOR DIGIT / GET DATA / GET OPTION, or of a STREAM FILE /
      CONTROL STREAM FILE whose escape digits include all of 0-9).
    * ``K@T``: press K at virtual time T seconds (decimal, ``>= 0``).
    * ``-``: stay silent through the next wait (consumed when a wait phase times out).
    * ``h``: hang up as soon as this event is at the head of the script; ``h@T``: at time T.
    """
    events: list[DtmfEvent] = []
    if not text.strip():
        return DtmfScript((), text)
    for index, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        where = f"DTMF script event #{index} {item!r}"
        if not item:
            raise ValueError(f"{where}: empty event (expected K, K@seconds, -, h or h@seconds)")
        match = _EVENT_RE.match(item)
        if match is None:
            raise ValueError(
                f"{where}: expected a key 0-9 * # A-D (optionally @seconds), '-' for silence, "
                f"or 'h' / 'h@seconds' for a hang-up"
            )
        what = match.group("what")
        at_text = match.group("at")
        at: float | None = None
        if at_text is not None:
            at_text = at_text.strip()
            if what == "-":
                raise ValueError(f"{where}: '-' (silence) cannot be timed")
            if not _TIME_RE.match(at_text):
                raise ValueError(
                    f"{where}: expected a time in seconds after '@' (e.g. 4.2), got {at_text!r}"
                )
            at = float(at_text)
            if not math.isfinite(at):
                raise ValueError(f"{where}: time must be finite")
        if what == "-":
            events.append(DtmfEvent("silence", None, None, item))
        elif what in "hH":
            events.append(DtmfEvent("hangup", None, at, item))
        else:
            events.append(DtmfEvent("key", what.upper(), at, item))
    return DtmfScript(tuple(events), text)
