"""A live caller for the simulated Asterisk: keys and hang-ups typed by a person, in real time.

Scripted calls (``--dtmf``) run in virtual time as fast as the CPU allows. A live call hands the
channel a :class:`LiveInput` instead: each phase (a playback, a digit wait) tells it where it
starts and ends (:meth:`LiveInput.begin`), then asks it for the caller's next act up to the
phase's end (:meth:`LiveInput.next_event`), which blocks until the caller acts or the phase's
time is up. So the simulated clock runs with real time, and a key typed is DTMF at the moment it
was typed. What the channel records is handed back (:meth:`LiveInput.recorded`) so a front end
can show the call as it happens.

:class:`RealTimeCaller` is the one implementation: call time runs at ``speed`` times real time
(like the runners, it reads a real clock; the core does not). A front end calls
:meth:`RealTimeCaller.press` and :meth:`RealTimeCaller.hang_up` from any thread, and reads
:meth:`RealTimeCaller.notices` and :meth:`RealTimeCaller.status` to draw the call. It knows
nothing of terminals: ``cli/interactive.py`` is its front end.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from consent_ivr.harness.clock import TICKS_PER_SECOND
from consent_ivr.harness.dtmf import DTMF_KEYS
from consent_ivr.harness.transcript import TranscriptEntry


@dataclass(frozen=True)
class LiveEvent:
    """A caller's act as the channel sees it: a key or a hang-up at a call time (ticks)."""

    kind: Literal["key", "hangup"]
    tick: int
    key: str | None = None


@dataclass(frozen=True)
class Activity:
    """A phase the channel starts: a playback of ``file`` (from ``offset`` of ``total`` samples),
    a digit wait (``waits``) or a pause (ANSWER, EXEC Wait), from tick ``start`` to ``end`` (None:
    no end)."""

    label: str
    start: int
    end: int | None
    waits: bool = False
    file: str | None = None
    offset: int = 0
    total: int = 0

    @property
    def is_playback(self) -> bool:
        return self.file is not None


#: What a front end is told, in order: a phase starting, or a transcript entry recorded.
Notice = Activity | TranscriptEntry


class LiveInput(Protocol):
    """The channel's source of a live caller's acts (see the module)."""

    def begin(self, activity: Activity) -> None:
        """A phase starts now, at call time ``activity.start``."""

    def next_event(self, stop: int) -> LiveEvent | None:
        """The caller's next act up to tick ``stop``, waiting for it; None once ``stop`` is
        reached with no act. An act from before the phase began has a tick below its start."""

    def pending(self) -> list[LiveEvent]:
        """The acts that came while no phase ran (between commands), taken now."""

    def recorded(self, entry: TranscriptEntry) -> None:
        """The channel recorded ``entry``."""


class RealTimeCaller:
    """A :class:`LiveInput` fed by a person: call time runs at ``speed`` times real time.

    ``clock`` is the real clock in seconds (``time.monotonic``; tests pass their own).
    """

    def __init__(self, speed: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be a positive number, got {speed}")
        self.speed = speed
        self._clock = clock
        self._cond = threading.Condition()
        self._acts: deque[tuple[float, Literal["key", "hangup"], str | None]] = deque()
        self._notices: deque[Notice] = deque()
        self._anchor_real = clock()
        self._anchor_tick = 0
        self._current: Activity | None = None

    # ---- the front end's side ----------------------------------------------------------------

    def press(self, key: str) -> None:
        """The caller presses ``key`` (one of 0-9 * # A-D) now."""
        if len(key) != 1 or key.upper() not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {key!r} (expected one of {DTMF_KEYS})")
        self._act("key", key.upper())

    def hang_up(self) -> None:
        """The caller hangs up now."""
        self._act("hangup", None)

    def notices(self) -> list[Notice]:
        """Everything the channel did since the last call, in order (taken from the queue)."""
        with self._cond:
            taken = list(self._notices)
            self._notices.clear()
        return taken

    def status(self) -> tuple[Activity | None, int]:
        """The phase running (or the last one) and the call time now, in ticks (never past the
        phase's end)."""
        with self._cond:
            current = self._current
            now = self._tick_at(self._clock())
        if current is not None and current.end is not None:
            now = min(now, current.end)
        return current, now

    # ---- the channel's side ------------------------------------------------------------------

    def begin(self, activity: Activity) -> None:
        with self._cond:
            self._anchor_real = self._clock()
            self._anchor_tick = activity.start
            self._current = activity
            self._notices.append(activity)

    def next_event(self, stop: int) -> LiveEvent | None:
        with self._cond:
            while True:
                if self._acts:
                    stamp, kind, key = self._acts[0]
                    tick = self._tick_at(stamp)
                    if tick <= stop:
                        self._acts.popleft()
                        return LiveEvent(kind, tick, key)
                now = self._clock()
                deadline = self._anchor_real + (stop - self._anchor_tick) / (
                    self.speed * TICKS_PER_SECOND
                )
                if now >= deadline:
                    return None
                self._cond.wait(deadline - now)

    def pending(self) -> list[LiveEvent]:
        with self._cond:
            taken = [LiveEvent(kind, self._tick_at(stamp), key) for stamp, kind, key in self._acts]
            self._acts.clear()
        return taken

    def recorded(self, entry: TranscriptEntry) -> None:
        with self._cond:
            self._notices.append(entry)

    # ---- internals -----------------------------------------------------------------------------

    def _act(self, kind: Literal["key", "hangup"], key: str | None) -> None:
        with self._cond:
            self._acts.append((self._clock(), kind, key))
            self._cond.notify_all()

    def _tick_at(self, stamp: float) -> int:
        """The call time of real time ``stamp``, counted from the running phase's start."""
        return self._anchor_tick + round(
            (stamp - self._anchor_real) * self.speed * TICKS_PER_SECOND
        )
