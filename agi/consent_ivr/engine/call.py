"""The consent call as a pure state machine: events in, actions out; no I/O, no clock.

Theory of operation
-------------------
A `Call` is built from a validated `Flow` and a language. `start()` returns the first action;
afterwards the driver performs each action in the world and reports what happened with
`send(event)`, which returns the next action, until `Finish`. Every event carries the driver's
notion of call time (`at_ms`) so the evidence can say when a key was pressed; the engine never
reads a clock itself.

Rules of this file (everything that affects a consent outcome lives here):

* **Default deny (R1).** Every consent purpose starts as ``none``. Only the accept key, pressed
  while the caller is *informed* (every mandatory first-layer segment has been heard to its last
  sample) or in a flow that explicitly sets ``accept_during_notice``, yields ``granted``.
  Silence, wrong keys, hang-ups, playback failures, AGI errors and store failures never do.
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

Hearing coverage is tracked per prompt as the contiguous number of samples heard from the start,
so a segment interrupted at ``endpos`` and resumed from there counts as heard once it reaches its
end. The state that matters for the outcome is exposed by `snapshot()` so tests can enumerate the
whole state graph of a flow.

Longer than 400 lines on purpose: every rule that decides a consent outcome is in this one file,
to be read and reviewed together; the records it speaks are in `consent_ivr.engine.events`. On
the process-AGI start path (`tests/test_agi_start.py`): no ``typing`` at run time.
"""

from __future__ import annotations

from consent_ivr.engine.events import (
    INPUT_ROLES,
    Answer,
    Decision,
    DigitPressed,
    Failed,
    Finish,
    HungUp,
    KeyLog,
    Outcome,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    PlayLog,
    PurposeOutcome,
    Reason,
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
    from consent_ivr.engine.events import Action, Event
    from consent_ivr.flow.model import Flow, Prompt

# Module-level aliases for the hot path: an enum member looked up on its class runs a
# descriptor (Python 3.11), a module global does not.
_NOTICE, _FULL, _QUESTION, _CLOSE = Role.NOTICE, Role.FULL, Role.QUESTION, Role.CLOSE


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
        self._phase = "init"
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

    def __repr__(self) -> str:
        return f"Call({self.flow.label}, {self.language}, phase={self._phase})"

    # ------------------------------------------------------------------ public surface
    @property
    def finished(self) -> bool:
        return self._phase == "done"

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
        if self._phase in ("persist", "final_vars", "closing", "done"):
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
        )

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
        if self._phase != "init":
            raise RuntimeError("call already started")
        self._phase = "initial_vars"
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
        if self._phase in ("init", "done"):
            raise RuntimeError(f"no action is pending in phase {self._phase}")
        handler = getattr(self, "_on_" + self._phase)
        action: Action = handler(event)
        return action

    # ---------------------------------------------------------------- phase handlers
    def _on_initial_vars(self, event: Event) -> Action:
        if isinstance(event, HungUp):
            return self._hangup(event)
        if isinstance(event, Failed):
            return self._error(event.detail or "setting the initial variables failed")
        self._phase = "answer"
        return Answer()

    def _on_answer(self, event: Event) -> Action:
        if isinstance(event, HungUp):
            return self._hangup(event)
        if isinstance(event, Failed):
            return self._error(event.detail or "answer failed")
        self._queue = [*self._unheard_notice(), self._question_item()]
        return self._next()

    def _on_playing(self, event: Event) -> Action:
        item = self._current
        assert item is not None
        if isinstance(event, HungUp):
            if event.endpos is not None:
                self._log_play(item, event.endpos, None, event.at_ms)
            return self._hangup(event)
        if isinstance(event, (PlayFailed, Failed)):
            self._log_play(item, item.offset, None, event.at_ms, failed=True)
            return self._error(f"playback of {item.prompt.id} failed: {event.detail}".rstrip(": "))
        if not isinstance(event, PlayEnded):
            return self._error(f"unexpected {type(event).__name__} while playing")
        self._log_play(item, event.endpos, event.digit, event.at_ms)
        self._current = None
        if event.digit is None:
            return self._next()
        return self._key(event.digit, event.at_ms, item, event.endpos)

    def _on_waiting(self, event: Event) -> Action:
        if isinstance(event, HungUp):
            return self._hangup(event)
        if isinstance(event, Failed):
            return self._error(event.detail or "waiting for a digit failed")
        if isinstance(event, WaitTimedOut):
            return self._noinput(event.at_ms)
        if isinstance(event, DigitPressed):
            return self._key(event.digit, event.at_ms, None, None)
        return self._error(f"unexpected {type(event).__name__} while waiting")

    def _on_persist(self, event: Event) -> Action:
        if isinstance(event, Recorded):
            self._record_id = event.record_id
        else:
            detail = event.detail if isinstance(event, (RecordFailed, Failed)) else ""
            self._errors.append(f"evidence write failed: {detail}".rstrip(": "))
            for pid, (_o, _r, t) in list(self._outcomes.items()):
                self._outcomes[pid] = (Outcome.ERROR, Reason.ERROR, t)
            if isinstance(event, HungUp):
                self._hung_up = True
        self._status = aggregate_status(o for o, _r, _t in self._outcomes.values())
        self._phase = "final_vars"
        return SetVariables(self._final_variables())

    def _on_final_vars(self, event: Event) -> Action:
        if isinstance(event, HungUp):
            self._hung_up = True
        close = self.flow.close.get(self._status)
        if self._hung_up or close is None:
            return self._finish()
        self._phase = "closing"
        self._current = _Item(close, _CLOSE)
        self._current_started = event.at_ms
        return self._play_action(self._current)

    def _on_closing(self, event: Event) -> Action:
        item = self._current
        if item is not None and isinstance(event, (PlayEnded, HungUp)) and event.endpos is not None:
            self._log_play(item, event.endpos, None, event.at_ms)
        return self._finish()

    # ------------------------------------------------------------------------ helpers
    def _question_item(self) -> _Item:
        return _Item(self.flow.questions[self._question].prompt, _QUESTION)

    def _unheard_notice(self) -> list[_Item]:
        return [
            _Item(p, _NOTICE)
            for p in self.flow.notice
            if self._heard.get(p.id, 0) < p.samples[self.language]
        ]

    def _replays_left(self) -> bool:
        return self._replays < self.flow.choice.caps.replays

    def _escape(self, role: Role) -> str:
        keys = self.flow.choice.keys
        if role is _CLOSE:
            return ""
        if role in INPUT_ROLES:
            return DTMF_KEYS
        esc = keys.decline
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
        )

    def _next(self, at_ms: int | None = None) -> Action:
        if self._queue:
            self._current = self._queue.pop(0)
            self._phase = "playing"
            return self._play_action(self._current)
        self._current = None
        self._phase = "waiting"
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
            )
        )
        self._current_started = at_ms

    def _current_purpose(self) -> str:
        return self.flow.questions[self._question].purpose

    def _key(self, digit: str, at_ms: int, item: _Item | None, endpos: int | None) -> Action:
        keys = self.flow.choice.keys
        self._current_started = at_ms
        prompt_id = item.prompt.id if item else None
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
            if meaning == "repeat":
                first = [_Item(p, _NOTICE) for p in self.flow.notice]
            else:
                first = [_Item(p, _FULL) for p in self.flow.full_notice]
                first += self._unheard_notice()
            self._queue = [*first, self._question_item()]
            return self._next()
        self._log_key(digit, at_ms, prompt_id, endpos, "invalid")
        return self._nomatch(at_ms)

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
        c = self._counters = self._counters._replace(
            noinput=self._counters.noinput + 1, total=self._counters.total + 1
        )
        caps = self.flow.choice.caps
        if c.noinput > caps.noinput or c.total > caps.total:
            return self._decide(Outcome.NONE, Reason.TIMEOUT, at_ms)
        prompts = self.flow.choice.noinput
        reprompt = prompts[min(c.noinput, len(prompts)) - 1]
        self._queue = [_Item(reprompt, Role.NOINPUT), self._question_item()]
        return self._next()

    def _nomatch(self, at_ms: int) -> Action:
        c = self._counters = self._counters._replace(
            nomatch=self._counters.nomatch + 1, total=self._counters.total + 1
        )
        caps = self.flow.choice.caps
        if c.nomatch > caps.nomatch or c.total > caps.total:
            return self._decide(Outcome.NONE, Reason.INVALID, at_ms)
        prompts = self.flow.choice.nomatch
        reprompt = prompts[min(c.nomatch, len(prompts)) - 1]
        self._queue = [_Item(reprompt, Role.NOMATCH), self._question_item()]
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

    def _hangup(self, event: Event) -> Action:
        self._hung_up = True
        for pid in self._undecided():
            self._outcomes[pid] = (Outcome.NONE, Reason.HANGUP, None)
        return self._persist()

    def _error(self, detail: str) -> Action:
        self._errors.append(detail)
        for pid in self._undecided():
            self._outcomes[pid] = (Outcome.ERROR, Reason.ERROR, None)
        return self._persist()

    def _persist(self) -> Action:
        self._current = None
        self._queue = []
        self._phase = "persist"
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
        )
        return Persist(decision)

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
        self._phase = "done"
        self._current = None
        return Finish(self._status)
