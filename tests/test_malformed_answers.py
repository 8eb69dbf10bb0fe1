"""Answers Asterisk never sends, at the question's WAIT FOR DIGIT, over both transports: the call
ends as `error` with its evidence record, never `granted` (a wrong digit must not become key 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr.cli.simulate import record_of
from consent_ivr.harness.asterisk import SimResult
from fastagi_kit import ServerThread
from peerkit import TamperedAsterisk, fastagi_call, flow_file, process_call

#: Each would read as key 1 (ASCII 49) or crash the call if taken as a number.
NOT_ASTERISK = {
    "arabic-indic": "200 result=٤٩\n".encode(),
    "fullwidth": "200 result=４９\n".encode(),
    "trailing-garbage": b"200 result=49abc\n",
    "leading-zero": b"200 result=049\n",
    "twenty-digits": b"200 result=49000000000000000000\n",
    "beyond-c-int": b"200 result=2147483697\n",
    "plus-sign": b"200 result=+49\n",
    "glued-endpos": b"200 result=49endpos=1\n",
    "tab-separator": b"200 result=49\tendpos=1\n",
}


def assert_error_with_record(result: SimResult, sim: TamperedAsterisk, record: dict | None):
    assert sim.tampered_after is not None, "the call never reached WAIT FOR DIGIT"
    assert b"ask_ga_linkage" in sim.tampered_after, "not the question's wait"
    assert result.variables["CONSENT_STATUS"] == "error"
    assert result.variables["CONSENT_GA_LINKAGE"] == "error"
    assert record is not None, "no evidence record"
    assert record["status"] == "error"
    assert [(o["purpose"], o["outcome"]) for o in record["outcomes"]] == [("ga_linkage", "error")]
    assert not any(k["meaning"] == "accept" for k in record["keys"]), record["keys"]
    # a protocol error, named as one: not a bug caught on the way (OverflowError, chr())
    assert any("WAIT FOR DIGIT: malformed result" in e for e in record["errors"]), record
    assert not any("internal error" in e for e in record["errors"]), record["errors"]


@pytest.mark.parametrize("answer", NOT_ASTERISK.values(), ids=NOT_ASTERISK.keys())
def test_a_non_asterisk_result_at_the_question_ends_a_process_agi_call_as_error_with_a_record(
    tmp_path: Path, answer: bytes
) -> None:
    result, sim = process_call(tmp_path, [flow_file()], at=b"WAIT FOR DIGIT", answer=answer)
    assert result.exit_code == 0
    assert "Traceback" not in result.stderr.decode("utf-8", "replace")
    assert_error_with_record(result, sim, record_of(tmp_path / "evidence.sqlite3", result))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerThread(tmp_path_factory.mktemp("fastagi")) as srv:
        yield srv


@pytest.mark.parametrize("answer", NOT_ASTERISK.values(), ids=NOT_ASTERISK.keys())
def test_a_non_asterisk_result_at_the_question_ends_a_fastagi_call_as_error_with_a_record(
    server: ServerThread, answer: bytes
) -> None:
    result, sim = fastagi_call(server, "call-tracking", at=b"WAIT FOR DIGIT", answer=answer)
    records = {r["record_id"]: r for r in server.records()}
    record = records.get(result.variables.get("CONSENT_RECORD_ID", ""))
    assert_error_with_record(result, sim, record)


@pytest.mark.parametrize(
    "answer", [b"200 result=49\n", b"200 result=49 endpos=0\n"], ids=["plain", "with-endpos"]
)
def test_the_same_key_as_asterisk_sends_it_is_still_key_1(tmp_path: Path, answer: bytes) -> None:
    result, sim = process_call(tmp_path, [flow_file()], at=b"WAIT FOR DIGIT", answer=answer)
    assert sim.tampered_after is not None and b"ask_ga_linkage" in sim.tampered_after
    assert result.variables["CONSENT_STATUS"] == "granted"
