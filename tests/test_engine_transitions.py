"""The engine's transition table: it is the dispatch, and every pair outside it fails closed."""

from __future__ import annotations

import inspect
from collections import deque

import pytest

from consent_ivr.engine import (
    TRANSITIONS,
    Action,
    Call,
    DigitPressed,
    Done,
    EarlierDecision,
    Event,
    Failed,
    Finish,
    HungUp,
    NoEarlierDecision,
    Persist,
    Phase,
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
from consent_ivr.engine import call as call_module
from consent_ivr.lint.proof import events_for
from flowkit import make_flow

#: One event of every type; the keys are the accept key, so a pair that were silently accepted
#: as a key press could grant.
EVENTS: dict[type[Event], Event] = {
    Done: Done(at_ms=9000),
    PlayEnded: PlayEnded(at_ms=9000, endpos=10**6, digit="1"),
    PlayFailed: PlayFailed(at_ms=9000, detail="missing"),
    DigitPressed: DigitPressed(at_ms=9000, digit="1"),
    WaitTimedOut: WaitTimedOut(at_ms=9000),
    HungUp: HungUp(at_ms=9000, endpos=10),
    Failed: Failed(at_ms=9000, detail="AGI failure"),
    Recorded: Recorded(at_ms=9000, record_id="rec-9"),
    RecordFailed: RecordFailed(at_ms=9000, detail="disk full"),
    EarlierDecision: EarlierDecision(
        at_ms=9000, outcome="granted", record_id="rec-0", notice_sha256="a" * 64
    ),
    NoEarlierDecision: NoEarlierDecision(at_ms=9000, why="none"),
}
#: The phases in which an action is pending (init and done have none).
PENDING = [p for p in Phase if p not in (Phase.INIT, Phase.DONE)]
COMPLEMENT = [(p, t) for p in PENDING for t in EVENTS if (p, t) not in TRANSITIONS]


def quiet(action: Action) -> Event:
    """The world's answer when every prompt plays out, nobody presses and every write works."""
    if isinstance(action, Play):
        return PlayEnded(endpos=action.samples)
    if isinstance(action, WaitForDigit):
        return WaitTimedOut()
    if isinstance(action, Persist):
        return Recorded(record_id="rec-1")
    if isinstance(action, Recall):
        return NoEarlierDecision(why="none")
    return Done()


def call_in(phase: Phase) -> tuple[Call, list[Action]]:
    """A call in `phase`, reached on the way to `granted` where it can be; its actions so far.
    The flow has a `returning` block, so that the call passes through every phase (`recall`)."""
    call = Call(make_flow(returning=True), "de")
    actions = [call.start()]
    while call.phase != phase:
        action = actions[-1]
        if phase is Phase.ERROR_VARS and call.phase is Phase.CLOSING:
            event: Event = EVENTS[DigitPressed]  # no key answers the closing message
        elif isinstance(action, WaitForDigit):
            event = DigitPressed(digit="1")
        else:
            event = quiet(action)
        actions.append(call.send(event))
    return call, actions


def play_to_the_end(call: Call, action: Action) -> list[Action]:
    actions = [action]
    while not isinstance(actions[-1], Finish):
        actions.append(call.send(quiet(actions[-1])))
    return actions


def test_every_phase_with_a_pending_action_has_a_row_and_every_event_type_is_answered_somewhere():
    assert {p for p, _t in TRANSITIONS} == set(PENDING)
    assert {t for _p, t in TRANSITIONS} == set(EVENTS)


@pytest.mark.parametrize("phase", PENDING)
def test_a_call_can_be_brought_into_every_phase_on_the_way_to_granted(phase: Phase) -> None:
    call, _actions = call_in(phase)
    assert call.phase is phase
    if phase in (Phase.FINAL_VARS, Phase.CLOSING):
        assert call.status == "granted"


@pytest.mark.parametrize(
    ("phase", "event_type"), COMPLEMENT, ids=[f"{p}-{t.__name__}" for p, t in COMPLEMENT]
)
def test_an_event_outside_its_phases_row_ends_the_call_as_error_with_its_record(
    phase: Phase, event_type: type[Event]
) -> None:
    call, before = call_in(phase)
    after = play_to_the_end(call, call.send(EVENTS[event_type]))
    detail = f"unexpected {event_type.__name__} while {phase}"
    assert isinstance(after[-1], Finish) and after[-1].status == "error"
    assert call.status == "error" and call.outcome("ga_linkage").value == "error"
    # the evidence record: written after the error if the decision was still open, else the
    # one written (or handed over) before it, which stands
    persisted = [a for a in before + after if isinstance(a, Persist)]
    assert len(persisted) == 1
    if phase in (Phase.INITIAL_VARS, Phase.ANSWER, Phase.PLAYING, Phase.WAITING):
        assert isinstance(after[0], Persist)
        decision = after[0].decision
        assert decision.status == "error" and detail in decision.errors
    # then the variables, which say error, and nothing after the event says granted
    variables = [a for a in after if isinstance(a, SetVariables)]
    if phase is not Phase.ERROR_VARS:
        assert variables, after
        final = dict(variables[-1].values)
        assert final["CONSENT_STATUS"] == "error" and final["CONSENT_GA_LINKAGE"] == "error"
        assert final["CONSENT_REASON"] == "error"
    assert not any("granted" in dict(v.values).values() for v in variables)


@pytest.mark.parametrize("phase", [Phase.FINAL_VARS, Phase.CLOSING])
def test_after_the_record_an_event_out_of_place_sets_the_error_status_first_and_keeps_the_record(
    phase: Phase,
) -> None:
    call, _before = call_in(phase)
    action = call.send(EVENTS[DigitPressed])
    assert isinstance(action, SetVariables) and call.phase is Phase.ERROR_VARS
    assert action.values[0] == ("CONSENT_STATUS", "error")
    assert dict(action.values)["CONSENT_RECORD_ID"] == "rec-1" == call.record_id
    assert isinstance(call.send(Done()), Finish)  # no closing message after an engine error


def test_a_reply_out_of_place_to_the_record_counts_as_a_failed_write() -> None:
    call, _before = call_in(Phase.PERSIST)
    action = call.send(Done())
    assert isinstance(action, SetVariables)
    variables = dict(action.values)
    assert variables["CONSENT_STATUS"] == "error" and variables["CONSENT_RECORD_ID"] == ""


def test_a_withdrawal_call_ends_as_error_in_its_own_variables() -> None:
    flow = make_flow()._replace(kind="withdrawal")
    call = Call(flow, "de")
    call.start()
    action = call.send(DigitPressed(digit="1"))  # a key in reply to SET VARIABLE
    assert isinstance(action, Persist) and action.decision.status == "error"
    action = call.send(Recorded(record_id="rec-1"))
    assert isinstance(action, SetVariables)
    assert dict(action.values)["CONSENT_WITHDRAWAL"] == "error"
    assert "CONSENT_STATUS" not in dict(action.values)


@pytest.mark.parametrize("phase", [Phase.INIT, Phase.DONE])
def test_a_call_with_no_pending_action_refuses_every_event(phase: Phase) -> None:
    call = Call(make_flow(), "de")
    if phase is Phase.DONE:
        call, actions = call_in(Phase.CLOSING)
        play_to_the_end(call, actions[-1])
    for event in EVENTS.values():
        with pytest.raises(RuntimeError, match=f"no action is pending in phase {phase}"):
            call.send(event)


def test_every_handler_the_table_names_is_a_method_of_the_call() -> None:
    for name in TRANSITIONS.values():
        assert inspect.isfunction(vars(Call).get(name)), name
    resolved = {pair: vars(Call)[name] for pair, name in TRANSITIONS.items()}
    assert resolved == call_module._HANDLERS


def test_the_engine_dispatches_through_the_table_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = inspect.getsource(call_module)
    assert "getattr" not in source and not any(n.startswith("_on_") for n in vars(Call))
    # a row taken out of the table is an event out of place: the key no longer grants
    monkeypatch.delitem(call_module._HANDLERS, (Phase.WAITING, DigitPressed))
    call, _actions = call_in(Phase.WAITING)
    action = call.send(DigitPressed(digit="1"))
    assert isinstance(action, Persist) and action.decision.status == "error"
    assert "unexpected DigitPressed while waiting" in action.decision.errors


def test_every_answer_the_whole_flow_proof_explores_is_a_row_of_the_table() -> None:
    flow = make_flow(purposes=("ga_linkage", "ads_use"), returning=True)
    start = Call(flow, "de")
    frontier: deque[tuple[Call, Action]] = deque([(start, start.start())])
    seen: set[tuple[object, ...]] = set()
    pairs: set[tuple[Phase, type[Event]]] = set()
    while frontier:
        call, action = frontier.popleft()
        if isinstance(action, Finish):
            continue
        for event in events_for(action, flow, "de"):
            pairs.add((call.phase, type(event)))
            child = call.clone()
            nxt = child.send(event)
            if child.snapshot() not in seen:
                seen.add(child.snapshot())
                frontier.append((child, nxt))
    assert pairs <= set(TRANSITIONS), sorted(pairs - set(TRANSITIONS))
    assert Phase.ERROR_VARS not in {p for p, _t in pairs}  # no answer the world gives is an error
