"""Translate engine actions into AGI commands and AGI responses into engine events, sans I/O.

A `CallSession` sits between the pure `engine.Call` and a driver (process AGI on pyst2, FastAGI on
asyncio, or a test). It never reads or writes a stream: it returns *operations* — send this AGI
command, write this evidence record, answer with a returning caller's earlier decision
(`RecallEarlier`), done — and is told what came back. So both drivers share one
mapping, and the rules that decide how an ambiguous AGI answer is read live in one place:

* ``200 result=-1`` (STREAM FILE, WAIT FOR DIGIT, ANSWER) means "hung up" *or* "failed" (missing
  file). If no ``HANGUP`` line / SIGHUP has been seen, the session sends ``CHANNEL STATUS``: a
  hung-up channel answers ``511`` (and the ``HANGUP`` notice arrives first), a live one
  ``200 result=6``.
* ``511``, EOF, and a broken pipe mean hung up; ``510``/``520``/unparseable lines are errors.
* Variables are set with the ``__`` prefix so forwarded and dialled legs inherit them.
* Every command carries its own time (`Command.budget_ms`: a prompt's remaining length, a digit
  wait's timeout, 0 for the rest) and so its answer deadline, `Command.answer_within`: the one
  place both drivers take it from. A peer that has not answered by then ends the call as
  ``error`` (`AnswerTimeout`), with its record, long before the call's own time limit.
"""

from __future__ import annotations

from consent_ivr.engine import (
    Answer,
    DigitPressed,
    Done,
    Failed,
    Finish,
    HungUp,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    Recall,
    Recorded,
    RecordFailed,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
)
from consent_ivr.protocol.codec import AgiProtocolError, describe_line
from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from consent_ivr.engine import (
        Action,
        Call,
        Decision,
        EarlierDecision,
        Event,
        NoEarlierDecision,
    )
    from consent_ivr.flow.model import Flow
    from consent_ivr.protocol.codec import Response

INHERIT_PREFIX = "__"

#: How much longer than a command's own time its answer may take. Asterisk answers a prompt at
#: its last sample and a digit wait at its timeout, then within milliseconds; the margin covers
#: what is not the command: a loaded PBX starting the playback (file open, codec translation
#: path), a stored prompt a little longer than its hashed WAV in another format, scheduling and
#: network delays. 5 s is far beyond any of these, yet a dribbling peer loses its slot after
#: seconds, not after the call's limit (--call-timeout, 15 min).
ANSWER_MARGIN_S = 5.0
#: Once a command's answer is late (or the call's time is up), how long finishing up may take:
#: the record is written whatever happens; setting the error variables is best effort.
FINISH_GRACE_S = 5.0
#: The audio rate of every prompt (8 kHz): samples per millisecond.
SAMPLES_PER_MS = 8


class AnswerTimeout(AgiProtocolError):
    """The peer did not complete its answer within the command's deadline."""


def error_variables(flow: Flow | None) -> list[tuple[str, str]]:
    """The error outcome set without an engine (start-up failed, a bug, an unknown flow), with
    the names the engine uses (`Call._final_variables`). The status first: if `granted` was
    already set and the channel then stops answering, the one variable every later step checks
    already says error."""
    if flow is not None and flow.is_withdrawal:  # never touches the consent variables
        values = [("CONSENT_WITHDRAWAL", "error")]
        values += [("CONSENT_WITHDRAWAL_" + q.purpose.upper(), "error") for q in flow.questions]
    else:
        values = [("CONSENT_STATUS", "error")]
        if flow is not None:
            values += [(p.variable, "error") for p in flow.consent_purposes]
    if flow is not None:
        values.append(("CONSENT_FLOW", flow.label))
    return [*values, ("CONSENT_REASON", "error"), ("CONSENT_RECORD_ID", "")]


class Command(Record):
    """An AGI command: literal command words and arguments (the driver quotes the arguments).

    `budget_ms` is the command's own time: how long Asterisk may rightly take before it answers
    (a prompt's remaining audio, a digit wait's timeout; 0 for a command that answers at once).
    """

    words: tuple[str, ...]
    args: tuple[str, ...] = ()
    budget_ms: int = 0

    @property
    def name(self) -> str:
        return " ".join(self.words)

    @property
    def answer_within(self) -> float:
        """Seconds from sending the command until its answer must be complete."""
        return self.budget_ms / 1000 + ANSWER_MARGIN_S

    def late(self) -> AnswerTimeout:
        """The error for an answer that did not come in time."""
        return AnswerTimeout(f"no complete answer within {self.answer_within:.1f} s")


class WriteEvidence(Record):
    decision: Decision


class RecallEarlier(Record):
    """Answer (`CallSession.on_recall`) with the caller's earlier decision, waiting at most
    `wait_ms` for a look-up the driver started with the call (R18)."""

    wait_ms: int


class Finished(Record):
    status: str


Op = Command | WriteEvidence | RecallEarlier | Finished


def audio_argument(path: str) -> str:
    """STREAM FILE takes the file name without its extension; Asterisk picks the format."""
    return path[:-4] if path.lower().endswith(".wav") else path


class CallSession:
    """Drive one `Call` over AGI. Use `start()`, then feed `on_response` / `on_evidence`."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._action: Action | None = None
        self._pending_vars: list[tuple[str, str]] = []
        self._var_failed: str | None = None
        self._probing: Response | None = None
        self.hung_up = False
        self.commands_sent = 0

    @property
    def status(self) -> str:
        return self.call.status

    def start(self) -> Op:
        return self._perform(self.call.start())

    # ------------------------------------------------------------------ driver feedback
    def on_response(self, resp: Response | None, *, hangup_seen: bool, at_ms: int) -> Op:
        """Report the response to the last `Command` (None = EOF / broken pipe)."""
        if hangup_seen:
            self.hung_up = True
        if resp is None or resp.dead:
            self.hung_up = True
        action = self._action
        if isinstance(action, SetVariables):
            return self._on_variable_set(resp, at_ms)
        if self._probing is not None:
            original = self._probing
            self._probing = None
            if self.hung_up or resp is None or resp.dead:
                return self._emit(HungUp(at_ms=at_ms, endpos=original.endpos))
            if isinstance(action, Play):
                return self._emit(PlayFailed(at_ms=at_ms, detail="STREAM FILE returned -1"))
            return self._emit(Failed(at_ms=at_ms, detail=f"{type(action).__name__} returned -1"))
        if resp is None or resp.dead:
            endpos = None
            if isinstance(action, Play):
                endpos = action.offset
            return self._emit(HungUp(at_ms=at_ms, endpos=endpos))
        if not resp.ok:
            detail = f"AGI answered {describe_line(resp.lines[0])}"
            return self._emit(Failed(at_ms=at_ms, detail=detail))
        try:
            event = self._event_for(action, resp, at_ms)
        except (ValueError, TypeError, AgiProtocolError) as exc:  # e.g. "200 result=" alone
            return self._emit(Failed(at_ms=at_ms, detail=f"unreadable AGI response: {exc}"))
        if event is None:  # result=-1 without a hang-up notice: ask the channel
            self._probing = resp
            return Command(("CHANNEL", "STATUS"))
        return self._emit(event)

    def current_play(self) -> Play | None:
        """The play the last STREAM FILE performed, if the current action is one."""
        action = self._action
        return action if isinstance(action, Play) else None

    def on_error(self, detail: str, *, at_ms: int) -> Op:
        """The last command could not be exchanged (protocol error, unencodable argument)."""
        self._pending_vars = []
        self._probing = None
        return self._emit(Failed(at_ms=at_ms, detail=detail))

    def on_recall(self, found: EarlierDecision | NoEarlierDecision) -> Op:
        """Report the result of `RecallEarlier`."""
        return self._emit(found)

    def on_evidence(self, record_id: str | None, *, error: str | None, at_ms: int) -> Op:
        """Report the result of `WriteEvidence`."""
        if record_id and error is None:
            return self._emit(Recorded(at_ms=at_ms, record_id=record_id))
        return self._emit(RecordFailed(at_ms=at_ms, detail=error or "no record id"))

    # --------------------------------------------------------------------- internals
    def _event_for(self, action: Action | None, resp: Response, at_ms: int) -> Event | None:
        result = resp.result_int()
        if isinstance(action, Answer):
            return None if result < 0 else Done(at_ms=at_ms)
        if isinstance(action, Play):
            endpos = resp.endpos
            if endpos is None:
                endpos = action.offset
            if result < 0:
                if self.hung_up:
                    return HungUp(at_ms=at_ms, endpos=endpos)
                return None
            digit = chr(result) if result > 0 else None
            if digit is not None and digit not in action.escape:
                raise ValueError(f"STREAM FILE returned {digit!r}, not an escape digit")
            return PlayEnded(at_ms=at_ms, endpos=endpos, digit=digit)
        if isinstance(action, WaitForDigit):
            if result < 0:
                return HungUp(at_ms=at_ms) if self.hung_up else None
            if result == 0:
                return WaitTimedOut(at_ms=at_ms)
            return DigitPressed(at_ms=at_ms, digit=chr(result))
        raise ValueError(f"no response expected for {type(action).__name__}")

    def _on_variable_set(self, resp: Response | None, at_ms: int) -> Op:
        if resp is None:
            self._var_failed = "connection lost while setting variables"
        elif not resp.ok:
            self._var_failed = f"SET VARIABLE answered {describe_line(resp.lines[0])}"
        if self._pending_vars and self._var_failed is None:
            return self._next_variable()
        self._pending_vars = []
        if self._var_failed is not None:
            detail, self._var_failed = self._var_failed, None
            if self.hung_up and resp is None:
                return self._emit(HungUp(at_ms=at_ms))
            return self._emit(Failed(at_ms=at_ms, detail=detail))
        if self.hung_up:
            return self._emit(HungUp(at_ms=at_ms))
        return self._emit(Done(at_ms=at_ms))

    def _next_variable(self) -> Command:
        name, value = self._pending_vars.pop(0)
        return Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))

    def _emit(self, event: Event) -> Op:
        return self._perform(self.call.send(event))

    def _perform(self, action: Action) -> Op:
        self._action = action
        if isinstance(action, SetVariables):
            self._pending_vars = list(action.values)
            return self._next_variable()
        if isinstance(action, Answer):
            return Command(("ANSWER",))
        if isinstance(action, Play):
            args = [audio_argument(action.audio), action.escape]
            if action.offset:
                args.append(str(action.offset))
            remaining = max(0, action.samples - action.offset)
            budget = -(-remaining // SAMPLES_PER_MS)  # rounded up
            return Command(("STREAM", "FILE"), tuple(args), budget)
        if isinstance(action, WaitForDigit):
            timeout = action.timeout_ms
            return Command(("WAIT", "FOR", "DIGIT"), (str(timeout),), max(0, timeout))
        if isinstance(action, Persist):
            return WriteEvidence(action.decision)
        if isinstance(action, Recall):
            return RecallEarlier(action.wait_ms)
        if isinstance(action, Finish):
            return Finished(action.status)
        raise TypeError(f"unknown action {action!r}")
