"""Returning callers over FastAGI (R18): the look-up runs on the server's own read connection
while the first prompt plays; an honoured decision is reused with its linked record, the gate
opens for a reused grant only while the grant it honours stands, and a look-up that fails or is
late means the full flow. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.engine import RECALL_WAIT_MS, NoEarlierDecision
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.loader import load_flow
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import WavSoundCatalog, run_fastagi
from consent_ivr.paths import flows_dir
from consent_ivr.transports.fastagi.reader import ReadConnection
from fastagi_kit import KEY, ServerThread
from fastagi_kit import gate_reason as gate
from flowkit import copy_example_flows
from scenarios import ANSWER_S, played_ids
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

CALLER = "+49891234567"


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(flows_dir() / "call-tracking.yaml")


@pytest.fixture(autouse=True)
def look_up_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulated prompts take no real time: give the look-up real time to finish."""
    monkeypatch.setenv("CONSENT_IVR_RECALL_WAIT_MS", "5000")


def call(srv: ServerThread, dtmf: str = "", caller: str = CALLER) -> Any:
    host, port = srv.address
    return run_fastagi(
        host,
        port,
        "call-tracking?lang=en",
        dtmf=dtmf,
        sounds=WavSoundCatalog(),
        agi_env={"agi_callerid": caller, "agi_language": "en"},
    )


def test_grant_reused_and_the_gate_follows_the_grant_it_honours(
    tmp_path: Path,
    store_url: str,  # noqa: F811
    flow: Flow,
) -> None:
    with ServerThread(tmp_path, store_path=store_url) as srv:
        first = call(srv, "1")
        assert first.variables["CONSENT_STATUS"] == "granted"
        again = call(srv)
        v = dict(again.variables)
        assert v["CONSENT_STATUS"] == "granted" and v["CONSENT_REASON"] == "reused"
        assert played_ids(again, flow, "en") == ["who", "reminder_granted", "close_granted"]
        assert gate(srv, v) == "granted"
        # a withdrawal on the phone closes the gate of the reused grant too
        host, port = srv.address
        w = run_fastagi(
            host,
            port,
            "withdrawal",
            dtmf="1",
            sounds=WavSoundCatalog(),
            agi_env={"agi_callerid": CALLER},
        )
        assert w.variables["CONSENT_WITHDRAWAL"] == "recorded"
        assert gate(srv, v) == "withdrawn"
        # and the next call asks again: the full flow
        third = call(srv, "2")
        assert "reminder_granted" not in played_ids(third, flow, "en")
        assert "ask_ga_linkage" in played_ids(third, flow, "en")
    store = open_store(store_url)
    try:
        rec = store.get(v["CONSENT_RECORD_ID"])
        assert rec is not None and rec["call"]["transport"] == "fastagi"
        assert rec["returning"]["earlier"]["record_id"] == first.variables["CONSENT_RECORD_ID"]
        third_rec = store.get(third.variables["CONSENT_RECORD_ID"])
        assert third_rec is not None and third_rec["returning"]["looked_up"] == "withdrawn"
        assert store.verify().ok
    finally:
        store.close()


def test_decline_is_honoured_and_the_change_key_withdraws(tmp_path: Path, flow: Flow) -> None:
    with ServerThread(tmp_path) as srv:
        assert call(srv, "2").variables["CONSENT_STATUS"] == "declined"
        for _ in range(2):
            again = call(srv)
            assert again.variables["CONSENT_STATUS"] == "declined"
            assert "ask_ga_linkage" not in played_ids(again, flow, "en")
        other = call(srv, "1", caller="+49891234999")  # another number: its own decision
        assert other.variables["CONSENT_REASON"] == "key"
        granted = call(srv, "", caller="+49891234999")
        assert granted.variables["CONSENT_REASON"] == "reused"
        t = ANSWER_S + flow.notice[0].samples["en"] / 8000 + 1.0
        changed = call(srv, f"2@{t:.3f}", caller="+49891234999")
        assert changed.variables["CONSENT_STATUS"] == "declined"
        assert gate(srv, dict(other.variables)) == "withdrawn"
        assert gate(srv, dict(granted.variables)) == "withdrawn"


def test_a_store_that_cannot_be_read_means_the_full_flow_and_a_key_still_decides(
    tmp_path: Path, flow: Flow
) -> None:
    with ServerThread(tmp_path) as srv:
        assert call(srv, "1").variables["CONSENT_STATUS"] == "granted"
        broken = tmp_path / "not-a-folder"
        broken.write_text("x")
        srv.server._recall_reader = ReadConnection(broken / "evidence.sqlite3", "recall")
        again = call(srv, "2")
        assert again.variables["CONSENT_STATUS"] == "declined"
        assert again.variables["CONSENT_REASON"] == "key"
        assert played_ids(again, flow, "en")[: len(flow.notice)] == [p.id for p in flow.notice]
        (rec,) = [
            r for r in srv.records() if r["record_id"] == again.variables["CONSENT_RECORD_ID"]
        ]
        assert rec["returning"]["looked_up"] == "store_error"


def test_a_look_up_past_its_bound_means_the_full_flow(
    tmp_path: Path, flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENT_IVR_RECALL_WAIT_MS", "50")
    with ServerThread(tmp_path) as srv:
        assert call(srv, "1").variables["CONSENT_STATUS"] == "granted"
        pump = srv.server.pump
        assert pump is not None and pump.recall_wait_ms == 50

        async def slow(flow: Flow, env: dict[str, str]) -> NoEarlierDecision:
            await asyncio.sleep(2.0)
            return NoEarlierDecision(why="none")

        pump.recaller = slow
        again = call(srv, "")
        assert again.variables["CONSENT_STATUS"] == "none"  # silence on the full flow
        assert "reminder_granted" not in played_ids(again, flow, "en")
        (rec,) = [
            r for r in srv.records() if r["record_id"] == again.variables["CONSENT_RECORD_ID"]
        ]
        assert rec["returning"]["looked_up"] == "timeout"
    assert KEY.pseudonym(CALLER) is not None


def test_anonymous_callers_a_new_notice_and_an_expired_decision_get_the_full_flow(
    tmp_path: Path, flow: Flow
) -> None:
    folder = tmp_path / "flows"
    copy_example_flows(folder)
    with ServerThread(tmp_path, flows_dir=folder) as srv:
        for _ in range(2):  # anonymous: never looked up, never reminded
            anon = call(srv, "1", caller="anonymous")
            assert anon.variables["CONSENT_REASON"] == "key"
        first = call(srv, "1")
        (rec,) = [
            r for r in srv.records() if r["record_id"] == first.variables["CONSENT_RECORD_ID"]
        ]
        assert [r["returning"]["looked_up"] for r in srv.records()] == [
            "anonymous",
            "anonymous",
            "none",
        ]
        # a new notice version (same flow id and version number would be refused: R18)
        text = (folder / "call-tracking.yaml").read_text()
        text = text.replace('notice_version: "2026-11"', 'notice_version: "2026-12"')
        (folder / "call-tracking.yaml").write_text(text.replace("version: 1 ", "version: 2 ", 1))
        assert srv.run(srv.server.reload()) == []
        newer = call(srv, "")
        ids = played_ids(newer, flow, "en")
        assert "reminder_granted" not in ids and "ask_ga_linkage" in ids
        assert newer.variables["CONSENT_FLOW"] == "call-tracking@2"
        assert newer.variables["CONSENT_STATUS"] == "none"
    # an expired decision: a store holding only a 31-day-old copy of the grant
    old = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 31 * 86_400))
    store_path = tmp_path / "old" / "evidence.sqlite3"
    store = open_store(store_path)
    try:
        store.write({**rec, "record_id": store.new_record_id(), "created_at": old})
    finally:
        store.close()
    with ServerThread(tmp_path, store_path=store_path) as srv:
        expired = call(srv, "")
        assert "reminder_granted" not in played_ids(expired, flow, "en")
        (latest,) = [
            r for r in srv.records() if r["record_id"] == expired.variables["CONSENT_RECORD_ID"]
        ]
        assert latest["returning"]["looked_up"] == "expired"


@pytest.mark.parametrize("value", ["soon", "-5", "1.5"])
def test_a_malformed_wait_bound_means_the_engines_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # as in process AGI: not a whole number of milliseconds -> the engine's bound (it once meant
    # no wait at all, and every look-up still running at the first prompt's end timed out)
    monkeypatch.setenv("CONSENT_IVR_RECALL_WAIT_MS", value)
    with ServerThread(tmp_path) as srv:
        pump = srv.server.pump
        assert pump is not None and pump.recall_wait_ms == RECALL_WAIT_MS
