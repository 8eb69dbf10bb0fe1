"""The whole-flow proof: explore the engine's state graph for one flow and language, exhaustively.

(Over 400 lines on purpose: the exploration, its merging of equivalent states, the properties it
checks and the counter-examples it reports are read together.)

Theory of operation
-------------------
The engine (`consent_ivr.engine.Call`) is a pure state machine, so every way a call can go is a
path in a finite graph: from each state, every event the world could answer the pending action
with is tried — each key the action accepts pressed at the start of a prompt (the accept key
also at its last sample, where "heard" matters), the prompt played out, silence, one
representative wrong key, a hang-up, a playback failure, an AGI failure, a store failure. States
are merged by `Call.snapshot()` (the state that can still change the outcome), so the search is
over states, not over the exponentially many paths. The search is breadth-first, so the first
path found to any state is a shortest one: a violation is reported with the shortest
counter-example, rendered as a ``--dtmf`` script that ``consent-ivr simulate`` replays.

What is proved, for every path (each check names its R-number):

* R1 — a purpose becomes ``granted`` only by its accept key, and only once every first-layer
  segment was heard to its last sample (R5; a flow with ``accept_during_notice`` is reported as a
  warning instead, because it relaxes R5 explicitly);
* R12 — variables say ``granted`` only after the record was written;
* R2 — wherever the accept key grants, the decline key in the same place declines: declining
  never costs more key presses or more waiting than accepting;
* R6 — the graph has no cycle (every call ends) and every path ends in one of the five states;
  a decided question is never asked again; the bound (longest path) is reported;
* R8 — the full-notice and repeat keys play their prompts and return to the same question;
* R18 — in a flow with `returning`, the look-up is answered every way (nothing, a failure, an
  earlier grant or decline of this notice or of another): a grant that no key 1 after the
  notice made stands only on an honoured earlier grant of this very notice (R1), and a
  remembered decline is never asked again (R6).

Memory is bounded by the number of states (a parent link and the successor ids per state; the
`Call` objects of the BFS frontier only). An `Observer` sees every transition as it is explored:
`consent_ivr.lint.flowgraph` draws the flow's picture from this same exploration.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from consent_ivr.engine import (
    Action,
    Answer,
    Call,
    DigitPressed,
    Done,
    EarlierDecision,
    Event,
    Failed,
    Finish,
    HungUp,
    NoEarlierDecision,
    Outcome,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    Reason,
    Recall,
    Recorded,
    RecordFailed,
    Role,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
)
from consent_ivr.flow.model import Flow

#: The outcomes a call can end in (CONSENT_STATUS).
FIVE_STATES = frozenset({"granted", "declined", "partial", "none", "error"})

#: The simulated Asterisk's default answer time (harness.asterisk.SimulatedAsterisk answer_ms),
#: which the first prompt starts after; `dtmf_script` needs it to time keys.
ANSWER_MS = 500
TICKS_PER_SECOND = 8000


@dataclass(frozen=True)
class Violation:
    """One property that does not hold, with the shortest path that shows it."""

    rule: str  # "R1", "R2", ...
    severity: str  # "error" or "warning"
    message: str
    events: tuple[Event, ...]
    actions: tuple[Action, ...]  # actions[i] is what events[i] answered
    outcome: str  # CONSENT_STATUS at the end of the counter-example, played to its end

    @property
    def dtmf(self) -> str | None:
        """The counter-example as a `--dtmf` script, or None if it needs a fault no script can
        make (a playback, AGI or store failure)."""
        return dtmf_script(self.actions, self.events)


@dataclass
class ProofResult:
    flow: str
    language: str
    states: int = 0
    transitions: int = 0
    paths: int = 0  # distinct caller behaviours from the start to an end
    longest: int = 0  # most engine steps on any path (the termination bound)
    most_keys: int = 0  # most key presses on any path
    terminal_statuses: set[str] = field(default_factory=set)
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(v.severity == "error" for v in self.violations)


#: Sees one explored transition: (state id, its call, its pending action, the event, the
#: successor's id, the successor call, its next action). Called in breadth-first order, so a
#: state's id is seen as a successor before it is seen as a source; the root's id is 0.
Observer = Callable[[int, Call, Action, Event, int, Call, Action], None]


#: The notice hash of an earlier decision made under another notice version (R18: not honoured).
OTHER_NOTICE = "f" * 64


def events_for(action: Action, flow: Flow, language: str | None = None) -> list[Event]:
    """Every event the world can answer `action` with, up to equivalence. A `Recall` is answered
    with nothing to honour, a failed look-up, a hang-up, and an earlier grant and decline under
    this notice (`language`'s) and under another one (which must not be honoured)."""
    keys = flow.choice.keys
    meaningful = [k for k in (keys.accept, keys.decline, keys.repeat, keys.full_notice) if k]
    invalid = next(k for k in "5738*#46" if k not in meaningful)
    if isinstance(action, (SetVariables, Answer)):
        return [Done(), HungUp(), Failed(detail="AGI failure")]
    if isinstance(action, Play):
        out: list[Event] = [PlayEnded(endpos=action.samples), HungUp(endpos=action.offset)]
        out.append(PlayFailed(detail="playback failure"))
        candidates = [k for k in action.escape if k in meaningful]
        if invalid in action.escape:
            candidates.append(invalid)
        out += [PlayEnded(endpos=action.offset, digit=k) for k in candidates]
        # Where in a prompt a key lands only matters for what counts as heard, which only the
        # accept key depends on: press it also at the last sample (all but one sample heard).
        if keys.accept in action.escape and action.samples - 1 > action.offset:
            out.append(PlayEnded(endpos=action.samples - 1, digit=keys.accept))
        return out
    if isinstance(action, WaitForDigit):
        out = [WaitTimedOut(), HungUp(), Failed(detail="AGI failure")]
        return out + [DigitPressed(digit=k) for k in [*meaningful, invalid]]
    if isinstance(action, Persist):
        return [Recorded(record_id="rec-1"), RecordFailed(detail="store failure")]
    if isinstance(action, Recall):
        notice = flow.notice_sha256.get(language or flow.default_language, "")
        out = [NoEarlierDecision(why="none"), Failed(detail="store failure"), HungUp()]
        for outcome in ("granted", "declined"):
            for sha in (notice, OTHER_NOTICE):
                out.append(EarlierDecision(outcome=outcome, record_id="rec-0", notice_sha256=sha))
        return out
    raise TypeError(f"no events for {action!r}")


def _is_key(event: Event) -> bool:
    return isinstance(event, DigitPressed) or (
        isinstance(event, PlayEnded) and event.digit is not None
    )


def _twin(event: Event, digit: str) -> Event:
    """The same key event with another key."""
    if isinstance(event, DigitPressed):
        return DigitPressed(at_ms=event.at_ms, digit=digit)
    assert isinstance(event, PlayEnded)
    return PlayEnded(at_ms=event.at_ms, endpos=event.endpos, digit=digit)


def _play_out(call: Call, action: Action) -> str:
    """A counter-example's call continued on the quiet path to its end: its CONSENT_STATUS."""
    twin = call.clone()
    while not isinstance(action, Finish):
        if isinstance(action, Play):
            action = twin.send(PlayEnded(endpos=action.samples))
        elif isinstance(action, WaitForDigit):
            action = twin.send(WaitTimedOut())
        elif isinstance(action, Persist):
            action = twin.send(Recorded(record_id="rec-1"))
        elif isinstance(action, Recall):
            action = twin.send(NoEarlierDecision(why="none"))
        else:
            action = twin.send(Done())
    return action.status


class _TooLarge(Exception):
    """The state graph outgrew the bound: reported as an R6 violation, never a traceback."""


class _Explorer:
    """Breadth-first search over a call's states, checking every transition."""

    def __init__(
        self, flow: Flow, language: str, max_states: int, observe: Observer | None = None
    ) -> None:
        self.flow = flow
        self.observe = observe
        self.keys = flow.choice.keys
        self.max_states = max_states
        self.result = ProofResult(flow.id, language)
        self.question_of = {q.prompt.id: q.purpose for q in flow.questions}
        self.ids: dict[tuple[object, ...], int] = {}
        #: state id -> (parent id, event, action) of its first (shortest) path; None for the root
        self.parent: list[tuple[int, Event, Action] | None] = []
        #: state id -> [(successor id, the edge is a key press)]
        self.succ: list[list[tuple[int, bool]]] = []
        self.reported: set[tuple[str, str]] = set()

    def _add(self, snap: tuple[object, ...], parent: tuple[int, Event, Action] | None) -> int:
        sid = len(self.parent)
        self.ids[snap] = sid
        self.parent.append(parent)
        self.succ.append([])
        if sid >= self.max_states:
            raise _TooLarge(sid)
        return sid

    def path(self, sid: int) -> tuple[tuple[Event, ...], tuple[Action, ...]]:
        events: list[Event] = []
        actions: list[Action] = []
        link = self.parent[sid]
        while link is not None:
            prev, event, action = link
            events.append(event)
            actions.append(action)
            link = self.parent[prev]
        return tuple(reversed(events)), tuple(reversed(actions))

    def report(
        self,
        rule: str,
        kind: str,
        message: str,
        edge: tuple[int, Event, Action],
        child: Call,
        nxt: Action,
        severity: str = "error",
    ) -> None:
        """Record a violation once per kind: the first found is a shortest counter-example."""
        if (rule, kind) in self.reported:
            return
        self.reported.add((rule, kind))
        sid, event, action = edge
        events, actions = self.path(sid)
        self.result.violations.append(
            Violation(
                rule,
                severity,
                message,
                (*events, event),
                (*actions, action),
                _play_out(child, nxt),
            )
        )

    def run(self) -> ProofResult:
        try:
            return self._run()
        except _TooLarge:
            self.result.states = len(self.parent)
            message = (
                f"the proof stopped after {self.max_states:,} call states without reaching every"
                " end: the caps allow too many ways through the flow (or a call never ends)"
            )
            self.result.violations.append(Violation("R6", "error", message, (), (), "none"))
            return self.result

    def _run(self) -> ProofResult:
        start = Call(self.flow, self.result.language)
        first = start.start()
        frontier: deque[tuple[int, Call, Action]] = deque(
            [(self._add(start.snapshot(), None), start, first)]
        )
        while frontier:
            sid, call, action = frontier.popleft()
            if isinstance(action, Finish):
                self._terminal(sid, action.status)
                continue
            for event in events_for(action, self.flow, self.result.language):
                child = call.clone()
                nxt = child.send(event)
                self.result.transitions += 1
                self._check(call, child, nxt, (sid, event, action))
                snap = child.snapshot()
                cid = self.ids.get(snap)
                if cid is None:
                    cid = self._add(snap, (sid, event, action))
                    frontier.append((cid, child, nxt))
                self.succ[sid].append((cid, _is_key(event)))
                if self.observe is not None:
                    self.observe(sid, call, action, event, cid, child, nxt)
        self.result.states = len(self.parent)
        self._bounds()
        return self.result

    def _terminal(self, sid: int, status: str) -> None:
        self.result.terminal_statuses.add(status)
        if status not in FIVE_STATES:
            events, actions = self.path(sid)
            message = f"a call ends in the unknown state {status!r}"
            self.result.violations.append(
                Violation("R6", "error", message, events, actions, status)
            )

    def _check(self, call: Call, child: Call, nxt: Action, edge: tuple[int, Event, Action]) -> None:
        """Every property of one transition `call` --event--> `child` (next action `nxt`)."""
        _sid, event, _action = edge
        keys = self.keys
        digit = getattr(event, "digit", None)
        for q in self.flow.questions:
            purpose = q.purpose
            if child.outcome(purpose) is not Outcome.GRANTED:
                continue
            if call.outcome(purpose) is Outcome.GRANTED:
                continue
            if child.reason(purpose) is Reason.REUSED:
                self._check_reused(purpose, child, nxt, edge)
                continue
            if digit != keys.accept:
                what = type(event).__name__
                message = f"'{purpose}' becomes granted without its accept key ({what})"
                self.report("R1", "grant-without-accept", message, edge, child, nxt)
                continue
            if not self._heard_all(call):
                relaxed = self.flow.choice.accept_during_notice
                message = f"'{purpose}' is granted by a key pressed before the whole first layer"
                message += " was heard (accept_during_notice: true)" if relaxed else " was heard"
                severity = "warning" if relaxed else "error"
                self.report("R5", "grant-uninformed", message, edge, child, nxt, severity)
            twin = call.clone()  # R2: the decline key in the same place must decline
            twin.send(_twin(event, keys.decline))
            if twin.outcome(purpose) is not Outcome.DECLINED:
                message = (
                    f"where key {keys.accept} grants '{purpose}', key {keys.decline} does not"
                    " decline it"
                )
                self.report("R2", "decline-costs-more", message, edge, child, nxt)
        if (
            isinstance(nxt, SetVariables)
            and not isinstance(event, Recorded)
            and any(value == "granted" for _name, value in nxt.values)
        ):
            message = "a channel variable says granted before the record was written"
            self.report("R12", "granted-before-record", message, edge, child, nxt)
        if isinstance(nxt, Play) and nxt.role is Role.QUESTION:
            asked = self.question_of.get(nxt.prompt_id)
            if asked is not None and child.decided(asked):
                message = f"the question about '{asked}' is asked again after it was decided"
                self.report("R6", "asked-again", message, edge, child, nxt)
        if digit is not None and digit in (keys.repeat, keys.full_notice):
            pressed = child.last_key
            if pressed is not None and pressed.meaning in ("repeat", "full_notice"):
                self._check_replay(call, child, nxt, pressed.meaning, edge)

    def _check_reused(
        self, purpose: str, child: Call, nxt: Action, edge: tuple[int, Event, Action]
    ) -> None:
        """R1 with R18: a grant without a key 1 after the notice stands only on a durable earlier
        grant of this very notice, honoured by the reminder (what `Recall` was answered with)."""
        earlier = child.honoured
        notice = self.flow.notice_sha256.get(self.result.language)
        if (
            earlier is None
            or earlier.outcome != "granted"
            or earlier.notice_sha256 != notice
            or not earlier.record_id
        ):
            message = (
                f"'{purpose}' becomes granted as reused without an earlier grant of this notice"
            )
            self.report("R1", "reused-without-grant", message, edge, child, nxt)

    def _heard_all(self, call: Call) -> bool:
        """Every first-layer segment heard to its last sample, judged from the samples the engine
        recorded as heard (not from its own `informed` verdict, which is what is checked)."""
        lang = self.result.language
        return all(call.heard(p.id) >= p.samples[lang] for p in self.flow.notice)

    def _check_replay(
        self, call: Call, child: Call, nxt: Action, meaning: str, edge: tuple[int, Event, Action]
    ) -> None:
        """R8: a replay key plays its prompts first, then the same question again (on the
        reminder path: the full notice, or nothing, then the reminder again)."""
        question = self.flow.questions[call.question_index]
        if call.reminding:
            self._check_reminder_replay(call, child, nxt, meaning, edge)
            return
        queue = child.pending_prompts
        layer = self.flow.full_notice if meaning == "full_notice" else self.flow.notice
        played_first = nxt.prompt_id if isinstance(nxt, Play) else None
        if (
            child.question_index == call.question_index
            and queue
            and queue[-1] == question.prompt.id
            and layer
            and played_first == layer[0].id
        ):
            return
        what = "the full notice" if meaning == "full_notice" else "the first layer"
        message = (
            f"the {meaning.replace('_', '-')} key does not play {what} and return to the"
            f" question about '{question.purpose}'"
        )
        self.report("R8", f"replay-{meaning}", message, edge, child, nxt)

    def _check_reminder_replay(
        self, call: Call, child: Call, nxt: Action, meaning: str, edge: tuple[int, Event, Action]
    ) -> None:
        earlier = call.honoured
        assert earlier is not None and self.flow.returning is not None
        reminder = self.flow.returning.reminder[earlier.outcome].id
        played = [nxt.prompt_id] if isinstance(nxt, Play) else []
        played += list(child.pending_prompts)
        expected = [p.id for p in self.flow.full_notice] if meaning == "full_notice" else []
        if child.reminding and played == [*expected, reminder]:
            return
        what = "the full notice" if meaning == "full_notice" else "the reminder"
        message = f"on the reminder, the {meaning.replace('_', '-')} key does not play {what}"
        message += " and return to the reminder"
        self.report("R8", f"reminder-replay-{meaning}", message, edge, child, nxt)

    def _bounds(self) -> None:
        """Cycle check (Kahn's algorithm); on the DAG, the longest path, the most key presses and
        the number of distinct paths."""
        n = len(self.parent)
        indegree = [0] * n
        for succ in self.succ:
            for c, _key in succ:
                indegree[c] += 1
        order = [s for s in range(n) if indegree[s] == 0]
        i = 0
        while i < len(order):
            for c, _key in self.succ[order[i]]:
                indegree[c] -= 1
                if indegree[c] == 0:
                    order.append(c)
            i += 1
        if len(order) < n:
            stuck = next(s for s in range(n) if indegree[s] > 0)
            events, actions = self.path(stuck)
            message = "a caller can keep the call going forever (the call's states form a cycle)"
            self.result.violations.append(
                Violation("R6", "error", message, events, actions, "none")
            )
            return
        longest = [0] * n
        keys = [0] * n
        paths = [0] * n
        for s in reversed(order):
            succ = self.succ[s]
            if not succ:
                paths[s] = 1
                continue
            paths[s] = sum(paths[c] for c, _k in succ)
            longest[s] = 1 + max(longest[c] for c, _k in succ)
            keys[s] = max(keys[c] + int(k) for c, k in succ)
        self.result.longest, self.result.most_keys, self.result.paths = (
            longest[0],
            keys[0],
            paths[0],
        )


def prove(
    flow: Flow, language: str, *, max_states: int = 1_000_000, observe: Observer | None = None
) -> ProofResult:
    """Explore every behaviour of a call of `flow` in `language` and check the properties;
    `observe` sees every transition."""
    began = time.perf_counter()
    result = _Explorer(flow, language, max_states, observe).run()
    result.seconds = time.perf_counter() - began
    return result


# ------------------------------------------------------------------ counter-example scripts
def dtmf_script(actions: tuple[Action, ...], events: tuple[Event, ...]) -> str | None:
    """A `--dtmf` script that makes the simulated Asterisk produce `events` in answer to
    `actions`, every key and hang-up timed in virtual seconds; None if an event is a fault no
    script can make (playback, AGI or store failure)."""
    tick = 0
    answered = False
    out: list[str] = []

    def at(t: int) -> str:
        text = f"{t / TICKS_PER_SECOND:.6f}".rstrip("0").rstrip(".")
        return text or "0"

    for action, event in zip(actions, events, strict=True):
        if isinstance(event, (PlayFailed, Failed, RecordFailed, EarlierDecision)):
            return None  # a fault, or an earlier decision in the store: no script makes it
        if isinstance(action, Answer) and not answered:
            answered = True
            if isinstance(event, HungUp):
                out.append(f"h@{at(tick)}")
                break
            tick += ANSWER_MS * TICKS_PER_SECOND // 1000
            continue
        if isinstance(event, HungUp):
            out.append(f"h@{at(tick)}")
            break
        if isinstance(action, Play) and isinstance(event, PlayEnded):
            moved = max(0, event.endpos - action.offset)
            if event.digit is None:
                tick += action.samples - action.offset
            else:
                tick += moved
                out.append(f"{event.digit}@{at(tick)}")
        elif isinstance(action, WaitForDigit):
            if isinstance(event, DigitPressed):
                out.append(f"{event.digit}@{at(tick)}")
            else:
                tick += action.timeout_ms * TICKS_PER_SECOND // 1000
    return ",".join(out)
