"""The simulated channel: its state, the virtual clock, and the DTMF script met by phases.

:class:`Channel` holds everything a call's state is made of (the env, variables, AstDB, answered,
hung up, dead mode, the clock, the DTMF script's head or a live caller) and the operations the
command handlers are built from: a command that touches the channel runs as a sequence of
*phases* (a playback, a digit wait), each an interval of virtual time with the set of keys it
accepts. The DTMF script's head event is matched against the running phase
(:meth:`Channel._run_phase`); a key is taken, ignored or dropped, a hang-up ends the phase. A
live call (``live=``, ``live.py``) asks a person instead, in real time, by the same rules
(:meth:`Channel._run_live_phase`). Channel variables and dialplan ``${...}`` substitution live
here too.

The command handlers (``commands_timed.py``, ``commands_instant.py``) extend this class; the AGI
session that reads command lines and dispatches them is :class:`~.core.SimulatedAsterisk`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from consent_ivr.harness.clock import TICKS_PER_SECOND, ms_to_ticks, sec
from consent_ivr.harness.dtmf import DtmfEvent, DtmfScript, parse_dtmf_script
from consent_ivr.harness.env import DEFAULT_ENV, ENV_KEYS
from consent_ivr.harness.live import Activity, LiveInput
from consent_ivr.harness.sounds import SoundCatalog, WavSoundCatalog, mapping_catalog
from consent_ivr.harness.transcript import (
    HangupEntry,
    KeyEntry,
    PlayEntry,
    SetEntry,
    TranscriptEntry,
    WaitEntry,
)
from consent_ivr.harness.wire import AgiStatus
from consent_ivr.paths import sounds_dir


@dataclass
class Phase:
    """A stretch of a command during which the channel is read."""

    start: int
    end: int | None  # None = no end (wait forever)
    accepts: frozenset[str]
    input_point: bool
    is_wait: bool
    label: str
    timeout_ms: int = 0
    file: str | None = None  # a playback's file, its start and its length (samples)
    offset: int = 0
    total: int = 0


@dataclass(frozen=True)
class PhaseOutcome:
    """How a phase ended: at its end, by a key taken (``key``), or by a hang-up."""

    what: Literal["end", "key", "hangup"]
    tick: int
    key: str | None = None


class Channel:
    """The channel state and the phase machinery the command handlers use (see the module)."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        request: str | None = None,
        args: Sequence[str] = (),
        network: bool = False,
        network_script: str | None = None,
        dtmf: str | DtmfScript | None = None,
        sounds: SoundCatalog | Mapping[str, int] | None = None,
        sighup: bool = True,
        exit_on_hangup: bool = False,
        turnaround_ms: int = 0,
        max_call_seconds: float = 3600.0,
        answer_ms: int = 500,
        answered: bool = False,
        database: dict[tuple[str, str], str] | None = None,
        live: LiveInput | None = None,
    ) -> None:
        overrides = dict(env or {})
        unknown = set(overrides) - set(ENV_KEYS)
        if unknown:
            raise ValueError(f"unknown env keys {sorted(unknown)}; expected keys of {ENV_KEYS}")
        self.env: dict[str, str] = dict(DEFAULT_ENV)
        self.env.update(overrides)
        if request is None:
            request = overrides.get("agi_request")
        if request is None:
            request = (
                f"agi://127.0.0.1:4573/{network_script or ''}" if network else "consent-ivr.agi"
            )
        self.env["agi_request"] = request
        self.args = list(args)
        self.network = network
        self.network_script = network_script
        if isinstance(dtmf, DtmfScript):
            self.dtmf = dtmf
        else:
            self.dtmf = parse_dtmf_script(dtmf or "")
        if live is not None and self.dtmf.events:
            raise ValueError("a call has either a DTMF script or a live caller, not both")
        self.live = live
        if sounds is None:
            self.sounds: SoundCatalog = WavSoundCatalog(sounds_dir(), self.env["agi_language"])
        elif isinstance(sounds, Mapping):
            self.sounds = mapping_catalog(sounds)
        else:
            self.sounds = sounds
        self.sighup = sighup
        self.exit_on_hangup = exit_on_hangup
        self.turnaround_ticks = ms_to_ticks(turnaround_ms)
        self.max_call_ticks = round(max_call_seconds * TICKS_PER_SECOND)
        self.answer_ticks = ms_to_ticks(answer_ms)

        self.variables: dict[str, str] = {}
        self.inheritance: dict[str, int] = {}
        self.database: dict[tuple[str, str], str] = database if database is not None else {}
        self.transcript: list[TranscriptEntry] = []
        self.agistatus: AgiStatus = "SUCCESS"
        self.answered = answered
        self.hung_up = False
        self.hangup_who: str | None = None
        self.hangup_at: float | None = None
        self.dead = False
        self.closed = False
        self.music_on = False
        self.exit_status: int | None = None
        self.final_notice_sent = False

        self._tick = 0
        self._last_response = 0
        self._head_index = 0
        self._notice_pending = False
        self._autohangup_tick: int | None = None
        self._sent: list[bytes] = []
        self._pending_entries: list[TranscriptEntry] = []

    # ---- public state ------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual time in seconds since the env block."""
        return sec(self._tick)

    @property
    def remaining_events(self) -> tuple[DtmfEvent, ...]:
        """DTMF events not consumed yet (the first is the head)."""
        return self.dtmf.events[self._head_index :]

    # ---- what a command writes back and records ------------------------------------------

    def _send(self, data: bytes) -> None:
        self._sent.append(data)

    def _record(self, entry: TranscriptEntry) -> None:
        self._pending_entries.append(entry)
        if self.live is not None:
            self.live.recorded(entry)

    # ---- internals: DTMF script and time ------------------------------------------------------

    def _head(self) -> DtmfEvent | None:
        if self._head_index < len(self.dtmf.events):
            return self.dtmf.events[self._head_index]
        return None

    def _consume(self) -> None:
        self._head_index += 1

    def _limit(self) -> tuple[int, str]:
        """The earliest forced hang-up: max_call_seconds or SET AUTOHANGUP."""
        if self._autohangup_tick is not None and self._autohangup_tick < self.max_call_ticks:
            return self._autohangup_tick, "autohangup"
        return self.max_call_ticks, "caller"

    def _hangup(self, tick: int, who: str) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self.hangup_who = who
        self.hangup_at = sec(tick)
        self._notice_pending = True
        if self.agistatus == "SUCCESS":
            self.agistatus = "HANGUP"
        entry = HangupEntry(sec(tick), who)
        self._record(entry)

    def _key_entry(
        self, tick: int, key: str, fate: Literal["taken", "ignored", "dropped"], by: str | None
    ) -> None:
        self._record(KeyEntry(sec(tick), key, fate, by))

    def _run_phase(self, phase: Phase) -> PhaseOutcome:
        """Run one phase of a command against the DTMF script; advance the clock to its end."""
        if self.live is not None:
            return self._run_live_phase(phase, self.live)
        start, end = phase.start, phase.end
        while True:
            limit, who = self._limit()
            event = self._head()
            event_tick: int | None = None
            if event is not None:
                event_tick = event.tick
                if event_tick is None:
                    if event.kind == "hangup":
                        self._consume()
                        return self._phase_hangup(start, "caller")
                    if event.kind == "key" and phase.input_point:
                        assert event.key is not None
                        self._consume()
                        if event.key in phase.accepts:
                            self._key_entry(start, event.key, "taken", phase.label)
                            return self._at(PhaseOutcome("key", start, event.key))
                        self._key_entry(start, event.key, "ignored", phase.label)
                        continue
                elif event_tick < start:
                    # It became head after its time had passed: nobody was listening then.
                    self._consume()
                    if event.kind == "hangup":
                        return self._phase_hangup(start, "caller")
                    assert event.key is not None
                    self._key_entry(start, event.key, "dropped", None)
                    continue
            nxt = event_tick if event_tick is not None else None
            if limit < start:
                return self._phase_hangup(start, who)
            if end is not None and (nxt is None or nxt >= end) and limit >= end:
                if phase.is_wait and event is not None and event.kind == "silence":
                    self._consume()
                return self._at(PhaseOutcome("end", end))
            if nxt is None or limit < nxt:
                return self._phase_hangup(limit, who)
            assert event is not None
            self._consume()
            if event.kind == "hangup":
                return self._phase_hangup(nxt, "caller")
            assert event.key is not None
            if event.key in phase.accepts:
                self._key_entry(nxt, event.key, "taken", phase.label)
                return self._at(PhaseOutcome("key", nxt, event.key))
            self._key_entry(nxt, event.key, "ignored", phase.label)

    def _run_live_phase(self, phase: Phase, live: LiveInput) -> PhaseOutcome:
        """Run one phase against a live caller: the rules of :meth:`_run_phase`, the acts
        arriving as the phase's time passes (an act from before it began: nobody listened)."""
        start, end = phase.start, phase.end
        limit, who = self._limit()
        stop = limit if end is None else min(end, limit)
        live.begin(
            Activity(phase.label, start, end, phase.is_wait, phase.file, phase.offset, phase.total)
        )
        while True:
            event = live.next_event(max(stop, start))
            if event is None:
                if end is not None and end <= limit:
                    return self._at(PhaseOutcome("end", end))
                return self._phase_hangup(max(limit, start), who)
            tick = min(max(event.tick, start), max(stop, start))
            if event.kind == "hangup":
                return self._phase_hangup(tick, "caller")
            assert event.key is not None
            if event.tick < start:
                self._key_entry(start, event.key, "dropped", None)
            elif event.key in phase.accepts:
                self._key_entry(tick, event.key, "taken", phase.label)
                return self._at(PhaseOutcome("key", tick, event.key))
            else:
                self._key_entry(tick, event.key, "ignored", phase.label)

    def _at(self, outcome: PhaseOutcome) -> PhaseOutcome:
        self._tick = max(self._tick, outcome.tick)
        return outcome

    def _phase_hangup(self, tick: int, who: str) -> PhaseOutcome:
        self._hangup(tick, who)
        return self._at(PhaseOutcome("hangup", tick))

    def _play(
        self,
        file: str,
        total: int,
        from_sample: int,
        accepts: frozenset[str],
        *,
        input_point: bool,
        label: str,
    ) -> tuple[PhaseOutcome, int]:
        """Play ``file`` from ``from_sample``; returns the outcome and the end position."""
        from_sample = min(max(from_sample, 0), total)
        start = self._tick
        outcome = self._run_phase(
            Phase(
                start,
                start + total - from_sample,
                accepts,
                input_point,
                False,
                label,
                file=file,
                offset=from_sample,
                total=total,
            )
        )
        endpos = total if outcome.what == "end" else from_sample + (outcome.tick - start)
        self._record(
            PlayEntry(
                sec(start),
                file,
                from_sample,
                endpos,
                total,
                outcome.what == "end",
                outcome.key if outcome.what == "key" else None,
                outcome.what == "hangup",
                label,
            )
        )
        return outcome, endpos

    def _wait(self, timeout_ms: int, accepts: frozenset[str], label: str) -> PhaseOutcome:
        """Wait for a key up to ``timeout_ms`` (negative = forever)."""
        start = self._tick
        end = None if timeout_ms < 0 else start + ms_to_ticks(timeout_ms)
        outcome = self._run_phase(Phase(start, end, accepts, True, True, label, timeout_ms))
        what: Literal["key", "timeout", "hangup"] = (
            "timeout" if outcome.what == "end" else outcome.what
        )
        self._record(WaitEntry(sec(start), timeout_ms, what, outcome.key, label))
        return outcome

    def _missing(self, file: str, label: str, from_sample: int = 0) -> None:
        self._record(
            PlayEntry(self.now, file, from_sample, from_sample, None, False, None, False, label)
        )

    # ---- variables -----------------------------------------------------------------------

    def set_variable(self, name: str, value: str) -> None:
        """Set a channel variable the way ``pbx_builtin_setvar_helper`` does (with inheritance)."""
        level = 2 if name.startswith("__") else 1 if name.startswith("_") else 0
        bare = name.lstrip("_") if level else name
        self.variables[bare] = value
        self.inheritance[bare] = level
        self._record(SetEntry(self.now, bare, value, level))

    def _function(self, expr: str) -> str | None:
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\((.*)\)", expr)
        if match is None:
            return None
        func, arg = match.group(1).upper(), match.group(2).strip().lower()
        if func == "CALLERID":
            return {
                "num": self.env["agi_callerid"],
                "name": self.env["agi_calleridname"],
                "all": f'"{self.env["agi_calleridname"]}" <{self.env["agi_callerid"]}>',
                "ani2": self.env["agi_callingani2"],
            }.get(arg)
        if func == "CHANNEL":
            return {
                "state": "Up" if self.answered else "Ring",
                "name": self.env["agi_channel"],
                "language": self.env["agi_language"],
                "uniqueid": self.env["agi_uniqueid"],
            }.get(arg)
        return self.variables.get(expr)

    def _lookup(self, name: str) -> str | None:
        """GET VARIABLE semantics: functions, a few builtins, then channel variables."""
        if name.endswith(")"):
            return self._function(name)
        builtins = {
            "CHANNEL": self.env["agi_channel"],
            "UNIQUEID": self.env["agi_uniqueid"],
            "CONTEXT": self.env["agi_context"],
            "EXTEN": self.env["agi_extension"],
            "PRIORITY": self.env["agi_priority"],
        }
        if name in builtins:
            return builtins[name]
        return self.variables.get(name)

    def substitute(self, expr: str) -> str:
        """Dialplan ``${...}`` substitution (innermost first; unset gives empty)."""
        pattern = re.compile(r"\$\{([^{}$]*)\}")
        for _ in range(32):
            new = pattern.sub(lambda m: self._lookup(m.group(1)) or "", expr)
            if new == expr:
                break
            expr = new
        return expr
