"""The sans-I/O simulated Asterisk: the AGI session, one command line in, the reply out.

:class:`SimulatedAsterisk` is res_agi.c's ``run_agi`` over the simulated channel: it builds the
environment block; it takes one command line at a time (a long one split as ``fgets`` splits it),
tokenizes it (``parse_args``), finds its row in the command table and runs the handler, answering
510 (unknown), 511 (dead channel) or 520 (usage) itself; between commands it lets virtual time
pass (keys are dropped, hang-ups happen); it delivers the hang-up notice (SIGHUP or the ``HANGUP``
line), enters dead mode, keeps AGISTATUS and gives the final notice when the script ends. It
never reads a real clock and never touches a file descriptor: the runners (``runners.py``,
``aclient.py``, ``loopback.py``) move its bytes.
"""

from __future__ import annotations

from consent_ivr.harness.clock import TICKS_PER_SECOND, sec
from consent_ivr.harness.commands import Commands, find_command
from consent_ivr.harness.env import ENV_KEYS
from consent_ivr.harness.tokenizer import parse_args
from consent_ivr.harness.transcript import CommandEntry
from consent_ivr.harness.wire import (
    AGI_LINE_MAX,
    DEAD_511,
    HANGUP_LINE,
    RESULT_FAILURE,
    RESULT_SHOWUSAGE,
    RESULT_SUCCESS,
    UNKNOWN_510,
    USAGE_NOT_AVAILABLE,
    Control,
    Output,
    enc,
)


class SimulationError(RuntimeError):
    """The simulation cannot go on (peer timed out, core used after close, ...)."""


class SimulatedAsterisk(Commands):
    """The sans-I/O simulated Asterisk: this module's AGI session over the simulated channel.

    Built with the keyword arguments of :class:`~.channel.Channel`, which holds the state; the
    theory of operation is in :mod:`consent_ivr.harness.asterisk`.
    """

    # ---- public state ------------------------------------------------------------------

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

    # ---- internals: time between commands ----------------------------------------------------

    def _advance_idle(self, target: int, *, explicit: bool) -> list[Output]:
        """No command runs from now until ``target``: drop keys, apply hang-ups."""
        self._pending_entries = []
        if self.live is not None:
            # a live caller's acts while no command ran: keys nobody heard, or the hang-up
            for act in self.live.pending():
                if act.kind == "hangup":
                    self._hangup(self._tick, "caller")
                    break
                assert act.key is not None
                self._key_entry(self._tick, act.key, "dropped", None)
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
