"""What a peer sends never reaches a log line: a malformed or unexpected answer is logged by its
kind and length, on both transports, in the consent call, the tracking step and the gate."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.cli.simulate import record_of
from consent_ivr.harness.asterisk import SimResult, SimulatedAsterisk, run_fastagi, run_process
from consent_ivr.paths import agi_script
from fastagi_kit import ServerThread
from peerkit import TamperedAsterisk, channel, flow_file, process_call

#: The number the channel's CALLED_NUMBER holds (a tracking number, not the caller's).
NUMBER = "+4989765432109"
#: Any 5 consecutive digits of it: none may appear in a log.
TRACES = {NUMBER[i : i + 5] for i in range(1, len(NUMBER) - 4)}
#: Longer than this, a log line copied a peer's answer.
MAX_LINE = 600

#: Answers carrying the number, and 4 KB answers.
ANSWERS = {
    "unbalanced-data": f"200 result=1 ({NUMBER}\n".encode(),
    "bare-number": f"{NUMBER}\n".encode(),
    "number-as-result": f"200 result={NUMBER[1:]}\n".encode(),
    "number-as-code": f"{NUMBER[1:]} result=1\n".encode(),
    "number-in-a-510": f"510 {NUMBER}\n".encode(),
    "4kb-data": ("200 result=1 (" + NUMBER * 300)[:4096].encode() + b"\n",
    "4kb-line": (NUMBER * 300)[:4096].encode() + b"\n",
}
#: Protocol errors, which are logged (a 510 is an answer: it ends the call without a log line).
LOGGED = {answer for name, answer in ANSWERS.items() if "510" not in name}


def assert_clean(text: str) -> None:
    """No trace of the number, and no line long enough to hold a copied answer."""
    for trace in TRACES:
        assert trace not in text, f"{trace!r} of the number reached a log: {text[:300]!r}"
    for line in text.splitlines():
        assert len(line) <= MAX_LINE, f"a {len(line)}-character log line: {line[:200]!r}"


def assert_clean_events(events: list[dict[str, Any]]) -> None:
    assert_clean("\n".join(json.dumps(e, sort_keys=True, default=str) for e in events))


def dead(sim: TamperedAsterisk) -> TamperedAsterisk:
    """The channel after the hang-up, as the hangup handler's tracking step sees it."""
    sim.answered = True
    for name, value in {"CALLED_NUMBER": NUMBER, "CONSENT_GA_LINKAGE": "granted"}.items():
        sim.set_variable(name, value)
    sim.hung_up = sim.dead = True
    return sim


# ------------------------------------------------------------------ the consent call
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_bad_answer_in_a_process_agi_call_leaves_no_trace_on_the_console_or_in_the_log(
    tmp_path: Path, answer: bytes
) -> None:
    result, _ = process_call(tmp_path, [flow_file()], at=b"WAIT FOR DIGIT", answer=answer)
    assert result.variables["CONSENT_STATUS"] == "error"
    record = record_of(tmp_path / "evidence.sqlite3", result)
    assert record is not None and record["errors"]
    assert_clean(json.dumps(record["errors"]))  # nor in the evidence
    console = result.stderr.decode("utf-8", "replace")
    assert ("agi.error" in console) == (answer in LOGGED)  # errors reach Asterisk's console
    assert_clean(console)
    log = tmp_path / "agi.log"
    result, _ = process_call(
        tmp_path, [flow_file()], at=b"WAIT FOR DIGIT", answer=answer, log_file=log
    )
    assert result.stderr == b"" and result.variables["CONSENT_STATUS"] == "error"
    text = log.read_text()
    assert "call.finish" in text and ("agi.error" in text) == (answer in LOGGED)
    assert_clean(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerThread(tmp_path_factory.mktemp("fastagi")) as srv:
        yield srv


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_bad_answer_in_a_fastagi_call_leaves_no_trace_in_the_log(
    server: ServerThread, answer: bytes, no_caller_number_in_logs: list[dict[str, Any]]
) -> None:
    sim = TamperedAsterisk(
        at=b"WAIT FOR DIGIT",
        answer=answer,
        network=True,
        network_script="call-tracking",
        env={"agi_language": "de"},
    )
    result = run_fastagi(*server.address, "call-tracking", sim=sim)
    assert result.variables["CONSENT_STATUS"] == "error"
    events = no_caller_number_in_logs
    assert any(e["event"] == "call.finish" for e in events)
    assert any(e["event"] == "agi.error" for e in events) == (answer in LOGGED)
    assert_clean_events(events)


# ------------------------------------------------------------------ the tracking step
def _tracked_over_process_agi(tmp: Path, answer: bytes, log: Path | None) -> SimResult:
    script = agi_script()
    sim = dead(
        TamperedAsterisk(
            at=b'GET VARIABLE "CALLED_NUMBER"',
            answer=answer,
            request=str(script),
            args=["track"],
            env=channel(),
        )
    )
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": "peer-test-key-0123456789"}
    env["CONSENT_IVR_STORE"] = str(tmp / "evidence.sqlite3")
    env.pop("CONSENT_IVR_LOG", None)
    if log is not None:
        env["CONSENT_IVR_LOG"], env["CONSENT_IVR_LOG_LEVEL"] = str(log), "debug"
    result = run_process([sys.executable, str(script), "track"], env=env, sim=sim, timeout=30)
    assert sim.tampered_after is not None  # the answer was given
    return result


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_bad_called_number_answer_in_process_agi_tracking_leaves_no_trace(
    tmp_path: Path, answer: bytes
) -> None:
    result = _tracked_over_process_agi(tmp_path, answer, None)
    console = result.stderr.decode("utf-8", "replace")
    assert ("tracking.agi_error" in console) == (answer in LOGGED)
    assert_clean(console)
    log = tmp_path / "track.log"
    result = _tracked_over_process_agi(tmp_path, answer, log)
    assert result.stderr == b""
    assert ("tracking.agi_error" in log.read_text()) == (answer in LOGGED)
    assert_clean(log.read_text())


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_a_bad_called_number_answer_in_fastagi_tracking_leaves_no_trace(
    server: ServerThread, answer: bytes, no_caller_number_in_logs: list[dict[str, Any]]
) -> None:
    sim = dead(
        TamperedAsterisk(
            at=b'GET VARIABLE "CALLED_NUMBER"',
            answer=answer,
            network=True,
            network_script="track",
        )
    )
    run_fastagi(*server.address, "track", sim=sim)
    assert sim.tampered_after is not None
    events = no_caller_number_in_logs
    assert any(e["event"] == "tracking.error" for e in events) == (answer in LOGGED), events
    assert_clean_events(events)


# ------------------------------------------------------------------ unexpected, well-formed
def test_an_unexpected_consent_variable_is_not_copied_into_the_gate_reason(
    server: ServerThread, no_caller_number_in_logs: list[dict[str, Any]]
) -> None:
    # A well-formed answer with a value no flow sets: the gate stays shut, and its reason (logged,
    # and set on the channel) says so without repeating the value.
    script = "gate?purpose=ga_linkage"
    sim = SimulatedAsterisk(network=True, network_script=script, answered=True)
    sim.set_variable("__CONSENT_GA_LINKAGE", NUMBER)
    gate = run_fastagi(*server.address, script, sim=sim).variables
    assert gate["CONSENT_GATE_GA_LINKAGE"] == "closed"
    assert gate["CONSENT_GATE_GA_LINKAGE_REASON"] == "variable=unexpected"
    assert any(e["event"] == "gate.checked" for e in no_caller_number_in_logs)
    assert_clean_events(no_caller_number_in_logs)


@pytest.mark.parametrize(
    "script", [f"call-tracking{NUMBER}", f"gate?purpose={NUMBER}", "x" * 4000 + NUMBER]
)
def test_an_unknown_script_or_purpose_is_logged_masked_and_short(
    server: ServerThread, script: str, no_caller_number_in_logs: list[dict[str, Any]]
) -> None:
    sim = SimulatedAsterisk(network=True, network_script=script, answered=True)
    run_fastagi(*server.address, script, sim=sim)
    events = no_caller_number_in_logs
    assert any(e["event"] in ("call.unknown_flow", "gate.bad_request") for e in events), events
    assert_clean_events(events)
