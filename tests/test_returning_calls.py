"""Returning callers through the real process-AGI script and the simulated Asterisk (R18, R6,
R17): two and three calls from one number on one store — a decision is honoured with a short
reminder and its own linked record, one key changes it, and everything that must not be honoured
(a new notice, an expired decision, a withdrawal, an anonymous caller, another flow, a store that
cannot be read) gets the full flow."""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.cli.main import main
from consent_ivr.cli.simulate import SIMULATED_CALLER, SimulatedCall, simulate_call
from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import flows_dir
from consent_ivr.tracking.gate import check_gate
from scenarios import ANSWER_S, played_ids

SECRET = "returning-calls-test-key-0123456789"
KEY = PseudonymKey.from_bytes(SECRET.encode())
ENV = {"CONSENT_IVR_HMAC_KEY": SECRET}
DAY = 86_400


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_checked(flows_dir() / "call-tracking.yaml")[0]


def call(flow: Flow, store: Path, dtmf: str = "", **options: Any) -> SimulatedCall:
    options.setdefault("language", "en")
    extra = {**ENV, **options.pop("extra_env", {})}
    return simulate_call(flow, dtmf, store=store, extra_env=extra, **options)


def on_reminder(flow: Flow, key: str, after: float = 1.0) -> str:
    """`key` pressed `after` seconds into the reminder (it follows the first notice segment)."""
    return f"{key}@{ANSWER_S + flow.notice[0].samples['en'] / 8000 + after:.3f}"


def roles(c: SimulatedCall) -> list[str]:
    return [p["role"] for p in c.evidence["plays"]] if c.evidence else []


def first_layer(flow: Flow) -> list[str]:
    return [p.id for p in flow.notice]


def test_grant_then_reused_grants_and_the_chain_shows_why(
    flow: Flow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_IVR_HMAC_KEY", SECRET)  # for the export's look-up
    store = tmp_path / "e.sqlite3"
    first = call(flow, store, "1")
    assert first.variables["CONSENT_STATUS"] == "granted"
    assert first.evidence["returning"] == {"looked_up": "none", "earlier": None}
    for _ in range(2):  # the second and third call: the reminder, no question, no first layer
        again = call(flow, store)
        v = again.variables
        assert v["CONSENT_STATUS"] == v["CONSENT_GA_LINKAGE"] == "granted"
        assert v["CONSENT_REASON"] == "reused"
        assert v["CONSENT_RECORD_ID"] != first.variables["CONSENT_RECORD_ID"]
        played = played_ids(again.result, flow, "en")
        assert played == [flow.notice[0].id, "reminder_granted", "close_granted"]
        ev = again.evidence
        assert ev["reason"] == "reused" and ev["outcomes"][0]["reason"] == "reused"
        # the link: the record whose key granted it (not the reuse before), and its notice
        assert ev["returning"]["looked_up"] == "honoured"
        assert ev["returning"]["earlier"] == {
            "record_id": first.variables["CONSENT_RECORD_ID"],
            "notice_sha256": first.evidence["flow"]["notice_sha256"],
            "decided_at": first.evidence["created_at"],
            "outcome": "granted",
        }
        assert roles(again) == ["notice", "reminder"] and ev["keys"] == []
        assert SIMULATED_CALLER not in json.dumps(ev)
        # the gate opens for the reused grant while the grant it honours stands
        db = open_store(store)
        try:
            decision = check_gate(
                db,
                purpose="ga_linkage",
                channel_value="granted",
                record_id=v["CONSENT_RECORD_ID"],
                current_notice_sha256=flow.notice_sha256["en"],
            )
            assert decision.open, decision
        finally:
            db.close()
    # the evidence export of the caller shows the records and their link
    out = io.StringIO()
    err = io.StringIO()
    code = main(
        ["evidence", "export", "--caller", SIMULATED_CALLER, "--store", str(store)], out, err
    )
    assert code == 0, err.getvalue()
    exported = json.loads(out.getvalue())
    bodies = [e["body"] for e in exported["entries"] if e["kind"] == "decision"]
    assert [b["reason"] for b in bodies] == ["key", "reused", "reused"]
    assert {b["returning"]["earlier"]["record_id"] for b in bodies[1:]} == {bodies[0]["record_id"]}


def test_decline_then_never_asked_again_within_the_age(flow: Flow, tmp_path: Path) -> None:
    store = tmp_path / "e.sqlite3"
    assert call(flow, store, "2").variables["CONSENT_STATUS"] == "declined"
    for _ in range(2):
        again = call(flow, store)
        assert again.variables["CONSENT_STATUS"] == "declined"
        assert again.variables["CONSENT_REASON"] == "reused"
        played = played_ids(again.result, flow, "en")
        assert played == [flow.notice[0].id, "reminder_declined", "close_declined"]
        assert "ask_ga_linkage" not in played  # R6: no nagging across calls


def test_the_change_key_in_the_reminder_withdraws_and_is_recorded(
    flow: Flow, tmp_path: Path
) -> None:
    store = tmp_path / "e.sqlite3"
    first = call(flow, store, "1")
    changed = call(flow, store, on_reminder(flow, "2"))
    v = changed.variables
    assert v["CONSENT_STATUS"] == "declined" and v["CONSENT_REASON"] == "key"
    assert [k["meaning"] for k in changed.evidence["keys"]] == ["withdraw"]
    assert changed.evidence["keys"][0]["prompt_id"] == "reminder_granted"
    db = open_store(store)
    try:
        # recorded as a withdrawal too: the first call's grant no longer opens any gate (R17)
        (withdrawal,) = db.entries_of_kind("withdrawal")
        assert withdrawal.body is not None
        assert withdrawal.body["source"] == "phone-reminder"
        assert withdrawal.body["record_id"] == v["CONSENT_RECORD_ID"]
        gate = check_gate(
            db,
            purpose="ga_linkage",
            channel_value="granted",
            record_id=first.variables["CONSENT_RECORD_ID"],
        )
        assert gate.reason == "withdrawn"
        assert db.verify().ok
    finally:
        db.close()
    # and the next call reminds of the decline
    nxt = call(flow, store)
    assert "reminder_declined" in played_ids(nxt.result, flow, "en")
    assert nxt.variables["CONSENT_STATUS"] == "declined"


def test_a_declined_caller_who_changes_their_mind_hears_the_notice_before_granting(
    flow: Flow, tmp_path: Path
) -> None:
    store = tmp_path / "e.sqlite3"
    call(flow, store, "2")
    changed = call(flow, store, on_reminder(flow, "1") + ",1")
    assert changed.variables["CONSENT_STATUS"] == "granted"
    assert changed.variables["CONSENT_REASON"] == "key"
    played = played_ids(changed.result, flow, "en")
    assert played[:2] == [flow.notice[0].id, "reminder_declined"]
    assert played[2:7] == [*first_layer(flow)[1:], "ask_ga_linkage"]
    assert changed.evidence["informed"] is True


def full_flow(c: SimulatedCall, flow: Flow, why: str) -> None:
    played = played_ids(c.result, flow, "en")
    assert played[: len(flow.notice)] == first_layer(flow), played
    assert not any(p.startswith("reminder_") for p in played)
    assert c.evidence is not None and c.evidence["returning"]["looked_up"] == why


def remove(store: Path) -> None:
    for path in store.parent.glob(store.name + "*"):
        path.unlink()


def copy_record(store: Path, record: dict[str, Any], **changes: Any) -> None:
    """Store an altered copy of `record` as a new decision (an earlier call of another kind)."""
    rec = json.loads(json.dumps(record))
    rec["record_id"] = ChainStore.new_record_id()
    for path, value in changes.items():
        where = rec
        *parents, last = path.split("__")
        for p in parents:
            where = where[p]
        where[last] = value
    db = open_store(store)
    try:
        db.write(rec)
    finally:
        db.close()


def test_a_new_notice_version_asks_again(flow: Flow, tmp_path: Path) -> None:
    store = tmp_path / "e.sqlite3"
    assert call(flow, store, "1").variables["CONSENT_STATUS"] == "granted"
    folder = tmp_path / "flows"
    folder.mkdir()
    for name in ("call-tracking.yaml", "withdrawal.yaml"):
        shutil.copy(flows_dir() / name, folder / name)
    path = folder / "call-tracking.yaml"
    path.write_text(
        path.read_text().replace('notice_version: "2026-11"', 'notice_version: "2026-12"')
    )
    newer = load_checked(path)[0]
    assert newer.notice_sha256 != flow.notice_sha256
    again = call(newer, store, "", extra_env={"CONSENT_IVR_FLOWS": str(folder)})
    full_flow(again, newer, "notice_changed")
    assert again.variables["CONSENT_STATUS"] == "none"  # silence on the full flow: nothing


@pytest.mark.parametrize("case", ["expired", "withdrawn", "other_flow"])
def test_an_expired_withdrawn_or_other_flows_decision_gets_the_full_flow(
    flow: Flow, tmp_path: Path, case: str
) -> None:
    store = tmp_path / "e.sqlite3"
    first = call(flow, store, "2" if case == "other_flow" else "1")
    if case == "expired":  # a store holding only a copy of that decision, 31 days old
        old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 31 * DAY))
        remove(store)
        copy_record(store, first.evidence, created_at=old)
        why = "expired"
    elif case == "withdrawn":
        db = open_store(store)
        try:
            db.withdraw({KEY.key_id: KEY.pseudonym(SIMULATED_CALLER) or ""}, "ga_linkage")
        finally:
            db.close()
        why = "withdrawn"
    else:  # a store whose only decision (a decline) another flow made: not this flow's
        remove(store)
        copy_record(store, first.evidence, flow__id="other-flow")
        why = "none"
    full_flow(call(flow, store), flow, why)


def test_an_anonymous_caller_gets_the_full_flow(flow: Flow, tmp_path: Path) -> None:
    store = tmp_path / "e.sqlite3"
    call(flow, store, "1")
    anon = call(flow, store, "", agi_env={"agi_callerid": "anonymous"})
    full_flow(anon, flow, "anonymous")


def test_a_store_that_cannot_be_read_means_the_full_flow_never_a_grant(
    flow: Flow, tmp_path: Path
) -> None:
    store = tmp_path / "e.sqlite3"
    store.write_bytes(b"this is not a database " * 100)
    c = call(flow, store, "")
    played = played_ids(c.result, flow, "en")
    assert played[: len(flow.notice)] == first_layer(flow)
    assert not any(p.startswith("reminder_") for p in played)
    assert c.variables["CONSENT_STATUS"] == "error"  # and the write failed too: never granted
    assert '"returning.lookup_failed"' in c.stderr
    assert SIMULATED_CALLER not in c.stderr and SIMULATED_CALLER[1:] not in c.stderr
