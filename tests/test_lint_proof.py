"""The whole-flow proof catches every defect it claims to, with a shortest counter-example that
`consent-ivr simulate` replays to the same outcome.

Each mutation below breaks the engine the way the proof says it cannot be broken; a proof that
still "holds" on a broken engine would be a check that cannot fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consent_ivr import engine
from consent_ivr.cli.simulate import simulate_call
from consent_ivr.engine import Call, Outcome, Reason, SetVariables
from consent_ivr.flow.loader import load_flow
from consent_ivr.lint.proof import dtmf_script, prove
from flowkit import make_flow

ROOT = Path(__file__).resolve().parents[1]


def _rules(flow: Any = None, max_states: int = 1_000_000) -> dict[str, list[str]]:
    result = prove(flow or make_flow(), "de", max_states=max_states)
    out: dict[str, list[str]] = {}
    for v in result.violations:
        out.setdefault(v.rule, []).append(v.message)
    return out


def test_a_flow_too_large_to_explore_is_a_finding_not_a_traceback() -> None:
    result = prove(make_flow(), "de", max_states=50)
    assert [v.rule for v in result.violations] == ["R6"] and not result.ok
    assert "stopped after 50 call states" in result.violations[0].message


def test_the_correct_engine_has_no_violation_and_a_stated_bound() -> None:
    result = prove(make_flow(), "de")
    assert result.violations == [] and result.ok
    assert result.longest > 10 and result.most_keys >= 3 and result.paths > result.states


def test_a_grant_by_another_key_is_an_r1_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Call._key

    def repeat_grants(self: Call, digit: str, at_ms: int, item: Any, endpos: Any) -> Any:
        if digit == self.flow.choice.keys.repeat:
            return self._decide(Outcome.GRANTED, Reason.KEY, at_ms)
        return real(self, digit, at_ms, item, endpos)

    monkeypatch.setattr(Call, "_key", repeat_grants)
    found = _rules()
    assert any("without its accept key" in m for m in found["R1"])


def test_a_grant_before_the_notice_is_heard_is_an_r5_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Call, "informed", property(lambda self: True))
    found = _rules()
    assert any("before the whole first layer was heard" in m for m in found["R5"])


def test_a_decline_that_does_not_decline_where_accept_grants_is_an_r2_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Call._key

    def decline_ignored_while_waiting(
        self: Call, digit: str, at_ms: int, item: Any, endpos: Any
    ) -> Any:
        if digit == self.flow.choice.keys.decline and item is None:
            return self._nomatch(at_ms)  # "press 2 again to confirm": costs more than accept
        return real(self, digit, at_ms, item, endpos)

    monkeypatch.setattr(Call, "_key", decline_ignored_while_waiting)
    assert "R2" in _rules()


def test_a_question_asked_again_after_a_decline_is_an_r6_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Call._decide

    def ask_again(self: Call, outcome: Outcome, reason: Reason, at_ms: int) -> Any:
        if outcome is Outcome.DECLINED and not getattr(self, "asked_again", False):
            self.asked_again = True  # type: ignore[attr-defined]
            self._outcomes[self._current_purpose()] = (outcome, reason, at_ms)
            self._queue = [self._question_item()]
            return self._next()
        return real(self, outcome, reason, at_ms)

    monkeypatch.setattr(Call, "_decide", ask_again)
    # the broken engine's state graph explodes (its flag is outside the snapshot); the shortest
    # counter-example is found long before the bound
    assert any("asked again" in m for m in _rules(max_states=20_000)["R6"])


def test_a_call_that_can_go_on_forever_is_an_r6_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    def endless_noinput(self: Call, at_ms: int) -> Any:  # silence never counts
        self._queue = [engine._Item(self.flow.choice.noinput[0], engine.Role.NOINPUT)]
        self._queue.append(self._question_item())
        return self._next()

    monkeypatch.setattr(Call, "_noinput", endless_noinput)
    assert any("forever" in m for m in _rules()["R6"])


def test_granted_variables_before_the_record_is_an_r12_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Call._persist

    def tell_first(self: Call) -> Any:
        action = real(self)
        if action.decision.status == "granted" and self._phase == "persist":
            self._phase = "final_vars"
            return SetVariables(self._final_variables())
        return action

    monkeypatch.setattr(Call, "_persist", tell_first)
    assert "R12" in _rules()


def test_a_full_notice_key_that_skips_the_full_notice_is_an_r8_violation() -> None:
    flow = make_flow(full=())  # a full-notice key, but nothing to play
    assert any("full-notice key does not play the full notice" in m for m in _rules(flow)["R8"])


def test_an_explicit_accept_during_notice_is_reported_as_a_warning_not_an_error() -> None:
    result = prove(make_flow(accept_during_notice=True), "de")
    assert [v.rule for v in result.violations] == ["R5"]
    assert result.violations[0].severity == "warning" and result.ok


def test_counter_examples_are_shortest_and_scripted_in_virtual_seconds() -> None:
    result = prove(make_flow(accept_during_notice=True), "de")
    v = result.violations[0]
    # answer, then 1 at the first sample of the first segment: nothing shorter grants early
    assert v.dtmf == "1@0.5" and v.outcome == "granted"
    assert [type(e).__name__ for e in v.events][-1] == "PlayEnded"


def test_faults_no_script_can_make_give_no_script() -> None:
    flow = make_flow()
    call = Call(flow, "de")
    first = call.start()
    assert dtmf_script((first,), (engine.Failed(detail="x"),)) is None
    assert dtmf_script((first,), (engine.Done(),)) == ""


def test_a_counter_example_replays_to_the_same_outcome_in_the_simulator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(ROOT / "tests/broken-flows/sounds"))
    path = ROOT / "tests/broken-flows/accept-during-notice.yaml"
    flow = load_flow(path)
    for lang in flow.languages:
        v = prove(flow, lang).violations[0]
        assert v.rule == "R5" and v.dtmf is not None
        call = simulate_call(flow, v.dtmf, language=lang, flow_arg=str(path))
        assert call.variables["CONSENT_STATUS"] == v.outcome == "granted"
        assert call.evidence is not None and call.evidence["informed"] is False
        assert [k["meaning"] for k in call.evidence["keys"]] == ["accept"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f._replace(choice=f.choice._replace(caps=f.choice.caps._replace(replays=0))),
        lambda f: f._replace(choice=f.choice._replace(keys=f.choice.keys._replace(repeat=None))),
        lambda f: make_flow(purposes=("ga_linkage", "ads_user_data")),
    ],
    ids=["no-replays", "no-repeat-key", "two-purposes"],
)
def test_the_proof_holds_for_other_shapes_of_a_correct_flow(mutate: Callable[[Any], Any]) -> None:
    result = prove(mutate(make_flow()), "de")
    assert result.violations == []
