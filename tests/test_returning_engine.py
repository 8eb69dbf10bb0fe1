"""Returning callers in the engine (R18): the look-up is asked once, after the first prompt; an
honoured decision plays the reminder instead of the first layer; one key changes it; anything
else is the full flow, and only an earlier grant of this very notice is ever reused."""

from __future__ import annotations

import pytest

from consent_ivr.engine import (
    Action,
    Call,
    DigitPressed,
    Done,
    EarlierDecision,
    Event,
    Failed,
    Finish,
    NoEarlierDecision,
    Persist,
    Play,
    PlayEnded,
    Recall,
    Recorded,
    SetVariables,
    WaitForDigit,
    WaitTimedOut,
)
from consent_ivr.flow.model import Purpose, Returning
from flowkit import make_flow

NOTICE = "a" * 64  # make_flow's German notice hash


def earlier(outcome: str, notice: str = NOTICE) -> EarlierDecision:
    return EarlierDecision(
        outcome=outcome,
        record_id="rec-0",
        notice_sha256=notice,
        decided_at="2026-12-01T10:00:00.000Z",
    )


class Driver:
    """Runs a call: every prompt plays out unless a key is given for it (by prompt id)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.played: list[tuple[str, str]] = []  # (prompt id, role)
        self.recalls = 0
        self.decision = None
        self.variables: dict[str, str] = {}
        #: prompt ids whose next play ends a quarter in, without a key
        self.short: set[str] = set()

    def run(
        self,
        recall: Event | None = None,
        keys: dict[str, list[str]] | None = None,
        waits: list[str] | None = None,
    ) -> str:
        keys = {k: list(v) for k, v in (keys or {}).items()}
        waits = list(waits or [])
        action: Action = self.call.start()
        while not isinstance(action, Finish):
            action = self.call.send(self._answer(action, recall, keys, waits))
        return action.status

    def _answer(
        self,
        action: Action,
        recall: Event | None,
        keys: dict[str, list[str]],
        waits: list[str],
    ) -> Event:
        if isinstance(action, Play):
            self.played.append((action.prompt_id, action.role.value))
            pending = keys.get(action.prompt_id)
            if pending:
                digit = pending.pop(0)
                assert digit in action.escape, (digit, action.prompt_id, action.escape)
                return PlayEnded(endpos=action.offset, digit=digit)
            if action.prompt_id in self.short:
                self.short.discard(action.prompt_id)
                return PlayEnded(endpos=action.samples // 4)
            return PlayEnded(endpos=action.samples)
        if isinstance(action, Recall):
            self.recalls += 1
            assert recall is not None, "the look-up was asked for, unexpectedly"
            return recall
        if isinstance(action, WaitForDigit):
            return DigitPressed(digit=waits.pop(0)) if waits else WaitTimedOut()
        if isinstance(action, Persist):
            self.decision = action.decision
            return Recorded(record_id="rec-1")
        if isinstance(action, SetVariables):
            self.variables.update(action.values)
        return Done()

    def ids(self) -> list[str]:
        return [pid for pid, _role in self.played]


def driver(**flow_options: object) -> Driver:
    return Driver(Call(make_flow(returning=True, **flow_options), "de"))  # type: ignore[arg-type]


def test_a_reused_grant_plays_the_reminder_instead_of_the_first_layer_and_is_set_as_reused():
    d = driver()
    assert d.run(earlier("granted")) == "granted"
    assert d.played == [
        ("seg1", "notice"),
        ("reminder_granted", "reminder"),
        ("close_granted", "close"),
    ]
    assert d.recalls == 1
    assert d.variables["CONSENT_GA_LINKAGE"] == "granted"
    assert d.variables["CONSENT_STATUS"] == "granted"
    assert d.variables["CONSENT_REASON"] == "reused"
    decision = d.decision
    assert decision is not None and decision.reason == "reused" and decision.recall == "honoured"
    assert decision.earlier is not None and decision.earlier.record_id == "rec-0"
    assert decision.informed is False  # the notice was not heard in this call: the grant is old


def test_a_reused_decline_is_never_asked_again():
    d = driver()
    assert d.run(earlier("declined")) == "declined"
    assert "ask_ga_linkage" not in d.ids()
    assert d.variables["CONSENT_REASON"] == "reused"


def test_the_change_key_on_a_granted_reminder_withdraws_with_one_key():
    d = driver()
    assert d.run(earlier("granted"), keys={"reminder_granted": ["2"]}) == "declined"
    assert d.variables["CONSENT_REASON"] == "key"
    assert [k.meaning for k in d.decision.keys] == ["withdraw"]


def test_the_accept_key_on_a_granted_reminder_keeps_the_grant_as_reused():
    d = driver()
    assert d.run(earlier("granted"), keys={"reminder_granted": ["1"]}) == "granted"
    assert d.variables["CONSENT_REASON"] == "reused"
    assert [k.meaning for k in d.decision.keys] == ["keep"]


def test_changing_a_declined_reminder_leads_through_the_notice_to_the_question():
    d = driver()
    status = d.run(earlier("declined"), keys={"reminder_declined": ["1"]}, waits=["1"])
    assert status == "granted" and d.variables["CONSENT_REASON"] == "key"
    assert d.ids() == ["seg1", "reminder_declined", "seg2", "ask_ga_linkage", "close_granted"]
    assert d.decision.informed is True  # granted only by a key after the whole first layer
    assert [k.meaning for k in d.decision.keys] == ["change", "accept"]


def test_silence_after_changing_a_declined_reminder_grants_nothing():
    d = driver()
    assert d.run(earlier("declined"), keys={"reminder_declined": ["1"]}) == "none"


def test_the_full_notice_key_on_the_reminder_plays_layer_two_then_the_reminder_again():
    d = driver()
    assert d.run(earlier("granted"), keys={"reminder_granted": ["9"]}) == "granted"
    assert d.ids() == ["seg1", "reminder_granted", "full1", "reminder_granted", "close_granted"]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (NoEarlierDecision(why="none"), "none"),
        (NoEarlierDecision(why="expired"), "expired"),
        (NoEarlierDecision(why="store_error"), "store_error"),
        (Failed(detail="store down"), "store_error"),
        (earlier("granted", notice="f" * 64), "notice_changed"),
    ],
)
def test_without_an_honoured_decision_the_full_flow_plays_and_silence_grants_nothing(
    answer: Event, why: str
) -> None:
    d = driver()
    assert d.run(answer) == "none"
    assert d.ids()[:3] == ["seg1", "seg2", "ask_ga_linkage"]
    assert not any(role == "reminder" for _pid, role in d.played)
    assert d.decision.recall == why and d.decision.earlier is None


def test_an_outcome_the_flow_does_not_remember_is_asked_again():
    flow = make_flow(returning=True)
    assert flow.returning is not None
    only_grants = flow.returning._replace(
        remember=("granted",), reminder={"granted": flow.returning.reminder["granted"]}
    )
    d = Driver(Call(flow._replace(returning=only_grants), "de"))
    assert d.run(earlier("declined"), waits=["2"]) == "declined"
    assert "ask_ga_linkage" in d.ids() and d.decision.recall == "not_remembered"


def test_a_recording_purpose_is_not_reused_unless_the_flow_states_it():
    flow = make_flow(purposes=("call_recording",), returning=True)
    recording = flow.purposes[1]
    assert recording.kind == "recording"
    d = Driver(Call(flow, "de"))
    assert d.run(earlier("granted")) == "none"
    assert d.decision.recall == "recording"
    assert flow.returning is not None
    allowed = flow._replace(returning=flow.returning._replace(allow_recording=True))
    assert Driver(Call(allowed, "de")).run(earlier("granted")) == "granted"


def test_a_key_during_the_first_prompt_means_the_full_flow_and_no_look_up():
    d = driver()
    assert d.run(None, keys={"seg1": ["2"]}) == "declined"
    assert d.recalls == 0 and d.decision.recall == ""


def test_a_flow_without_the_block_never_asks_for_the_look_up():
    d = Driver(Call(make_flow(), "de"))
    assert d.run(None, waits=["1"]) == "granted" and d.recalls == 0


def test_the_reminder_speaks_for_every_purpose_of_the_flow():
    d = driver(purposes=("ga_linkage", "ads_use"))
    assert d.run(earlier("granted")) == "granted"
    assert d.variables["CONSENT_GA_LINKAGE"] == d.variables["CONSENT_ADS_USE"] == "granted"
    assert "ask_ga_linkage" not in d.ids() and "ask_ads_use" not in d.ids()
    d = driver(purposes=("ga_linkage", "ads_use"))
    assert d.run(earlier("granted"), keys={"reminder_granted": ["2"]}) == "declined"
    assert d.variables["CONSENT_GA_LINKAGE"] == d.variables["CONSENT_ADS_USE"] == "declined"


def test_the_model_keeps_the_block_and_its_prompts():
    flow = make_flow(returning=True)
    assert isinstance(flow.returning, Returning)
    assert [p.id for p in flow.reminders] == ["reminder_granted", "reminder_declined"]
    assert flow.all_prompts()[-2:] == flow.reminders
    assert isinstance(flow.purposes[0], Purpose)


def test_the_decline_key_on_a_declined_reminder_keeps_the_decline():
    d = driver()
    assert d.run(earlier("declined"), keys={"reminder_declined": ["2"]}) == "declined"
    assert d.variables["CONSENT_REASON"] == "reused"
    assert [k.meaning for k in d.decision.keys] == ["keep"]


@pytest.mark.parametrize("outcome", ["granted", "declined"])
def test_a_reminder_cut_short_without_a_key_keeps_nothing_and_asks(outcome: str):
    # "played" to the answer without the caller having heard the offer to change it (R17):
    # nothing of the earlier decision is kept; the full flow asks, and only a key decides
    d = driver()
    d.short.add(f"reminder_{outcome}")
    assert d.run(earlier(outcome)) == "none"
    assert "ask_ga_linkage" in d.ids()
    assert d.decision is not None and d.decision.recall == "reminder_unheard"
    assert d.decision.earlier is None
    again = driver()
    again.short.add(f"reminder_{outcome}")
    assert again.run(earlier(outcome), keys={"ask_ga_linkage": ["1"]}) == "granted"
    assert again.variables["CONSENT_REASON"] == "key"


def test_on_layer_two_from_a_granted_reminder_the_choice_keys_mean_what_the_reminder_said():
    # 1 keeps the grant (reused: nobody was asked anything new), 2 withdraws it for every
    # purpose; neither decides one purpose by key as if a question had been asked
    keep = driver(purposes=("ga_linkage", "ads"), accept_during_notice=True)
    assert (
        keep.run(earlier("granted"), keys={"reminder_granted": ["9"], "full1": ["1"]}) == "granted"
    )
    assert keep.variables["CONSENT_REASON"] == "reused"
    assert [k.meaning for k in keep.decision.keys] == ["full_notice", "keep"]
    withdraw = driver(purposes=("ga_linkage", "ads"), accept_during_notice=True)
    assert (
        withdraw.run(earlier("granted"), keys={"reminder_granted": ["9"], "full1": ["2"]})
        == "declined"
    )
    assert [k.meaning for k in withdraw.decision.keys] == ["full_notice", "withdraw"]


def test_on_layer_two_asked_for_from_a_declined_reminder_accept_leads_to_the_questions():
    # the change key: only the questions of the full flow can grant (R5), each by its own key,
    # and a wrong key there is a re-prompt, not an error
    d = driver(purposes=("ga_linkage", "ads"), accept_during_notice=True)
    status = d.run(
        earlier("declined"),
        keys={"reminder_declined": ["9"], "full1": ["1"], "ask_ga_linkage": ["1"]},
        waits=["7", "2"],
    )
    assert status == "partial"
    assert [k.meaning for k in d.decision.keys][:2] == ["full_notice", "change"]
    assert d.variables["CONSENT_GA_LINKAGE"] == "granted"
    assert d.variables["CONSENT_ADS"] == "declined"
    assert any(role == "nomatch" for _pid, role in d.played)
