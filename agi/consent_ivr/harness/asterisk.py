"""A simulated Asterisk: the AGI/FastAGI peer that drives an AGI script with a scripted caller.

Theory of operation
-------------------
:class:`SimulatedAsterisk` is a sans-I/O core. It owns a virtual clock counted in 8 kHz samples
("ticks"), the channel state (answered, hung up, dead mode, variables, AstDB) and a DTMF script.
It never reads a real clock and never touches a file descriptor:
:meth:`SimulatedAsterisk.handle_line` takes one command line from the AGI script and returns
what Asterisk would write back, as a list
of :data:`Output` items (``bytes`` to write, or a :class:`Control` marker: send SIGHUP now / close).
Two thin runners, :func:`run_process` (process AGI over pipes) and :func:`run_fastagi` (a TCP
client to a FastAGI server), move those bytes.

The wire rules are those of AGI-PROTOCOL.md (the authority) and of the real captures in
``tests/data/asterisk-captures``: lock-step request/response, the ``parse_args`` tokenizer,
510 / 511 / 520 replies, dead mode after the hang-up notice, the AGISTATUS rules, and the DTMF
rules of §5.5 (no buffering across commands; non-escape keys discarded during playback).

Each command that touches the channel runs as a sequence of *phases* (a playback, a digit wait),
each an interval of virtual time with the set of keys it accepts. The DTMF script's head event is
matched against the running phase; see :func:`parse_dtmf_script` for the script grammar.

Not modelled: a new command arriving while the previous one still runs (the "overlap" capture):
the core always finishes a command before it reads the next line, like a lock-step client.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from consent_ivr.harness.clock import TICKS_PER_SECOND, ms_to_ticks, sec
from consent_ivr.harness.dtmf import ALL_DIGITS, DTMF_KEYS, DtmfEvent, DtmfScript, parse_dtmf_script
from consent_ivr.harness.sounds import SoundCatalog, WavSoundCatalog, mapping_catalog
from consent_ivr.harness.tokenizer import parse_args
from consent_ivr.harness.transcript import (
    AnswerEntry,
    CommandEntry,
    HangupEntry,
    KeyEntry,
    PlayEntry,
    SetEntry,
    TranscriptEntry,
    WaitEntry,
    format_transcript,
)
from consent_ivr.harness.wire import (
    AGI_LINE_MAX,
    DEAD_511,
    HANGUP_LINE,
    RESULT_FAILURE,
    RESULT_SHOWUSAGE,
    RESULT_SUCCESS,
    UNKNOWN_510,
    USAGE_NOT_AVAILABLE,
    AgiStatus,
    Control,
    Output,
    atoi,
    dec,
    enc,
    scan_float,
    scan_int,
)


class SimulationError(RuntimeError):
    """The simulation cannot go on (peer timed out, core used after close, ...)."""


# --------------------------------------------------------------------------------------------
# The environment block
# --------------------------------------------------------------------------------------------

ENV_KEYS: tuple[str, ...] = (
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
)

DEFAULT_ENV: dict[str, str] = {
    "agi_channel": "PJSIP/100-00000001",
    "agi_language": "en",
    "agi_type": "PJSIP",
    "agi_uniqueid": "1700000000.42",
    "agi_version": "22.10.1",
    "agi_callerid": "5551234",
    "agi_calleridname": "Lab Caller",
    "agi_callingpres": "0",
    "agi_callingani2": "0",
    "agi_callington": "0",
    "agi_callingtns": "0",
    "agi_dnid": "1000",
    "agi_rdnis": "unknown",
    "agi_context": "ivr",
    "agi_extension": "s",
    "agi_priority": "3",
    "agi_enhanced": "0.0",
    "agi_accountcode": "",
    "agi_threadid": "140066948486848",
}

# --------------------------------------------------------------------------------------------
# Usage texts seen in the real captures (Asterisk 22.10.1 XML docs)
# --------------------------------------------------------------------------------------------

USAGE_SET_VARIABLE = "Sets a variable to the current channel."
USAGE_WAIT_FOR_DIGIT = (
    "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF "
    "digit. Returns <literal>-1</literal> on channel failure, <literal>0</literal> if no digit is "
    "received in the timeout, or the numerical value of the ascii of the digit if one is received. "
    "Use <literal>-1</literal> for the <replaceable>timeout</replaceable> value if you desire the "
    "call to block indefinitely."
)
USAGE_STREAM_FILE = (
    "Send the given file, allowing playback to be interrupted by the given digits, if any. "
    "Returns <literal>0</literal> if playback completes without a digit being pressed, or the "
    "ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error or "
    "if the channel was disconnected. If musiconhold is playing before calling stream file it will "
    "be automatically stopped and will not be restarted after completion.\n"
    "It sets the following channel variables upon completion:\n"
    "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n"
    "    <value>SUCCESS</value>\n"
    "    <value>FAILED</value>"
)
USAGE_GET_DATA = (
    "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\n"
    "Returns the digits received from the channel at the other end."
)


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


@dataclass(frozen=True)
class PhaseOutcome:
    what: Literal["end", "key", "hangup"]
    tick: int
    key: str | None = None


Handler = Callable[["SimulatedAsterisk", list[bytes]], int]


@dataclass(frozen=True)
class CommandSpec:
    """One row of the command table (like res_agi.c's ``commands[]``)."""

    words: tuple[bytes, ...]
    handler: Handler
    dead: bool
    usage: str | None = None


# --------------------------------------------------------------------------------------------
# The core
# --------------------------------------------------------------------------------------------


class SimulatedAsterisk:
    """The sans-I/O simulated Asterisk. See the module docstring for the theory of operation."""

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
        if sounds is None:
            from consent_ivr.paths import sounds_dir

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

    @property
    def notice(self) -> Output:
        """The hang-up notice of this transport: the HANGUP line or the SIGHUP marker."""
        return HANGUP_LINE if self.network else Control.SIGHUP

    def env_block(self) -> bytes:
        """The environment block exactly as ``setup_env`` writes it (§1.3)."""
        lines: list[str] = []
        if self.network:
            lines.append("agi_network: yes")
            if self.network_script:
                lines.append(f"agi_network_script: {self.network_script}")
        lines.extend(f"{key}: {self.env[key]}" for key in ENV_KEYS)
        lines.extend(f"agi_arg_{n}: {value}" for n, value in enumerate(self.args, start=1))
        return b"".join(enc(line) + b"\n" for line in lines) + b"\n"

    # ---- driving the core ----------------------------------------------------------------

    def handle_line(self, line: bytes) -> list[Output]:
        """Process one command line (with or without its LF); return what Asterisk writes back."""
        if self.closed:
            raise SimulationError("the AGI session is closed; no more commands are read")
        if line.endswith(b"\n"):
            body, newline = line[:-1], True
        else:
            body, newline = line, False
        if len(body) + (1 if newline else 0) > AGI_LINE_MAX:
            # fgets() with an 8192-byte buffer: the rest of a long line is read as a new command.
            outputs: list[Output] = []
            rest = line
            while rest and not self.closed:
                chunk, rest = rest[:AGI_LINE_MAX], rest[AGI_LINE_MAX:]
                outputs.extend(self._handle_one(chunk))
            return outputs
        return self._handle_one(line)

    def idle(self, seconds: float) -> list[Output]:
        """The script does nothing for ``seconds`` of virtual time (keys are dropped meanwhile).

        A hang-up falling in this time (or an untimed ``h`` at the head) gives its notice now.
        """
        if self.closed:
            return []
        target = self._tick + max(0, round(seconds * TICKS_PER_SECOND))
        return self._advance_idle(target, explicit=True)

    def finish(self) -> list[Output]:
        """The AGI peer closed the connection / exited: the final notice (§4 "Ending")."""
        if self.closed:
            return []
        self.closed = True
        if self.sighup:
            self.final_notice_sent = True
            return [self.notice]
        return []

    def record_exit_status(self, status: int) -> None:
        """Process AGI: the script's exit status (non-zero turns SUCCESS into FAILURE)."""
        self.exit_status = status
        if status != 0 and self.agistatus == "SUCCESS":
            self.agistatus = "FAILURE"

    # ---- internals: the command loop ---------------------------------------------------------

    def _handle_one(self, line: bytes) -> list[Output]:
        body = line[:-1] if line.endswith(b"\n") else line
        start = max(self._tick, self._last_response + self.turnaround_ticks)
        outputs: list[Output] = self._advance_idle(start, explicit=False)
        if self.closed:
            self.transcript.append(CommandEntry(self.now, body, tuple(outputs), self.now))
            return outputs
        self._sent = []
        self._pending_entries = []
        if body[:7].lower() == b"failure":
            self.agistatus = "FAILURE"
            self.closed = True
            if self.sighup:
                self.final_notice_sent = True
                outputs.append(self.notice)
            outputs.append(Control.CLOSE)
            self.transcript.append(CommandEntry(sec(start), body, tuple(outputs), self.now))
            return outputs
        was_dead = self.dead
        code = self._dispatch(parse_args(body))
        if code == RESULT_FAILURE and (was_dead or not self.hung_up):
            self.agistatus = "FAILURE"
        self._last_response = self._tick
        outputs.extend(self._sent)
        outputs.extend(self._deliver_notice())
        self.transcript.append(CommandEntry(sec(start), body, tuple(outputs), self.now))
        self.transcript.extend(sorted(self._pending_entries, key=lambda entry: entry.at))
        self._pending_entries = []
        return outputs

    def _dispatch(self, argv: list[bytes]) -> int:
        spec = find_command(argv)
        if spec is None:
            self._send(UNKNOWN_510)
            return RESULT_SUCCESS
        if self.dead and not spec.dead:
            self._send(DEAD_511)
            return RESULT_SUCCESS
        code = spec.handler(self, argv)
        if code == RESULT_SHOWUSAGE:
            if spec.usage is None:
                self._send(USAGE_NOT_AVAILABLE)
            else:
                self._send(b"520-Invalid command syntax.  Proper usage follows:\n")
                for usage_line in spec.usage.split("\n"):
                    self._send(enc(usage_line) + b"\n")
                self._send(b"520 End of proper usage.\n")
        return code

    def _send(self, data: bytes) -> None:
        self._sent.append(data)

    def _record(self, entry: TranscriptEntry) -> None:
        self._pending_entries.append(entry)

    def _deliver_notice(self) -> list[Output]:
        if not self._notice_pending:
            return []
        self._notice_pending = False
        self.dead = True
        outputs: list[Output] = []
        if self.sighup:
            outputs.append(self.notice)
        if self.exit_on_hangup:
            if self.sighup:
                self.final_notice_sent = True
                outputs.append(self.notice)
            outputs.append(Control.CLOSE)
            self.closed = True
        return outputs

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

    def _advance_idle(self, target: int, *, explicit: bool) -> list[Output]:
        """No command runs from now until ``target``: drop keys, apply hang-ups."""
        self._pending_entries = []
        while not self.hung_up:
            limit, who = self._limit()
            event = self._head()
            event_tick = event.tick if event is not None else None
            if event is not None and event_tick is None and event.kind == "hangup" and explicit:
                self._consume()
                self._hangup(self._tick, "caller")
                break
            if event is None or event_tick is None:
                if limit < target:
                    self._hangup(max(limit, self._tick), who)
                break
            if limit < target and limit < event_tick:
                self._hangup(max(limit, self._tick), who)
                break
            if event_tick >= target:
                break
            self._consume()
            if event.kind == "key":
                assert event.key is not None
                self._key_entry(max(event_tick, self._tick), event.key, "dropped", None)
            else:
                self._hangup(max(event_tick, self._tick), "caller")
        self._tick = max(self._tick, target)
        self.transcript.extend(self._pending_entries)
        self._pending_entries = []
        return self._deliver_notice()

    def _run_phase(self, phase: Phase) -> PhaseOutcome:
        """Run one phase of a command against the DTMF script; advance the clock to its end."""
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
            Phase(start, start + total - from_sample, accepts, input_point, False, label)
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

    # ---- command handlers (argv includes the command words) ------------------------------------

    def _cmd_answer(self, argv: list[bytes]) -> int:
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        if not self.answered:
            start = self._tick
            outcome = self._run_phase(
                Phase(start, start + self.answer_ticks, frozenset(), False, False, "ANSWER")
            )
            if outcome.what == "hangup":
                self._send(b"200 result=-1\n")
                return RESULT_FAILURE
            self.answered = True
            self._record(AnswerEntry(self.now))
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _stream(
        self, label: str, file: str, escape: bytes, offset: int
    ) -> tuple[int, int, int | None]:
        """Common part of STREAM FILE / CONTROL STREAM FILE: (result, endpos, total or None)."""
        total = self.sounds(file)
        if total is None:
            self._missing(file, label, offset)
            return -1, offset, None
        accepts = frozenset(dec(escape)) & frozenset(DTMF_KEYS)
        outcome, endpos = self._play(
            file, total, offset, accepts, input_point=accepts >= ALL_DIGITS, label=label
        )
        if outcome.what == "key":
            assert outcome.key is not None
            return ord(outcome.key), endpos, total
        if outcome.what == "hangup":
            return -1, endpos, total
        return 0, endpos, total

    def _cmd_stream_file(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        offset = 0
        if len(argv) == 5:
            scanned = scan_int(argv[4])
            if scanned is None:
                return RESULT_SHOWUSAGE
            offset = max(scanned, 0)
        result, endpos, total = self._stream("STREAM FILE", dec(argv[2]), argv[3], offset)
        self._send(f"200 result={result} endpos={endpos}\n".encode())
        if total is None:
            return RESULT_FAILURE
        self.variables["PLAYBACKSTATUS"] = "SUCCESS" if result == 0 else "FAILED"
        return RESULT_SUCCESS if result >= 0 else RESULT_FAILURE

    def _cmd_control_stream_file(self, argv: list[bytes]) -> int:
        if len(argv) < 5 or len(argv) > 10:
            return RESULT_SHOWUSAGE
        offset_ms = max(atoi(argv[9]), 0) if len(argv) > 9 else 0
        offset = ms_to_ticks(offset_ms)
        result, endpos, total = self._stream("CONTROL STREAM FILE", dec(argv[3]), argv[4], offset)
        if total is None:
            end_ms = offset_ms
        elif result == 0:
            end_ms = -1
        else:
            end_ms = endpos * 1000 // TICKS_PER_SECOND
        self._send(f"200 result={result} endpos={end_ms}\n".encode())
        if total is not None:
            self.variables["CPLAYBACKSTATUS"] = (
                "SUCCESS" if result == 0 else "USERSTOPPED" if result > 0 else "ERROR"
            )
        return RESULT_SUCCESS if result >= 0 else RESULT_FAILURE

    def _cmd_get_data(self, argv: list[bytes]) -> int:
        if len(argv) < 3:
            return RESULT_SHOWUSAGE
        timeout = atoi(argv[3]) if len(argv) >= 4 else 0
        maxdigits = atoi(argv[4]) if len(argv) >= 5 else 1024
        file = dec(argv[2])
        total = self.sounds(file)
        if total is None:
            self._missing(file, "GET DATA")
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        if maxdigits <= 0:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        if timeout > 0:
            first_ms = later_ms = timeout
        elif timeout < 0:
            first_ms = later_ms = 1_000_000_000
        else:
            first_ms, later_ms = 6000, 2000
        every = frozenset(DTMF_KEYS)
        outcome, _ = self._play(file, total, 0, every, input_point=True, label="GET DATA")
        digits = ""
        if outcome.what == "end":
            outcome = self._wait(first_ms, every, "GET DATA")
        while True:
            if outcome.what == "hangup":
                self._send(b"200 result=-1\n")
                return RESULT_SUCCESS
            if outcome.what == "end":
                self._send(enc(f"200 result={digits} (timeout)\n"))
                return RESULT_SUCCESS
            assert outcome.key is not None
            if outcome.key == "#":
                break
            digits += outcome.key
            if len(digits) >= maxdigits:
                break
            outcome = self._wait(later_ms, every, "GET DATA")
        self._send(enc(f"200 result={digits}\n"))
        return RESULT_SUCCESS

    def _cmd_get_option(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        file = dec(argv[2])
        escape = frozenset(dec(argv[3])) & frozenset(DTMF_KEYS)
        timeout = atoi(argv[4]) if len(argv) == 5 else 5000
        total = self.sounds(file)
        if total is None:
            self._missing(file, "GET OPTION")
            self._send(b"200 result=-1 endpos=0\n")
            return RESULT_FAILURE
        outcome, endpos = self._play(file, total, 0, escape, input_point=True, label="GET OPTION")
        if outcome.what == "key":
            assert outcome.key is not None
            self._send(f"200 result={ord(outcome.key)} endpos={endpos}\n".encode())
            return RESULT_SUCCESS
        if outcome.what == "hangup":
            self._send(f"200 result=-1 endpos={endpos}\n".encode())
            return RESULT_FAILURE
        result = 0
        if timeout != 0:
            waited = self._wait(timeout, frozenset(DTMF_KEYS), "GET OPTION")
            if waited.what == "key" and waited.key is not None and waited.key in escape:
                result = ord(waited.key)
        self._send(f"200 result={result} endpos={endpos}\n".encode())
        return RESULT_SUCCESS

    def _cmd_wait_for_digit(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        timeout = scan_int(argv[3])
        if timeout is None:
            return RESULT_SHOWUSAGE
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        if timeout == 0:
            self._send(b"200 result=0\n")
            return RESULT_SUCCESS
        outcome = self._wait(timeout, frozenset(DTMF_KEYS), "WAIT FOR DIGIT")
        if outcome.what == "hangup":
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        result = ord(outcome.key) if outcome.key is not None else 0
        self._send(f"200 result={result}\n".encode())
        return RESULT_SUCCESS

    def _say(self, text: str, escape: bytes, label: str) -> int:
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        total = len(text) * 6400  # 0.8 s per digit
        accepts = frozenset(dec(escape)) & frozenset(DTMF_KEYS)
        outcome, _ = self._play(f"say:{text}", total, 0, accepts, input_point=False, label=label)
        if outcome.what == "hangup":
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        result = ord(outcome.key) if outcome.key is not None else 0
        self._send(f"200 result={result}\n".encode())
        return RESULT_SUCCESS

    def _cmd_say_digits(self, argv: list[bytes]) -> int:
        if len(argv) != 4 or scan_int(argv[2]) is None:
            return RESULT_SHOWUSAGE
        return self._say(dec(argv[2]), argv[3], "SAY DIGITS")

    def _cmd_say_number(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        number = scan_int(argv[2])
        if number is None:
            return RESULT_SHOWUSAGE
        return self._say(str(abs(number)), argv[3], "SAY NUMBER")

    def _cmd_set_variable(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        self.set_variable(dec(argv[2]), dec(argv[3]))
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_get_variable(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        value = self._lookup(dec(argv[2]))
        if value is None:
            self._send(b"200 result=0\n")
        else:
            self._send(b"200 result=1 (" + enc(value)[:1023] + b")\n")
        return RESULT_SUCCESS

    def _cmd_get_full_variable(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        if len(argv) == 5 and dec(argv[4]) != self.env["agi_channel"]:
            self._send(b"200 result=0\n")
            return RESULT_SUCCESS
        self._send(b"200 result=1 (" + enc(self.substitute(dec(argv[3]))) + b")\n")
        return RESULT_SUCCESS

    def _cmd_exec(self, argv: list[bytes]) -> int:
        if len(argv) < 2:
            return RESULT_SHOWUSAGE
        app = dec(argv[1]).lower()
        data = dec(argv[2]) if len(argv) >= 3 else ""
        apps: dict[str, Callable[[str], int]] = {
            "verbose": lambda _d: 0,
            "noop": lambda _d: 0,
            "set": self._app_set,
            "playback": self._app_playback,
            "wait": self._app_wait,
        }
        runner = apps.get(app)
        res = -2 if runner is None else runner(data)
        self._send(f"200 result={res}\n".encode())
        return res

    def _app_set(self, data: str) -> int:
        name, sep, value = data.partition("=")
        if sep:
            self.set_variable(name.strip(), value)
        return 0

    def _app_playback(self, data: str) -> int:
        files = data.split(",", 1)[0].replace('"', "")
        status = "SUCCESS"
        for file in files.split("&"):
            if self.hung_up:
                return -1
            total = self.sounds(file)
            if total is None:
                self._missing(file, "EXEC Playback")
                status = "FAILED"
                continue
            outcome, _ = self._play(
                file, total, 0, frozenset(), input_point=False, label="EXEC Playback"
            )
            if outcome.what == "hangup":
                return -1
        self.variables["PLAYBACKSTATUS"] = status
        return 0

    def _app_wait(self, data: str) -> int:
        seconds = scan_float(enc(data))
        if seconds is None or seconds <= 0:
            return 0
        if self.hung_up:
            return -1
        start = self._tick
        end = start + round(seconds * TICKS_PER_SECOND)
        outcome = self._run_phase(Phase(start, end, frozenset(), False, False, "EXEC Wait"))
        return -1 if outcome.what == "hangup" else 0

    def _cmd_channel_status(self, argv: list[bytes]) -> int:
        if len(argv) < 2 or len(argv) > 3:
            return RESULT_SHOWUSAGE
        if len(argv) == 3 and dec(argv[2]) != self.env["agi_channel"]:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        self._send(b"200 result=6\n" if self.answered else b"200 result=4\n")
        return RESULT_SUCCESS

    def _cmd_hangup(self, argv: list[bytes]) -> int:
        if len(argv) > 2:
            return RESULT_SHOWUSAGE
        if len(argv) == 2 and dec(argv[1]) != self.env["agi_channel"]:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        self._hangup(self._tick, "agi")
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_verbose(self, argv: list[bytes]) -> int:
        if len(argv) < 2:
            return RESULT_SHOWUSAGE
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_noop(self, argv: list[bytes]) -> int:
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_database_get(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        value = self.database.get((dec(argv[2]), dec(argv[3])))
        if value is None:
            self._send(b"200 result=0\n")
        else:
            self._send(b"200 result=1 (" + enc(value) + b")\n")
        return RESULT_SUCCESS

    def _cmd_database_put(self, argv: list[bytes]) -> int:
        if len(argv) != 5:
            return RESULT_SHOWUSAGE
        self.database[(dec(argv[2]), dec(argv[3]))] = dec(argv[4])
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_database_del(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        existed = self.database.pop((dec(argv[2]), dec(argv[3])), None) is not None
        self._send(b"200 result=1\n" if existed else b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_database_deltree(self, argv: list[bytes]) -> int:
        if len(argv) < 3 or len(argv) > 4:
            return RESULT_SHOWUSAGE
        family = dec(argv[2])
        tree = dec(argv[3]) if len(argv) == 4 else None
        doomed = [
            key
            for key in self.database
            if key[0] == family
            and (tree is None or key[1] == tree or key[1].startswith(tree + "/"))
        ]
        for key in doomed:
            del self.database[key]
        # Inverted on purpose: Asterisk answers 0 when something was deleted (§5).
        self._send(b"200 result=0\n" if doomed else b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_set_music(self, argv: list[bytes]) -> int:
        if len(argv) < 3:
            return RESULT_SHOWUSAGE
        mode = argv[2][:3].lower()
        if mode.startswith(b"on"):
            self.music_on = True
        elif mode.startswith(b"off"):
            self.music_on = False
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_set_autohangup(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        seconds = scan_float(argv[2])
        if seconds is None:
            return RESULT_SHOWUSAGE
        self._autohangup_tick = (
            self._tick + round(seconds * TICKS_PER_SECOND) if seconds > 0 else None
        )
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_gosub(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        self._send(b"100 result=0 Trying...\n")
        self._send(b"200 result=0 Gosub complete\n")
        return RESULT_SUCCESS

    def _cmd_set_dialplan(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        key = {
            b"CONTEXT": "agi_context",
            b"EXTENSION": "agi_extension",
            b"PRIORITY": "agi_priority",
        }[argv[1].upper()]
        self.env[key] = dec(argv[2])
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_asyncagi_break(self, argv: list[bytes]) -> int:
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS


def _spec(words: str, handler: Handler, dead: bool, usage: str | None = None) -> CommandSpec:
    return CommandSpec(tuple(w.encode() for w in words.split()), handler, dead, usage)


S = SimulatedAsterisk
#: The command table: words, handler, allowed in dead mode, usage text (None = not available).
COMMANDS: tuple[CommandSpec, ...] = (
    _spec("ANSWER", S._cmd_answer, False),
    _spec("ASYNCAGI BREAK", S._cmd_asyncagi_break, True),
    _spec("CHANNEL STATUS", S._cmd_channel_status, False),
    _spec("CONTROL STREAM FILE", S._cmd_control_stream_file, False),
    _spec("DATABASE DEL", S._cmd_database_del, True),
    _spec("DATABASE DELTREE", S._cmd_database_deltree, True),
    _spec("DATABASE GET", S._cmd_database_get, True),
    _spec("DATABASE PUT", S._cmd_database_put, True),
    _spec("EXEC", S._cmd_exec, True),
    _spec("GET DATA", S._cmd_get_data, False, USAGE_GET_DATA),
    _spec("GET FULL VARIABLE", S._cmd_get_full_variable, True),
    _spec("GET OPTION", S._cmd_get_option, False),
    _spec("GET VARIABLE", S._cmd_get_variable, True),
    _spec("GOSUB", S._cmd_gosub, False),
    _spec("HANGUP", S._cmd_hangup, False),
    _spec("NOOP", S._cmd_noop, True),
    _spec("SAY DIGITS", S._cmd_say_digits, False),
    _spec("SAY NUMBER", S._cmd_say_number, False),
    _spec("SET AUTOHANGUP", S._cmd_set_autohangup, False),
    _spec("SET CONTEXT", S._cmd_set_dialplan, False),
    _spec("SET EXTENSION", S._cmd_set_dialplan, False),
    _spec("SET MUSIC", S._cmd_set_music, False),
    _spec("SET PRIORITY", S._cmd_set_dialplan, False),
    _spec("SET VARIABLE", S._cmd_set_variable, True, USAGE_SET_VARIABLE),
    _spec("STREAM FILE", S._cmd_stream_file, False, USAGE_STREAM_FILE),
    _spec("VERBOSE", S._cmd_verbose, True),
    _spec("WAIT FOR DIGIT", S._cmd_wait_for_digit, False, USAGE_WAIT_FOR_DIGIT),
)
del S


def find_command(argv: Sequence[bytes]) -> CommandSpec | None:
    """``find_command``: the entry whose words all match the first words of argv (any case)."""
    for spec in COMMANDS:
        n = len(spec.words)
        if len(argv) >= n and all(argv[i].upper() == spec.words[i] for i in range(n)):
            return spec
    return None


# --------------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------------

Direction = Literal["A>S", "S>A", "SIG", "CLOSE"]


@dataclass
class SimResult:
    """The outcome of one simulated call."""

    sim: SimulatedAsterisk
    exit_code: int | None
    stderr: bytes
    #: Everything exchanged, in order: ("A>S", bytes written), ("S>A", line read),
    #: ("SIG", b"SIGHUP") and ("CLOSE", b"").
    log: list[tuple[Direction, bytes]] = field(default_factory=list)

    @property
    def agistatus(self) -> AgiStatus:
        return self.sim.agistatus

    @property
    def variables(self) -> dict[str, str]:
        return self.sim.variables

    @property
    def transcript(self) -> list[TranscriptEntry]:
        return self.sim.transcript

    def sent(self) -> bytes:
        """All bytes Asterisk wrote, concatenated."""
        return b"".join(data for direction, data in self.log if direction == "A>S")


class PeerTimeout(SimulationError):
    """The AGI peer sent no complete line in time."""


class _LineReader:
    """Read LF-terminated lines from a file descriptor with a real-time timeout."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout
        self.buffer = b""
        self.eof = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(fd, selectors.EVENT_READ)

    def readline(self) -> bytes | None:
        """One line including its LF; the unterminated rest at EOF; None at EOF."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                raise PeerTimeout(
                    f"the AGI peer sent no complete command line within {self.timeout:.1f} s "
                    f"(partial data: {self.buffer!r})"
                )
            try:
                chunk = os.read(self.fd, 65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk
        if b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            return line + b"\n"
        if self.buffer:
            line, self.buffer = self.buffer, b""
            return line
        return None

    def close(self) -> None:
        self.selector.close()


def _build_sim(sim: SimulatedAsterisk | None, options: dict[str, Any]) -> SimulatedAsterisk:
    if sim is not None:
        if options:
            raise TypeError("pass either sim= or simulator options, not both")
        return sim
    if "agi_env" in options:
        options["env"] = options.pop("agi_env")
    return SimulatedAsterisk(**options)


def _network_sim(
    host: str,
    port: int,
    path: str,
    sim: SimulatedAsterisk | None,
    sim_options: dict[str, Any],
    caller: str,
) -> SimulatedAsterisk:
    """The simulator for a FastAGI call: `sim` (which must be in network mode), or one built
    from `sim_options` with ``network=True``, ``request="agi://host:port/path"`` and
    ``network_script=path`` unless given."""
    if sim is not None and not sim.network:
        raise ValueError(f"{caller} needs a SimulatedAsterisk built with network=True")
    sim_options.setdefault("network", True)
    sim_options.setdefault("request", f"agi://{host}:{port}/{path}")
    sim_options.setdefault("network_script", path or None)
    return _build_sim(sim, sim_options) if sim is None else sim


def run_process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
    sim: SimulatedAsterisk | None = None,
    **sim_options: Any,
) -> SimResult:
    """Run ``argv`` as a process AGI script against the simulator.

    ``env``/``cwd`` are the child's OS environment and working directory. Simulator options
    (``dtmf=``, ``sounds=``, ``agi_env=`` for the AGI env overrides, ``sighup=``...) build a
    :class:`SimulatedAsterisk` with ``request=argv[0]`` and ``args=argv[1:]``, unless ``sim`` is
    given. ``timeout`` is the real-time limit for each line and for the final exit.
    """
    sim_options.setdefault("request", argv[0])
    sim_options.setdefault("args", list(argv[1:]))
    core = _build_sim(sim, sim_options) if sim is None else sim
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=env,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []
    stderr_pipe = proc.stderr

    def drain() -> None:
        for chunk in iter(lambda: stderr_pipe.read(65536), b""):
            stderr_chunks.append(chunk)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    result = SimResult(core, None, b"")
    stdin = proc.stdin
    stdin_open = True

    def write(data: bytes) -> None:
        nonlocal stdin_open
        result.log.append(("A>S", data))
        if stdin_open:
            try:
                stdin.write(data)
            except (BrokenPipeError, OSError):
                stdin_open = False

    def emit(outputs: list[Output]) -> bool:
        """Apply outputs; False once the session is closed by Asterisk."""
        nonlocal stdin_open
        for out in outputs:
            if isinstance(out, bytes):
                write(out)
            elif out is Control.SIGHUP:
                result.log.append(("SIG", b"SIGHUP"))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGHUP)
            else:
                result.log.append(("CLOSE", b""))
                if stdin_open:
                    stdin_open = False
                    stdin.close()
                return False
        return True

    reader = _LineReader(proc.stdout.fileno(), timeout)
    sent_final_sighup = False
    try:
        write(core.env_block())
        while True:
            line = reader.readline()
            if line is None:
                break
            result.log.append(("S>A", line))
            if not emit(core.handle_line(line)):
                break
        if not core.closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            finals = core.finish()
            sent_final_sighup = proc.poll() is None and Control.SIGHUP in finals
            emit(finals)
        if stdin_open:
            stdin_open = False
            stdin.close()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PeerTimeout(f"the AGI script did not exit within {timeout:.1f} s") from exc
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        reader.close()
        proc.stdout.close()
        drainer.join(timeout=5)
    if not (sent_final_sighup and code == -signal.SIGHUP):
        core.record_exit_status(code)
    result.exit_code = code
    result.stderr = b"".join(stderr_chunks)
    return result


def run_fastagi(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float = 20.0,
    sim: SimulatedAsterisk | None = None,
    **sim_options: Any,
) -> SimResult:
    """Connect to a FastAGI server at ``host:port`` and run one call for script ``path``.

    The simulator gets ``network=True``, ``request="agi://host:port/path"`` and
    ``network_script=path`` unless ``sim`` is given (which must then be in network mode).
    """
    core = _network_sim(host, port, path, sim, sim_options, "run_fastagi")
    result = SimResult(core, None, b"")
    conn = socket.create_connection((host, port), timeout=timeout)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # like Asterisk: no Nagle delay
    conn.settimeout(timeout)
    open_for_write = True

    def write(data: bytes) -> None:
        nonlocal open_for_write
        result.log.append(("A>S", data))
        if open_for_write:
            try:
                conn.sendall(data)
            except OSError:
                open_for_write = False

    reader = _LineReader(conn.fileno(), timeout)
    try:
        write(core.env_block())
        closed = False
        while not closed:
            line = reader.readline()
            if line is None:
                break
            result.log.append(("S>A", line))
            for out in core.handle_line(line):
                if isinstance(out, bytes):
                    write(out)
                elif out is Control.CLOSE:
                    result.log.append(("CLOSE", b""))
                    closed = True
        for out in core.finish():
            if isinstance(out, bytes):
                write(out)
    finally:
        reader.close()
        conn.close()
    return result


__all__ = [
    "AGI_LINE_MAX",
    "ALL_DIGITS",
    "COMMANDS",
    "DEAD_511",
    "DEFAULT_ENV",
    "DTMF_KEYS",
    "ENV_KEYS",
    "HANGUP_LINE",
    "RESULT_FAILURE",
    "RESULT_SHOWUSAGE",
    "RESULT_SUCCESS",
    "TICKS_PER_SECOND",
    "UNKNOWN_510",
    "USAGE_GET_DATA",
    "USAGE_NOT_AVAILABLE",
    "USAGE_SET_VARIABLE",
    "USAGE_STREAM_FILE",
    "USAGE_WAIT_FOR_DIGIT",
    "AgiStatus",
    "AnswerEntry",
    "CommandEntry",
    "CommandSpec",
    "Control",
    "Direction",
    "DtmfEvent",
    "DtmfScript",
    "Handler",
    "HangupEntry",
    "KeyEntry",
    "Output",
    "PeerTimeout",
    "PlayEntry",
    "SetEntry",
    "SimResult",
    "SimulatedAsterisk",
    "SimulationError",
    "SoundCatalog",
    "TranscriptEntry",
    "WaitEntry",
    "WavSoundCatalog",
    "atoi",
    "find_command",
    "format_transcript",
    "mapping_catalog",
    "parse_dtmf_script",
    "run_fastagi",
    "run_process",
    "scan_float",
    "scan_int",
]
