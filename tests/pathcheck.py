"""Exhaustive exploration of a flow's state graph: every caller behaviour up to the caps.

From each state, every event the world could answer the pending action with is tried (each key
that action accepts pressed at the start of a prompt, the accept key also at its last sample, the
prompt played out, silence, one representative wrong key, a hang-up, a playback failure, a
store failure).
States are merged by `Call.snapshot()`, so the search is over the finite state graph, not over
the (exponentially many) paths; a cycle in that graph would be a way to keep a caller forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consent_ivr.engine import (
    Action,
    Answer,
    Call,
    DigitPressed,
    Done,
    Event,
    Failed,
    Finish,
    HungUp,
    Persist,
    Play,
    PlayEnded,
    PlayFailed,
    Recorded,
    RecordFailed,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
)
from consent_ivr.flow.model import Flow

FIVE_STATES = {"granted", "declined", "partial", "none", "error"}


@dataclass
class Exploration:
    states: int = 0
    edges: int = 0
    terminal_statuses: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    granted_paths: int = 0


def events_for(action: Action, flow: Flow) -> list[Event]:
    keys = flow.choice.keys
    meaningful = [k for k in (keys.accept, keys.decline, keys.repeat, keys.full_notice) if k]
    invalid = next(k for k in "5738*#" if k not in meaningful)
    if isinstance(action, SetVariables):
        return [Done(), HungUp(), Failed(detail="x")]
    if isinstance(action, Answer):
        return [Done(), HungUp(), Failed(detail="x")]
    if isinstance(action, Play):
        out: list[Event] = [PlayEnded(endpos=action.samples), HungUp(endpos=action.offset)]
        out.append(PlayFailed(detail="missing"))
        candidates = [k for k in action.escape if k in meaningful] + (
            [invalid] if invalid in action.escape else []
        )
        for k in candidates:
            out.append(PlayEnded(endpos=action.offset, digit=k))
        # Where in a prompt a key lands only matters for what counts as heard, which only the
        # accept key depends on: press it also at the last sample (heard all but one sample).
        if keys.accept in action.escape and action.samples - 1 > action.offset:
            out.append(PlayEnded(endpos=action.samples - 1, digit=keys.accept))
        return out
    if isinstance(action, WaitForDigit):
        return [WaitTimedOut(), HungUp(), Failed(detail="x")] + [
            DigitPressed(digit=k) for k in [*meaningful, invalid]
        ]
    if isinstance(action, Persist):
        return [Recorded(record_id="rec-1"), RecordFailed(detail="disk full")]
    raise AssertionError(f"no events for {action!r}")


def _notice_heard(call: Call) -> bool:
    snap_heard = dict(call.snapshot()[7])  # type: ignore[arg-type]
    return all(snap_heard.get(p.id, 0) >= p.samples[call.language] for p in call.flow.notice)


def explore(flow: Flow, language: str, max_states: int = 2_000_000) -> Exploration:
    result = Exploration()
    accept = flow.choice.keys.accept
    start = Call(flow, language)
    first = start.start()
    # iterative DFS with colours for cycle detection
    WHITE, GREY, BLACK = 0, 1, 2
    colour: dict[tuple[object, ...], int] = {}
    stack: list[tuple[Call, Action, list[Event] | None]] = [(start, first, None)]
    key0 = (start.snapshot(), repr(first))
    colour[key0] = GREY
    keys_stack = [key0]
    while stack:
        call, action, pending = stack[-1]
        if pending is None:
            pending = [] if isinstance(action, Finish) else events_for(action, flow)
            stack[-1] = (call, action, pending)
            if isinstance(action, Finish):
                result.terminal_statuses.add(action.status)
                if action.status not in FIVE_STATES:
                    result.violations.append(f"terminal status {action.status!r}")
        if not pending:
            colour[keys_stack[-1]] = BLACK
            stack.pop()
            keys_stack.pop()
            continue
        event = pending.pop()
        child = call.clone()
        informed_before = _notice_heard(call)
        before = {q.purpose: call.outcome(q.purpose).value for q in flow.questions}
        nxt = child.send(event)
        result.edges += 1
        after = {q.purpose: child.outcome(q.purpose).value for q in flow.questions}
        for purpose, value in after.items():
            if value == "granted" and before[purpose] != "granted":
                digit = getattr(event, "digit", None)
                if digit != accept:
                    result.violations.append(f"{purpose} granted by {event!r}")
                elif not (informed_before or flow.choice.accept_during_notice):
                    result.violations.append(f"{purpose} granted before the notice was heard")
                else:
                    result.granted_paths += 1
        granted_vars = isinstance(nxt, SetVariables) and any(v == "granted" for _n, v in nxt.values)
        if granted_vars and not isinstance(event, Recorded):
            result.violations.append(f"variables say granted after {event!r}, not a record")
        k = (child.snapshot(), repr(nxt))
        c = colour.get(k, WHITE)
        if c == GREY:
            result.violations.append(f"cycle: state revisited via {event!r}")
            continue
        if c == BLACK:
            continue
        colour[k] = GREY
        result.states += 1
        if result.states > max_states:
            raise AssertionError("state space larger than expected")
        stack.append((child, nxt, None))
        keys_stack.append(k)
    return result
