"""Whole calls through the real agi/consent-ivr.agi and the simulated Asterisk, both languages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from consent_ivr.cli.simulate import SIMULATED_CALLER, simulate_call
from consent_ivr.flow.loader import load_flow
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import PlayEntry, WavSoundCatalog
from consent_ivr.paths import PROJECT_ROOT, flows_dir
from consent_ivr.protocol.session import audio_argument
from flowkit import copy_example_flows
from scenarios import SCENARIOS, Scenario, check_scenario


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(flows_dir() / "call-tracking.yaml")


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_over_process_agi(sc: Scenario, lang: str, flow: Flow, tmp_path: Path) -> None:
    log = tmp_path / "agi.log"
    call = simulate_call(
        flow,
        sc.dtmf(flow, lang),
        language=lang,
        store=tmp_path / "ev.sqlite3",
        extra_env={"CONSENT_IVR_LOG": str(log), "CONSENT_IVR_LOG_LEVEL": "debug"},
    )
    assert call.stderr == "", "nothing may reach Asterisk's console"
    assert call.result.exit_code == 0
    check_scenario(sc, lang, flow, call.result, call.evidence)
    log_text = log.read_text()
    assert SIMULATED_CALLER not in log_text and SIMULATED_CALLER[1:] not in log_text
    events = [json.loads(line) for line in log_text.splitlines()]
    assert {e["event"] for e in events} >= {"call.start", "evidence.written", "call.finish"}
    uniqueid = call.evidence["call"]["uniqueid"]
    assert all(e.get("call") == uniqueid for e in events if e["event"] != "agi.error")


def test_every_mandatory_segment_was_heard_to_its_end_before_a_grant(flow: Flow, tmp_path: Path):
    call = simulate_call(flow, "1@3.0,1@20.0,1", language="de", store=tmp_path / "e.db")
    ev = call.evidence
    assert ev["status"] == "granted"
    heard: dict[str, int] = {}
    for p in ev["plays"]:
        if p["role"] == "notice" and heard.get(p["prompt_id"], 0) >= p["offset"]:
            heard[p["prompt_id"]] = max(heard.get(p["prompt_id"], 0), p["endpos"])
    for seg in flow.notice:
        assert heard[seg.id] == seg.samples["de"], seg.id
    assert [k["meaning"] for k in ev["keys"]] == ["early_accept", "early_accept", "accept"]


def test_channel_language_selects_the_flow_language(flow: Flow, tmp_path: Path):
    for channel_lang, expected in [("en", "en"), ("de_DE", "de"), ("en_GB", "en"), ("fr", "de")]:
        call = simulate_call(flow, "2", language="de", agi_env={"agi_language": channel_lang})
        assert call.evidence["flow"]["language"] == expected, channel_lang


def test_second_agi_argument_overrides_the_language(flow: Flow):
    call = simulate_call(
        flow, "2", sim_options={"args": [flow.source_path, "en"]}, agi_env={"agi_language": "de"}
    )
    assert call.evidence["flow"]["language"] == "en"


def test_a_missing_audio_file_at_asterisk_gives_error_and_the_call_continues(flow: Flow):
    missing = audio_argument(flow.notice[1].audio["de"])
    real = WavSoundCatalog()

    def catalog(name: str) -> int | None:
        return None if name == missing else real(name)

    call = simulate_call(flow, "1", language="de", sim_options={"sounds": catalog})
    v = call.variables
    assert v["CONSENT_STATUS"] == "error" and v["CONSENT_GA_LINKAGE"] == "error"
    assert v["CONSENT_REASON"] == "error"
    assert (
        call.result.agistatus == "FAILURE"
    )  # Asterisk's own rule for STREAM FILE on a missing file
    assert call.result.exit_code == 0 and call.stderr == ""
    assert call.evidence["status"] == "error" and "analytics" in call.evidence["errors"][0]


def test_an_evidence_write_failure_is_error_never_granted(flow: Flow, tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    call = simulate_call(flow, "1", language="de", store=blocker / "evidence.sqlite3")
    v = call.variables
    assert v["CONSENT_STATUS"] == "error" and v["CONSENT_GA_LINKAGE"] == "error"
    assert v["CONSENT_RECORD_ID"] == ""
    assert "granted" not in [e.value for e in call.result.transcript if hasattr(e, "value")]
    # a real error: without a log file it is the one thing that reaches Asterisk's console
    assert "evidence.write_failed" in call.stderr and "Traceback" not in call.stderr


def test_paths_with_quotes_backslashes_and_spaces_round_trip(flow: Flow, tmp_path: Path):
    odd = tmp_path / 'it\'s a "quoted" \\ dir'
    shutil.copytree(PROJECT_ROOT / "sounds", odd / "sounds")
    copy_example_flows(odd)
    import os

    os.environ["CONSENT_IVR_SOUNDS"] = str(odd / "sounds")
    try:
        odd_flow = load_flow(odd / "call-tracking.yaml")
        call = simulate_call(
            odd_flow, "1", language="en", extra_env={"CONSENT_IVR_SOUNDS": str(odd / "sounds")}
        )
    finally:
        del os.environ["CONSENT_IVR_SOUNDS"]
    assert call.variables["CONSENT_STATUS"] == "granted"
    plays = [e for e in call.result.transcript if isinstance(e, PlayEntry)]
    assert plays and all(e.total_samples for e in plays)  # every quoted path was found
    assert all('"quoted" \\ dir' in e.file for e in plays)


def test_without_sighup_the_script_learns_of_the_hangup_from_asterisk(flow: Flow):
    call = simulate_call(flow, "h@12.0", language="de", sim_options={"sighup": False})
    assert call.variables["CONSENT_STATUS"] == "none"
    assert call.variables["CONSENT_REASON"] == "hangup"


def test_a_missing_hmac_key_is_a_clear_startup_error_and_fails_closed(flow: Flow, monkeypatch):
    monkeypatch.delenv("CONSENT_IVR_HMAC_KEY", raising=False)
    call = simulate_call(flow, "1", language="de", extra_env={"CONSENT_IVR_HMAC_KEY": ""})
    assert "CONSENT_IVR_HMAC_KEY" in call.stderr
    assert "Traceback" not in call.stderr
    assert call.variables["CONSENT_STATUS"] == "error"
    assert call.variables["CONSENT_GA_LINKAGE"] == "error"
    assert call.result.agistatus == "FAILURE"


def test_an_unknown_flow_fails_closed_with_a_clear_message(flow: Flow):
    call = simulate_call(flow, "1", flow_arg="no-such-flow")
    assert "no-such-flow" in call.stderr and "Traceback" not in call.stderr
    assert call.variables == {
        "CONSENT_REASON": "error",
        "CONSENT_RECORD_ID": "",
        "CONSENT_STATUS": "error",
    }
    assert call.result.agistatus == "FAILURE"
