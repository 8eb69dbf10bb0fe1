"""The driver in-process over the loopback wire: one log event per step, no caller number."""

from __future__ import annotations

import signal

import pytest

from consent_ivr.agi_process import ConsentAGI
from consent_ivr.agicodec import Response, ResponseReader
from consent_ivr.driver import run_call
from consent_ivr.evidence import PseudonymKey, SqliteEvidenceStore
from consent_ivr.flow.loader import load_flow
from consent_ivr.harness.asterisk import SimulatedAsterisk, WavSoundCatalog
from consent_ivr.harness.loopback import Loopback
from consent_ivr.paths import flows_dir
from consent_ivr.session import Command

NUMBER = "+4930987654321"


def test_a_call_logs_each_step_keyed_by_uniqueid_and_never_the_number(
    tmp_path, no_caller_number_in_logs
):
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    sim = SimulatedAsterisk(
        dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER, "agi_uniqueid": "42.7"}
    )
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)
    store = SqliteEvidenceStore(tmp_path / "ev.db")
    key = PseudonymKey.from_bytes(b"0123456789abcdef-test-key")
    result = run_call(
        flow=flow,
        language="de",
        env=dict(agi.env),
        key=key,
        store=store,
        exchange=agi.exchange,
        hangup_seen=lambda: agi.hangup_seen,
    )
    assert result.status == "granted"
    events = no_caller_number_in_logs
    names = [e["event"] for e in events]
    assert names[0] == "call.start" and names[-1] == "call.finish"
    assert "evidence.written" in names
    assert all(e.get("call") == "42.7" for e in events)
    record = store.get(result.record_id)
    assert record is not None
    assert record["call"]["caller_pseudonym"] == key.pseudonym(NUMBER)
    assert NUMBER not in repr(record) and NUMBER[1:] not in repr(record)


def test_pseudonyms_are_keyed_and_normalised():
    a = PseudonymKey.from_bytes(b"key-one-0123456789")
    b = PseudonymKey.from_bytes(b"key-two-0123456789")
    assert a.pseudonym("+49 89 1234") == a.pseudonym("+49891234")
    assert a.pseudonym("+49891234") != b.pseudonym("+49891234")
    assert a.pseudonym("unknown") is None and a.pseudonym("") is None
    assert a.key_id != b.key_id


@pytest.mark.parametrize("bad", ["200 result=", "200 result=-"])
def test_a_malformed_response_ends_the_call_as_error_with_a_record(tmp_path, bad):
    # "200 result=" has no integer result: the call must end as error, evidence written and
    # the variables set, never as an uncaught exception that leaves no record.
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    sim = SimulatedAsterisk(dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER})
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)
    broken: list[Command] = []

    def exchange(command: Command) -> Response | None:
        resp = agi.exchange(command)
        if command.words == ("STREAM", "FILE") and not broken:
            broken.append(command)
            return ResponseReader().feed(bad)
        return resp

    store = SqliteEvidenceStore(tmp_path / "ev.db")
    try:
        result = run_call(
            flow=flow,
            language="de",
            env=dict(agi.env),
            key=PseudonymKey.from_bytes(b"0123456789abcdef-test-key"),
            store=store,
            exchange=exchange,
            hangup_seen=lambda: agi.hangup_seen,
        )
        assert broken and result.status == "error"
        record = store.get(result.record_id)
        assert record is not None and record["status"] == "error"
        assert any("no integer result" in e for e in record["errors"]), record["errors"]
    finally:
        store.close()
    assert sim.variables["CONSENT_STATUS"] == "error"
