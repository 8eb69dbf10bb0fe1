"""The consent call as a pure state machine: events in, actions out; no I/O, no clock.

Theory of operation
-------------------
A `Call` is built from a validated `Flow` and a language. `start()` returns the first action;
afterwards the driver performs each action in the world and reports what happened with
`send(event)`, which returns the next action, until `Finish`. Every event carries the driver's
notion of call time (`at_ms`) so the evidence can say when a key was pressed; the engine never
reads a clock itself.

Between two actions the call is in one `Phase`: the action it returned last and waits for the
driver to answer. `TRANSITIONS`, below, is the whole of what a call accepts: for each phase, the
event types that answer its action and the method that handles each. `send()` looks the pair
(phase, type of the event) up in it (its names resolved to the methods once, at import) and
nowhere else, so a handler only ever sees the events its row names, and what the engine does is
read from this table, not searched for in its methods.

A pair the table does not name (a key in reply to SET VARIABLE, a record confirmation while a
prompt plays) is no answer to the pending action: the driver and the engine disagree about where
the call is. That is an explicit engine error, and it fails closed like every error, never with
an exception and never with ``granted``:

* before the decision (`initial_vars` .. `waiting`): every undecided purpose becomes ``error`` and
  the decision goes to the store, naming the error (`Persist`, then the variables);
* in reply to `Persist`: the write is unconfirmed, as after `RecordFailed`: every purpose
  ``error`` in the variables;
* after the record was written (`final_vars`, `closing`): the record stands, the channel is set to
  the error outcome (`SetVariables` in phase `error_vars`, the status first) and the call ends;
* in `error_vars`: the call ends.

`init` and `done` have no row: no action is pending there, so `send()` is a bug in the driver
and raises `RuntimeError`.

Rules of this file (everything that affects a consent outcome lives here):

* **Transitions are data.** A phase is a `Phase`; what answers it is a row of `TRANSITIONS`;
  adding an event or a phase means adding rows and handlers, never a type test in a handler.
* **Default deny (R1).** Every consent purpose starts as ``none``. Only the accept key, pressed
  while the caller is *informed* (every mandatory first-layer segment has been heard to its last
  sample) or in a flow that explicitly sets ``accept_during_notice``, yields ``granted``.
  Silence, wrong keys, hang-ups, playback failures, AGI errors, store failures and events out of
  place never do.
* **Informed before accepting (R5).** An accept pressed during the first layer is recorded as
  ``early_accept`` and does not count: the interrupted segment resumes where it stopped (AGI
  ``endpos``) and the question follows. After `Caps.early_accepts` such presses the accept key is
  no longer an escape digit until the notice is complete (so the notice always finishes).
* **Decline at any time (R2, R5).** The decline key is an escape digit of every prompt but the
  closing message; it decides the current question.
* **Bounded prompting (R6).** Silence and wrong keys have separate caps plus a total cap; the
  repeat and full-notice keys do not burn an attempt but share the `replays` cap; after it, they
  count as wrong keys. A decided question is never asked again.
* **Persist before use (R12).** The decision is handed to the driver as `Persist`; only after
  `Recorded` are the channel variables set to the outcome. `RecordFailed` turns every purpose into
  ``error``.
* **No detriment (R3).** The engine never hangs up; `Finish` returns the call to the dialplan.
* **Returning callers (R18), opt-in.** In a flow with `returning`, once the first notice segment
  has played out with no key pressed, `Recall` asks the driver for the caller's earlier decision
  (phase `recall`). Only one made under this very notice, of an outcome the flow remembers, and
  not about recording unless the flow states it (`_refusal`), is honoured: the reminder then
  stands for the rest of the first layer and every question. Silence or the other choice key
  keeps it (reason ``reused``); the decline key withdraws a grant (``declined`` by key); the
  accept key on a decline leads through the rest of the notice to the question, whose accept
  alone can grant. Anything else — nothing found, a failure, a hang-up — is the full flow.

Hearing coverage is tracked per prompt as the contiguous number of samples heard from the start,
so a segment interrupted at ``endpos`` and resumed from there counts as heard once it reaches its
end. The state that matters for the outcome is exposed by `snapshot()` so tests can enumerate the
whole state graph of a flow.

Longer than 400 lines on purpose: every rule that decides a consent outcome is in this one file,
to be read and reviewed together; the records it speaks are in `consent_ivr.engine.events`. On
the process-AGI start path (`tests/test_agi_start.py`): no ``typing`` at run time.
"""

from __future__ import annotations

from enum import StrEnum

from consent_ivr.engine.events import (
    INPUT_ROLES,
    Answer,
    Decision,
    DigitPressed,
    Done,
    EarlierDecision,
    Failed,
    Finish,
    HungUp,
    KeyLog,
    NoEarlierDecision,
    Outcome,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    PlayLog,
    PurposeOutcome,
    Reason,
    Recall,
    Recorded,
    RecordFailed,
    Role,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
    aggregate_status,
    withdrawal_word,
)
from consent_ivr.flow.model import DTMF_KEYS
from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from consent_ivr.engine.events import Action, Event
    from consent_ivr.flow.model import Flow, Prompt


class Phase(StrEnum):
    """Where a call is: the action it waits for the driver to answer."""

    INIT = "init"  # built; `start()` not called yet
    INITIAL_VARS = "initial_vars"  # SetVariables: every outcome variable `none`
    ANSWER = "answer"  # Answer
    PLAYING = "playing"  # Play: notice, full notice, question, re-prompt or reminder
    RECALL = "recall"  # Recall: the returning caller's earlier decision, if one is honoured
    WAITING = "waiting"  # WaitForDigit after the question
    PERSIST = "persist"  # Persist: the decision, to the evidence store
    FINAL_VARS = "final_vars"  # SetVariables: the recorded outcome
    CLOSING = "closing"  # Play: the closing message
    ERROR_VARS = "error_vars"  # SetVariables: the error outcome after an engine error
    DONE = "done"  # Finish returned; nothing is pending


#: (phase, event type) -> the `Call` method that handles the event in that phase. Every other pair
#: is an engine error (`Call._unexpected`). `send()` dispatches through this table only.
TRANSITIONS: dict[tuple[Phase, type[Event]], str] = {
    # the initial variables (all `none`) were set
    (Phase.INITIAL_VARS, Done): "_initial_vars_set",
    (Phase.INITIAL_VARS, HungUp): "_hangup",
    (Phase.INITIAL_VARS, Failed): "_initial_vars_failed",
    # the channel was answered
    (Phase.ANSWER, Done): "_answered",
    (Phase.ANSWER, HungUp): "_hangup",
    (Phase.ANSWER, Failed): "_answer_failed",
    # a prompt before the decision ended
    (Phase.PLAYING, PlayEnded): "_play_ended",
    (Phase.PLAYING, HungUp): "_hangup_while_playing",
    (Phase.PLAYING, PlayFailed): "_play_failed",
    (Phase.PLAYING, Failed): "_play_failed",
    # the look-up of a returning caller's earlier decision answered (R18)
    (Phase.RECALL, EarlierDecision): "_earlier_found",
    (Phase.RECALL, NoEarlierDecision): "_no_earlier",
    (Phase.RECALL, Failed): "_recall_failed",
    (Phase.RECALL, HungUp): "_hangup",
    # the wait for a key after the question ended
    (Phase.WAITING, DigitPressed): "_digit_pressed",
    (Phase.WAITING, WaitTimedOut): "_wait_timed_out",
    (Phase.WAITING, HungUp): "_hangup",
    (Phase.WAITING, Failed): "_wait_failed",
    # the evidence store answered the decision
    (Phase.PERSIST, Recorded): "_recorded",
    (Phase.PERSIST, RecordFailed): "_not_recorded",
    (Phase.PERSIST, Failed): "_not_recorded",
    (Phase.PERSIST, HungUp): "_hangup_while_recording",
    # the outcome variables were set
    (Phase.FINAL_VARS, Done): "_final_vars_set",
    (Phase.FINAL_VARS, Failed): "_final_vars_set",
    (Phase.FINAL_VARS, HungUp): "_hangup_after_final_vars",
    # the closing message ended
    (Phase.CLOSING, PlayEnded): "_close_ended",
    (Phase.CLOSING, HungUp): "_close_ended",
    (Phase.CLOSING, PlayFailed): "_end",
    (Phase.CLOSING, Failed): "_end",
    # the error variables after an engine error were set
    (Phase.ERROR_VARS, Done): "_end",
    (Phase.ERROR_VARS, HungUp): "_end",
    (Phase.ERROR_VARS, Failed): "_end",
}

# Module-level aliases for the hot path: an enum member looked up on its class runs a
# descriptor (Python 3.11), a module global does not.
_NOTICE, _FULL, _QUESTION, _CLOSE = Role.NOTICE, Role.FULL, Role.QUESTION, Role.CLOSE
_REMINDER = Role.REMINDER
_INIT, _INITIAL_VARS, _ANSWER = Phase.INIT, Phase.INITIAL_VARS, Phase.ANSWER
_PLAYING, _WAITING, _PERSIST = Phase.PLAYING, Phase.WAITING, Phase.PERSIST
_RECALL = Phase.RECALL
_FINAL_VARS, _CLOSING, _ERROR_VARS, _DONE = (
    Phase.FINAL_VARS,
    Phase.CLOSING,
    Phase.ERROR_VARS,
    Phase.DONE,
)
#: Phases in which no question is open any more: the decision is made.
_DECIDED = frozenset({_PERSIST, _FINAL_VARS, _CLOSING, _ERROR_VARS, _DONE})
#: Phases in which the decision is still to be made.
_UNDECIDED = frozenset({_INITIAL_VARS, _ANSWER, _PLAYING, _RECALL, _WAITING})


class _Item(Record):
    prompt: Prompt
    role: Role
    offset: int = 0


class _Counters(Record):
    noinput: int = 0
    nomatch: int = 0
    total: int = 0


class Call:
    """One consent call. Build with `Call(flow, language)`, then `start()` and `send(event)`."""

    def __init__(self, flow: Flow, language: str) -> None:
        if language not in flow.languages:
            raise ValueError(f"flow {flow.id} does not serve language {language!r}")
        self.flow = flow
        self.language = language
        self._phase = _INIT
        self._queue: list[_Item] = []
        self._current: _Item | None = None
        self._current_started = 0
        self._question = 0
        self._counters = _Counters()
        self._replays = 0
        self._early_accepts = 0
        self._heard: dict[str, int] = {}
        self._informed: bool | None = None  # `informed`, cached until `_heard` changes
        self._outcomes: dict[str, tuple[Outcome, Reason, int | None]] = {}
        self._hung_up = False
        self._errors: list[str] = []
        self._plays: list[PlayLog] = []
        self._keys: list[KeyLog] = []
        self._record_id = ""
        self._status = "none"
        #: returning callers (R18): what the look-up said ("" = not asked), the earlier decision
        #: honoured, and whether the reminder path is in force (left by the change key)
        self._recall = ""
        self._earlier: EarlierDecision | None = None
        self._reminding = False

    def __repr__(self) -> str:
        return f"Call({self.flow.label}, {self.language}, phase={self._phase})"

    # ------------------------------------------------------------------ public surface
    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def finished(self) -> bool:
        return self._phase == _DONE

    @property
    def status(self) -> str:
        return self._status

    @property
    def record_id(self) -> str:
        return self._record_id

    def outcome(self, purpose: str) -> Outcome:
        return self._outcomes.get(purpose, (Outcome.NONE, Reason.ERROR, None))[0]

    @property
    def informed(self) -> bool:
        """Every mandatory first-layer segment has been heard to its end."""
        if self._informed is None:
            lang, heard = self.language, self._heard
            self._informed = all(heard.get(p.id, 0) >= p.samples[lang] for p in self.flow.notice)
        return self._informed

    def snapshot(self) -> tuple[object, ...]:
        """The state that can still change this call's outcome (no logs, no times), hashable: two
        calls with equal snapshots behave the same from here on, whatever their past. The
        whole-flow proof (`consent_ivr.lint.proof`) merges states by it, so it must drop only what
        cannot matter: once the decision is made, only the outcomes and the closing prompt
        matter; once the caller is informed, how much of each segment was heard and how many
        early accepts were pressed no longer change anything."""
        cur = (
            (self._current.prompt.id, self._current.role, self._current.offset)
            if self._current
            else None
        )
        outcomes = tuple(sorted((k, v[0], v[1]) for k, v in self._outcomes.items()))
        if self._phase in _DECIDED:
            return (self._phase, cur, outcomes, self._hung_up, self._status)
        informed = self.informed
        return (
            self._phase,
            cur,
            tuple((i.prompt.id, i.role, i.offset) for i in self._queue),
            self._question,
            (self._counters.noinput, self._counters.nomatch, self._counters.total),
            self._replays,
            0 if informed else self._early_accepts,
            None if informed else tuple(sorted(self._heard.items())),
            outcomes,
            self._hung_up,
            self._status,
            # returning callers: whether the look-up can still be asked for (why it said no
            # changes nothing), the earlier decision honoured, the reminder path
            self.flow.returning is not None and not self._recall and not self._keys,
            # what the reminder honours (its notice too: the proof judges a reuse by it)
            (self._earlier.outcome, self._earlier.notice_sha256, bool(self._earlier.record_id))
            if self._earlier and self._reminding
            else None,
            self._reminding,
        )

    def reason(self, purpose: str) -> Reason | None:
        """Why `purpose` has its outcome (None while undecided)."""
        decided = self._outcomes.get(purpose)
        return decided[1] if decided else None

    @property
    def honoured(self) -> EarlierDecision | None:
        """The returning caller's earlier decision the reminder honours (None: the full flow)."""
        return self._earlier

    @property
    def looked_up(self) -> str:
        """What the look-up of a returning caller's earlier decision said: "" (not asked),
        "honoured", or why not (`NoEarlierDecision.why`, or `_refusal`'s reason)."""
        return self._recall

    @property
    def reminding(self) -> bool:
        """On the reminder path: the reminder stands for the first layer and the question."""
        return self._reminding

    @property
    def question_index(self) -> int:
        """Index of the question in force (== number of questions decided so far)."""
        return self._question

    def heard(self, prompt_id: str) -> int:
        """How many samples of a prompt were heard from its start, contiguously (R5)."""
        return self._heard.get(prompt_id, 0)

    def decided(self, purpose: str) -> bool:
        """Whether the question about `purpose` has its outcome (by key, caps, hang-up, error)."""
        return purpose in self._outcomes

    @property
    def reprompts(self) -> tuple[int, int, int]:
        """The re-prompt counts of the question in force: (after silence, after wrong keys, in
        all); the flow's picture labels its edges by them."""
        c = self._counters
        return (c.noinput, c.nomatch, c.total)

    @property
    def last_key(self) -> KeyLog | None:
        """The last key the engine received, with the meaning it gave it."""
        return self._keys[-1] if self._keys else None

    @property
    def pending_prompts(self) -> tuple[str, ...]:
        """Ids of the prompts queued after the current one (for the proof's replay check)."""
        return tuple(i.prompt.id for i in self._queue)

    def clone(self) -> Call:
        """An independent copy sharing the immutable flow (for exploring alternative events)."""
        import copy  # not needed on a call's path: clone() serves the state-graph explorer

        twin = copy.copy(self)
        twin._queue = list(self._queue)
        twin._heard = dict(self._heard)
        twin._outcomes = dict(self._outcomes)
        twin._errors = list(self._errors)
        twin._plays = list(self._plays)
        twin._keys = list(self._keys)
        return twin

    def start(self) -> Action:
        if self._phase != _INIT:
            raise RuntimeError("call already started")
        self._phase = _INITIAL_VARS
        if self.flow.is_withdrawal:  # a withdrawal call never touches the consent variables
            values = [("CONSENT_WITHDRAWAL", "none"), ("CONSENT_FLOW", self.flow.label)]
            values += [
                ("CONSENT_WITHDRAWAL_" + q.purpose.upper(), "none") for q in self.flow.questions
            ]
            return SetVariables(tuple(values))
        values = [("CONSENT_STATUS", "none"), ("CONSENT_FLOW", self.flow.label)]
        values += [(p.variable, "none") for p in self.flow.consent_purposes]
        return SetVariables(tuple(values))

    def send(self, event: Event) -> Action:
        """Report the result of the last action; returns the next action."""
        handler = _HANDLERS.get((self._phase, type(event)))
        if handler is not None:
            action: Action = handler(self, event)
            return action
        if self._phase == _INIT or self._phase == _DONE:
            raise RuntimeError(f"no action is pending in phase {self._phase}")
        return self._unexpected(event)

    # ------------------------------------------------- handlers (named in TRANSITIONS)
    def _initial_vars_set(self, event: Done) -> Action:
        self._phase = _ANSWER
        return Answer()

    def _initial_vars_failed(self, event: Failed) -> Action:
        return self._error(event.detail or "setting the initial variables failed")

    def _answered(self, event: Done) -> Action:
        self._queue = [*self._unheard_notice(), self._question_item()]
        return self._next()

    def _answer_failed(self, event: Failed) -> Action:
        return self._error(event.detail or "answer failed")

    def _play_ended(self, event: PlayEnded) -> Action:
        item = self._current
        assert item is not None
        self._log_play(item, event.endpos, event.digit, event.at_ms)
        self._current = None
        if event.digit is None:
            if item.role is _REMINDER:
                if self._heard.get(item.prompt.id, 0) >= item.prompt.samples[self.language]:
                    # silence after the whole reminder (its one-key withdrawal offer included)
                    # keeps the earlier decision
                    return self._decide_all(self._earlier_outcome(), Reason.REUSED, event.at_ms)
                return self._reminder_unheard(event.at_ms)
            if self._recall_due(item):
                self._phase = _RECALL
                return Recall()
            return self._next()
        return self._key(event.digit, event.at_ms, item, event.endpos)

    def _earlier_found(self, event: EarlierDecision) -> Action:
        why = self._refusal(event)
        if why:
            return self._no_earlier(NoEarlierDecision(at_ms=event.at_ms, why=why))
        self._recall = "honoured"
        self._earlier = event
        self._reminding = True
        self._current_started = event.at_ms
        self._queue = [self._reminder_item()]
        return self._next()

    def _reminder_unheard(self, at_ms: int) -> Action:
        """The reminder ended early without a key: nothing is honoured that the caller did not
        hear offered back; the full flow, from the notice's first unheard segment."""
        self._reminding = False
        self._earlier = None
        self._recall = "reminder_unheard"
        self._current_started = at_ms
        self._queue = [*self._unheard_notice(), self._question_item()]
        return self._next()

    def _no_earlier(self, event: NoEarlierDecision) -> Action:
        self._recall = event.why or "none"
        self._current_started = event.at_ms
        return self._next()

    def _recall_failed(self, event: Failed) -> Action:
        return self._no_earlier(NoEarlierDecision(at_ms=event.at_ms, why="store_error"))

    def _hangup_while_playing(self, event: HungUp) -> Action:
        item = self._current
        assert item is not None
        if event.endpos is not None:
            self._log_play(item, event.endpos, None, event.at_ms)
        return self._hangup(event)

    def _play_failed(self, event: PlayFailed | Failed) -> Action:
        item = self._current
        assert item is not None
        self._log_play(item, item.offset, None, event.at_ms, failed=True)
        return self._error(f"playback of {item.prompt.id} failed: {event.detail}".rstrip(": "))

    def _digit_pressed(self, event: DigitPressed) -> Action:
        return self._key(event.digit, event.at_ms, None, None)

    def _wait_timed_out(self, event: WaitTimedOut) -> Action:
        return self._noinput(event.at_ms)

    def _wait_failed(self, event: Failed) -> Action:
        return self._error(event.detail or "waiting for a digit failed")

    def _hangup(self, event: HungUp) -> Action:
        self._hung_up = True
        for pid in self._undecided():
            self._outcomes[pid] = (Outcome.NONE, Reason.HANGUP, None)
        return self._persist()

    def _recorded(self, event: Recorded) -> Action:
        self._record_id = event.record_id
        return self._outcome_variables()

    def _not_recorded(self, event: RecordFailed | Failed) -> Action:
        return self._write_failed(event.detail)

    def _hangup_while_recording(self, event: HungUp) -> Action:
        self._hung_up = True
        return self._write_failed("")

    def _hangup_after_final_vars(self, event: HungUp) -> Action:
        self._hung_up = True
        return self._final_vars_set(event)

    def _final_vars_set(self, event: Done | Failed | HungUp) -> Action:
        close = self.flow.close.get(self._status)
        if self._hung_up or close is None:
            return self._finish()
        self._phase = _CLOSING
        self._current = _Item(close, _CLOSE)
        self._current_started = event.at_ms
        return self._play_action(self._current)

    def _close_ended(self, event: PlayEnded | HungUp) -> Action:
        item = self._current
        if item is not None and event.endpos is not None:
            self._log_play(item, event.endpos, None, event.at_ms)
        return self._finish()

    def _end(self, event: Event) -> Action:
        return self._finish()

    def _unexpected(self, event: Event) -> Action:
        """An event the table has no row for in this phase: an engine error, failed closed."""
        phase = self._phase
        detail = f"unexpected {type(event).__name__} while {phase}"
        if phase in _UNDECIDED:
            return self._error(detail)
        if phase == _PERSIST:
            return self._write_failed(detail)
        if phase == _ERROR_VARS:
            return self._finish()
        # final_vars, closing: the record is written; the channel must not keep its outcome
        self._errors.append(detail)
        for pid, (_o, _r, t) in list(self._outcomes.items()):
            self._outcomes[pid] = (Outcome.ERROR, Reason.ERROR, t)
        self._status = "error"
        self._current = None
        self._phase = _ERROR_VARS
        *values, status = self._final_variables()
        return SetVariables((status, *values))  # the status first: it may say granted already

    # ------------------------------------------------------------------------ helpers
    def _question_item(self) -> _Item:
        return _Item(self.flow.questions[self._question].prompt, _QUESTION)

    def _unheard_notice(self) -> list[_Item]:
        return [
            _Item(p, _NOTICE)
            for p in self.flow.notice
            if self._heard.get(p.id, 0) < p.samples[self.language]
        ]

    def _recall_due(self, item: _Item) -> bool:
        """Ask for the earlier decision once: when the first notice segment has played out and
        the caller has pressed no key yet (a key means they took part in the full flow)."""
        return (
            self.flow.returning is not None
            and not self._recall
            and not self._keys
            and item.role is _NOTICE
            and item.prompt.id == self.flow.notice[0].id
        )

    def _refusal(self, earlier: EarlierDecision) -> str:
        """Why an earlier decision is not honoured here ("" if it is): R18 asks again under a
        new notice; only the outcomes the flow remembers; a recording purpose's decision only
        where the flow states it (R19)."""
        returning = self.flow.returning
        if returning is None:
            return "not_configured"
        if earlier.outcome not in returning.remember:
            return "not_remembered"
        if not earlier.record_id:
            return "none"
        if earlier.notice_sha256 != self.flow.notice_sha256.get(self.language):
            return "notice_changed"
        if not returning.allow_recording and any(
            self.flow.purpose(q.purpose).kind == "recording" for q in self.flow.questions
        ):
            return "recording"
        return ""

    def _earlier_outcome(self) -> Outcome:
        earlier = self._earlier
        assert earlier is not None
        return Outcome.GRANTED if earlier.outcome == "granted" else Outcome.DECLINED

    def _reminder_item(self) -> _Item:
        returning, earlier = self.flow.returning, self._earlier
        assert returning is not None and earlier is not None
        return _Item(returning.reminder[earlier.outcome], _REMINDER)

    def _replays_left(self) -> bool:
        return self._replays < self.flow.choice.caps.replays

    def _escape(self, role: Role) -> str:
        keys = self.flow.choice.keys
        if role is _CLOSE:
            return ""
        if role in INPUT_ROLES:
            return DTMF_KEYS
        esc = keys.decline
        if role is _REMINDER:  # keep or change the earlier decision, or hear more
            esc += keys.accept
            if self._replays_left():
                esc += "".join(k for k in (keys.repeat, keys.full_notice) if k)
            return esc
        accept_counts = self.informed or self.flow.choice.accept_during_notice
        if accept_counts or self._early_accepts < self.flow.choice.caps.early_accepts:
            esc += keys.accept
        if self._replays_left():
            esc += "".join(k for k in (keys.repeat, keys.full_notice) if k)
        return esc

    def _play_action(self, item: _Item) -> Play:
        p = item.prompt
        return Play(
            prompt_id=p.id,
            role=item.role,
            audio=p.audio[self.language],
            escape=self._escape(item.role),
            offset=item.offset,
            samples=p.samples[self.language],
            audio_file=p.audio_file.get(self.language),
            audio_dir=p.audio_dir.get(self.language),
            format_files=p.format_files.get(self.language, ()),
        )

    def _next(self, at_ms: int | None = None) -> Action:
        if self._queue:
            self._current = self._queue.pop(0)
            self._phase = _PLAYING
            return self._play_action(self._current)
        self._current = None
        self._phase = _WAITING
        return WaitForDigit(self.flow.choice.timeout_ms)

    def _log_play(
        self, item: _Item, endpos: int, digit: str | None, at_ms: int, *, failed: bool = False
    ) -> None:
        p = item.prompt
        samples = p.samples[self.language]
        endpos = max(item.offset, min(endpos, samples))
        completed = not failed and digit is None and endpos >= samples
        if completed:
            endpos = samples
        heard = self._heard.get(p.id, 0)
        if not failed and heard >= item.offset and endpos > heard:
            self._heard[p.id] = endpos
            self._informed = None
        self._plays.append(
            PlayLog(
                prompt_id=p.id,
                role=item.role,  # a StrEnum: the text "notice", ... in the record
                audio_sha256=p.audio_sha256[self.language],
                offset=item.offset,
                endpos=endpos,
                samples=samples,
                completed=completed,
                stopped_by=digit,
                started_ms=self._current_started,
                ended_ms=at_ms,
                audio_formats=self._audio_formats(p),
            )
        )
        self._current_started = at_ms

    def _audio_formats(self, p: Prompt) -> dict[str, str] | None:
        """Every format's hash of a prompt, when it has more than the WAV: the one Asterisk
        played is among them (R13)."""
        others = p.format_sha256.get(self.language)
        return {"wav": p.audio_sha256[self.language], **others} if others else None

    def _current_purpose(self) -> str:
        return self.flow.questions[self._question].purpose

    def _key(self, digit: str, at_ms: int, item: _Item | None, endpos: int | None) -> Action:
        keys = self.flow.choice.keys
        self._current_started = at_ms
        prompt_id = item.prompt.id if item else None
        if self._reminding and digit in (keys.accept, keys.decline):
            # on the reminder path (the reminder, or layer 2 asked for from it) the choice keys
            # keep or change the earlier decision, as the reminder said; only the question
            # of the full flow, after a change, can grant anew (R5)
            return self._reminder_key(digit, at_ms, prompt_id, endpos)
        if digit == keys.decline:
            self._log_key(digit, at_ms, prompt_id, endpos, "decline")
            return self._decide(Outcome.DECLINED, Reason.KEY, at_ms)
        if digit == keys.accept:
            # "informed" is judged at the moment of the key: the prompt it interrupted counts
            # as heard only up to endpos, which _log_play has already recorded.
            if self.informed or self.flow.choice.accept_during_notice:
                self._log_key(digit, at_ms, prompt_id, endpos, "accept")
                return self._decide(Outcome.GRANTED, Reason.KEY, at_ms)
            self._log_key(digit, at_ms, prompt_id, endpos, "early_accept")
            self._early_accepts += 1
            if item is not None and endpos is not None and item.role is not _CLOSE:
                self._queue.insert(
                    0,
                    _Item(item.prompt, item.role, min(endpos, item.prompt.samples[self.language])),
                )
            else:
                self._queue = [*self._unheard_notice(), self._question_item()]
            return self._next()
        if digit in (keys.repeat, keys.full_notice) and digit and self._replays_left():
            meaning = "repeat" if digit == keys.repeat else "full_notice"
            self._log_key(digit, at_ms, prompt_id, endpos, meaning)
            self._replays += 1
            if self._reminding:  # layer 2 or nothing, then the reminder again
                first = (
                    [_Item(p, _FULL) for p in self.flow.full_notice] if meaning != "repeat" else []
                )
                self._queue = [*first, self._reminder_item()]
                return self._next()
            if meaning == "repeat":
                first = [_Item(p, _NOTICE) for p in self.flow.notice]
            else:
                first = [_Item(p, _FULL) for p in self.flow.full_notice]
                first += self._unheard_notice()
            self._queue = [*first, self._question_item()]
            return self._next()
        self._log_key(digit, at_ms, prompt_id, endpos, "invalid")
        if self._reminding:  # no prompt of the reminder path takes other keys: a driver bug
            return self._error(f"key {digit} is no key of the reminder path")
        return self._nomatch(at_ms)

    def _reminder_key(self, digit: str, at_ms: int, pid: str | None, endpos: int | None) -> Action:
        """A key on the reminder (R18): the change key changes the earlier decision — a grant is
        withdrawn at once (R17: one key), a decline leads into the full flow, whose question
        alone can grant (R5) —; the other choice key keeps it. (Repeat and full notice are
        handled by `_key` as anywhere on the reminder path.)"""
        keys = self.flow.choice.keys
        earlier = self._earlier_outcome()
        if digit == keys.decline and earlier is Outcome.GRANTED:
            self._log_key(digit, at_ms, pid, endpos, "withdraw")
            return self._decide_all(Outcome.DECLINED, Reason.KEY, at_ms)
        if (digit == keys.accept) == (earlier is Outcome.GRANTED):  # the other choice key
            self._log_key(digit, at_ms, pid, endpos, "keep")
            return self._decide_all(earlier, Reason.REUSED, at_ms)
        self._log_key(digit, at_ms, pid, endpos, "change")
        self._reminding = False
        self._queue = [*self._unheard_notice(), self._question_item()]
        return self._next()

    def _decide_all(self, outcome: Outcome, reason: Reason, at_ms: int) -> Action:
        """Decide every open question at once (the reminder speaks for all of them)."""
        for pid in self._undecided():
            self._outcomes[pid] = (outcome, reason, at_ms)
        self._question = len(self.flow.questions)
        return self._persist()

    def _log_key(
        self, digit: str, at_ms: int, prompt_id: str | None, pos: int | None, meaning: str
    ) -> None:
        self._keys.append(
            KeyLog(
                key=digit,
                at_ms=at_ms,
                prompt_id=prompt_id,
                pos_samples=pos,
                question=self._current_purpose(),
                meaning=meaning,
            )
        )

    def _noinput(self, at_ms: int) -> Action:
        return self._reprompt(Role.NOINPUT, at_ms)

    def _nomatch(self, at_ms: int) -> Action:
        return self._reprompt(Role.NOMATCH, at_ms)

    def _reprompt(self, role: Role, at_ms: int) -> Action:
        """After silence (NOINPUT) or a wrong key (NOMATCH): that kind's next re-prompt, then the
        question again; no decision once that kind's cap or the total cap is passed."""
        kind = "noinput" if role is Role.NOINPUT else "nomatch"
        counts = self._counters._asdict()
        counts[kind] += 1
        counts["total"] += 1
        self._counters = _Counters(**counts)
        caps = self.flow.choice.caps._asdict()
        if counts[kind] > caps[kind] or counts["total"] > caps["total"]:
            reason = Reason.TIMEOUT if role is Role.NOINPUT else Reason.INVALID
            return self._decide(Outcome.NONE, reason, at_ms)
        choice = self.flow.choice
        prompts = choice.noinput if role is Role.NOINPUT else choice.nomatch
        reprompt = prompts[min(counts[kind], len(prompts)) - 1]
        self._queue = [_Item(reprompt, role), self._question_item()]
        return self._next()

    def _decide(self, outcome: Outcome, reason: Reason, at_ms: int) -> Action:
        self._outcomes[self._current_purpose()] = (outcome, reason, at_ms)
        self._question += 1
        self._counters = _Counters()
        self._current = None
        if self._question < len(self.flow.questions):
            self._queue = [*self._unheard_notice(), self._question_item()]
            return self._next()
        return self._persist()

    def _undecided(self) -> list[str]:
        return [q.purpose for q in self.flow.questions if q.purpose not in self._outcomes]

    def _error(self, detail: str) -> Action:
        self._errors.append(detail)
        for pid in self._undecided():
            self._outcomes[pid] = (Outcome.ERROR, Reason.ERROR, None)
        return self._persist()

    def _persist(self) -> Action:
        self._current = None
        self._queue = []
        self._phase = _PERSIST
        outcomes = tuple(
            PurposeOutcome(q.purpose, *self._outcomes[q.purpose]) for q in self.flow.questions
        )
        status = aggregate_status(o.outcome for o in outcomes)
        decision = Decision(
            kind=self.flow.kind,
            flow=self.flow.id,
            version=self.flow.version,
            language=self.language,
            status=status,
            reason=self._overall_reason(outcomes),
            outcomes=outcomes,
            plays=tuple(self._plays),
            keys=tuple(self._keys),
            informed=self.informed,
            hung_up=self._hung_up,
            errors=tuple(self._errors),
            earlier=self._earlier,
            recall=self._recall,
        )
        return Persist(decision)

    def _write_failed(self, detail: str) -> Action:
        self._errors.append(f"evidence write failed: {detail}".rstrip(": "))
        for pid, (_o, _r, t) in list(self._outcomes.items()):
            self._outcomes[pid] = (Outcome.ERROR, Reason.ERROR, t)
        return self._outcome_variables()

    def _outcome_variables(self) -> Action:
        self._status = aggregate_status(o for o, _r, _t in self._outcomes.values())
        self._phase = _FINAL_VARS
        return SetVariables(self._final_variables())

    @staticmethod
    def _overall_reason(outcomes: tuple[PurposeOutcome, ...]) -> str:
        for o in outcomes:
            if o.outcome is Outcome.ERROR:
                return Reason.ERROR.value
        for o in outcomes:
            if o.reason is not Reason.KEY:
                return o.reason.value
        return Reason.KEY.value

    def _final_variables(self) -> tuple[tuple[str, str], ...]:
        outcomes = tuple(
            PurposeOutcome(q.purpose, *self._outcomes[q.purpose]) for q in self.flow.questions
        )
        if self.flow.is_withdrawal:
            values = [
                ("CONSENT_WITHDRAWAL_" + o.purpose.upper(), withdrawal_word(o.outcome.value))
                for o in outcomes
            ]
        else:
            values = [(self.flow.purpose(o.purpose).variable, o.outcome.value) for o in outcomes]
        values += [
            ("CONSENT_REASON", self._overall_reason(outcomes)),
            ("CONSENT_RECORD_ID", self._record_id),
            ("CONSENT_FLOW", self.flow.label),
            ("CONSENT_NOTICE_SHA256", self.flow.notice_sha256.get(self.language, "")),
        ]
        # STATUS last: a dialplan that sees it knows every other variable is final.
        if self.flow.is_withdrawal:
            values.append(("CONSENT_WITHDRAWAL", withdrawal_word(self._status)))
        else:
            values.append(("CONSENT_STATUS", self._status))
        return tuple(values)

    def _finish(self) -> Action:
        self._phase = _DONE
        self._current = None
        return Finish(self._status)


#: `TRANSITIONS` with each handler's name resolved to its function once, at import: what `send()`
#: looks up. A name `Call` lacks fails the import, never a call.
_HANDLERS: dict[tuple[Phase, type[Event]], Callable[[Call, Any], Action]] = {
    pair: vars(Call)[name] for pair, name in TRANSITIONS.items()
}
