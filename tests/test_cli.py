"""The `consent-ivr` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.cli.demo import DEMO_SCENARIOS
from consent_ivr.cli.main import glue_dash_values

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_validate_the_example_flow_succeeds() -> None:
    r = cli("validate", "call-tracking")
    assert r.returncode == 0, r.stderr
    assert "ok: " in r.stdout and "call-tracking@1" in r.stdout


def test_validate_reports_every_error_of_every_file_with_exit_2_and_no_traceback() -> None:
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests/broken-flows").glob("*.yaml")
        if p.stem != "withdrawal"  # the valid withdrawal line beside them (R17)
    )
    r = cli("validate", *files, env={"CONSENT_IVR_SOUNDS": "tests/broken-flows/sounds"})
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    expected = "".join(
        (ROOT / "tests/broken-flows/expected" / (Path(f).stem + ".txt")).read_text() for f in files
    )
    assert r.stderr == expected


def test_simulate_json_has_variables_evidence_and_transcript() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "2@4.0", "--lang", "en", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) >= {"variables", "evidence", "transcript"}
    assert data["variables"]["CONSENT_STATUS"] == "declined"
    assert data["evidence"]["flow"]["language"] == "en"
    keys = [row for row in data["transcript"] if row["kind"] == "key"]
    assert keys == [
        {
            "t": 4.0,
            "kind": "key",
            "key": "2",
            "fate": "taken",
            "meaning": "decline — consent refused",
        }
    ]


def test_simulate_text_reads_like_a_transcript() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "1")
    assert r.returncode == 0, r.stderr
    assert "hears    [who] Hier ist die Muster Telefon GmbH." in r.stdout
    assert "CONSENT_STATUS=granted" in r.stdout


def test_simulate_rejects_a_bad_dtmf_script_clearly() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "1,x@y")
    assert r.returncode == 2
    assert "--dtmf" in r.stderr and "Traceback" not in r.stderr


def test_simulate_rejects_an_unserved_language() -> None:
    r = cli("simulate", "call-tracking", "--lang", "fr")
    assert r.returncode == 2 and "de, en" in r.stderr


def test_demo_refuses_a_language_the_flow_does_not_serve_before_starting_a_server() -> None:
    r = cli("demo", "--lang", "fr")
    assert r.returncode == 2, r.stdout
    lines = r.stderr.strip().splitlines()
    assert lines == [
        "consent-ivr demo: flow call-tracking does not serve language 'fr'; expected one of de, en"
    ]
    assert "FastAGI server" not in r.stdout


def test_pick_language_is_the_flows_first_without_lang_and_refuses_an_unserved_one() -> None:
    from consent_ivr.cli.simulate import UnservedLanguage, pick_language
    from consent_ivr.flow.loader import load_flow

    flow = load_flow(ROOT / "flows" / "withdrawal.yaml")
    assert pick_language(flow, None) == "de"
    assert pick_language(flow, "en-GB") == "en"  # a regional variant names the served language
    with pytest.raises(UnservedLanguage, match="expected one of de, en"):
        pick_language(flow, "fr")


def test_an_unknown_flow_is_a_clear_error() -> None:
    r = cli("simulate", "no-such-flow")
    assert r.returncode == 2 and "no-such-flow" in r.stderr and "Traceback" not in r.stderr


def demo_calls(stdout: str) -> dict[str, str]:
    """The demo's output per call: scenario title -> its header line and transcript."""
    return {part.split(":", 1)[0]: part for part in stdout.split("\n=== ")[1:]}


def test_demo_runs_the_fastagi_server_places_calls_over_tcp_and_stops_it() -> None:
    r = cli("demo")
    assert r.returncode == 0, r.stderr
    assert "FastAGI server listening on 127.0.0.1:" in r.stdout
    statuses = [
        line.strip() for line in r.stdout.splitlines() if line.startswith("  CONSENT_STATUS=")
    ]
    assert statuses == [
        "CONSENT_STATUS=granted",
        "CONSENT_STATUS=declined",
        "CONSENT_STATUS=none",
        "CONSENT_STATUS=none",
        "CONSENT_STATUS=granted",  # the first caller again: the reminder, the grant reused
    ]
    assert "CONSENT_REASON=reused" in r.stdout and "[reminder_granted]" in r.stdout
    assert "server stopped cleanly (exit status 0)" in r.stdout


def test_demo_summarises_each_record_in_one_line_and_stays_short() -> None:
    r = cli("demo")
    assert r.returncode == 0, r.stderr
    summaries = [line for line in r.stdout.splitlines() if line.startswith("evidence: ")]
    assert [re.sub(r"record [0-9a-f]{32}", "record ID", line) for line in summaries] == [
        "evidence: record ID: ga_linkage granted (key); informed: yes;"
        " keys: 1 accept (in ask_ga_linkage)",
        "evidence: record ID: ga_linkage declined (key); informed: no;"
        " keys: 2 decline (in analytics)",
        "evidence: record ID: ga_linkage none (timeout); informed: yes; keys: none",
        "evidence: record ID: ga_linkage none (hangup); informed: no; keys: none",
        "evidence: record ID: ga_linkage granted (reused); informed: no; keys: none",
    ]
    assert '"audio_sha256"' not in r.stdout and '"plays"' not in r.stdout
    assert len(r.stdout.splitlines()) <= 150


def test_demo_evidence_prints_each_whole_record() -> None:
    r = cli("demo", "--evidence")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count('"transport": "fastagi"') == len(DEMO_SCENARIOS) == 5
    assert r.stdout.count('"audio_sha256": ') >= 5
    assert "evidence: record" not in r.stdout


def test_each_demo_scenario_story_is_what_its_call_does() -> None:
    r = cli("demo")
    assert r.returncode == 0, r.stderr
    calls = demo_calls(r.stdout)
    assert list(calls) == [title for title, _dtmf, _story, _caller in DEMO_SCENARIOS]
    for title, dtmf, story, _caller in DEMO_SCENARIOS:
        assert calls[title].startswith(f"{title}: {story} (--dtmf '{dtmf}')\n")

    accept = calls["accept after the notice"].splitlines()
    # "hears the whole notice": every notice segment played to its end, before the key
    press = next(i for i, line in enumerate(accept) if "s  presses  " in line)
    for segment in ("who", "analytics", "google", "voluntary", "rights"):
        (line,) = [line for line in accept[:press] if f"hears    [{segment}]" in line]
        assert line.endswith("(to the end)")
    # "then presses 1 as the question begins": the question is stopped by it at its start
    assert accept[press].split()[1:3] == ["presses", "1:"]
    assert accept[press].endswith("presses  1: accept — consent given")
    question = accept[press + 1]
    assert question.split()[0] == accept[press].split()[0]
    assert question.endswith("[ask_ga_linkage] (stopped by key 1 at its start)")

    decline = calls["decline during the notice"]
    assert "    5.00s  presses  2: decline — consent refused\n" in decline
    assert "[analytics] Wir werten" in decline and "(stopped by key 2)" in decline
    assert "  CONSENT_GA_LINKAGE=declined" in decline

    silence = calls["silence"]
    assert "s  presses  " not in silence and silence.count("waits    up to 6000 ms: timeout") == 3
    assert "  CONSENT_REASON=timeout" in silence

    hangup = calls["hang-up during the notice"]
    assert "   12.00s  hangs up (caller)\n" in hangup
    assert "[analytics]" in hangup and "(cut by hang-up)" in hangup

    # "the first caller calls again and hears the reminder of their consent"
    again = calls["a returning caller"]
    assert "[reminder_granted]" in again and "[analytics]" not in again
    assert "  CONSENT_REASON=reused" in again and "  CONSENT_GA_LINKAGE=granted" in again


def test_simulate_a_flow_given_by_a_relative_path_outside_flows() -> None:
    # the counter-example command `consent-ivr lint` prints, as a user types it from the root
    r = cli(
        "simulate",
        "tests/broken-flows/accept-during-notice.yaml",
        "--lang",
        "en",
        "--dtmf=1@0.5",
        env={"CONSENT_IVR_SOUNDS": "tests/broken-flows/sounds"},
    )
    assert r.returncode == 0, r.stderr
    assert "CONSENT_STATUS=granted" in r.stdout


def test_version_is_the_installed_distributions() -> None:
    r = cli("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"consent-ivr {importlib.metadata.version('consent-ivr')}"


def test_a_dtmf_script_starting_with_silence_is_taken_as_written() -> None:
    # `--dtmf -,7,1`: argparse alone takes `-,7,1` for an option ("expected one argument")
    for spelling in (["--dtmf", "-,7,1"], ["--dtmf=-,7,1"]):
        r = cli("simulate", "call-tracking", *spelling, "--json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["dtmf"] == "-,7,1"
        assert data["variables"]["CONSENT_STATUS"] == "granted"
        waits = [row for row in data["transcript"] if row["kind"] == "wait"]
        assert waits[0]["outcome"] == "timeout"  # the '-': silent through the first wait
        keys = [row["key"] for row in data["transcript"] if row["kind"] == "key"]
        assert keys == ["7", "1"]


def test_only_a_dash_value_of_a_dash_value_option_is_glued() -> None:
    assert glue_dash_values(["simulate", "f", "--dtmf", "-,7,1", "--lang", "en"]) == [
        "simulate", "f", "--dtmf=-,7,1", "--lang", "en",
    ]  # fmt: skip
    # the next option is not a value; another command's --dtmf is not this one; `--` ends it
    assert glue_dash_values(["simulate", "f", "--dtmf", "--json"]) == [
        "simulate", "f", "--dtmf", "--json",
    ]  # fmt: skip
    assert glue_dash_values(["demo", "--dtmf", "-1"]) == ["demo", "--dtmf", "-1"]
    assert glue_dash_values(["simulate", "--", "--dtmf", "-"]) == ["simulate", "--", "--dtmf", "-"]


def test_a_missing_dtmf_value_is_still_argparses_clear_error() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "--json")
    assert r.returncode == 2
    assert "argument --dtmf: expected one argument" in r.stderr and "Traceback" not in r.stderr


def test_a_resumed_prompt_shows_where_it_resumed_and_the_text_from_about_there() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "1@5.0,1")
    assert r.returncode == 0, r.stderr
    (stopped, resumed) = [line for line in r.stdout.splitlines() if "[analytics]" in line]
    assert stopped.endswith("(stopped by key 1)")
    # stopped 1.9 s in (5.0 s - 3.1 s): resumed there, to the end, from about that word on
    assert resumed.endswith("(from 1.9 s, to the end)")
    heard = resumed.split("[analytics] ", 1)[1]
    assert heard.startswith("… Nummer aus, also Zeitpunkt")
    assert heard.split("  (")[0].endswith("Sie können jederzeit widersprechen.")
    assert "Wir werten Anrufe" not in heard


def test_an_early_accept_shows_that_it_did_not_count_as_the_record_says() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "1@4.0", "--lang", "en")
    assert r.returncode == 0, r.stderr
    (press,) = [line for line in r.stdout.splitlines() if "s  presses  " in line]
    assert press == (
        "    4.00s  presses  1: early accept — does not count (the notice not yet heard); "
        "the segment resumes"
    )
    # the words come from the record's meaning of that key, not from the transcript
    assert '"meaning": "early_accept"' in r.stdout and "CONSENT_STATUS=none" in r.stdout


def test_each_key_the_engine_took_carries_its_recorded_meaning_and_an_ignored_one_none() -> None:
    r = cli("simulate", "call-tracking", "--dtmf", "5@4.0,9,0,7,1", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    keys = [row for row in data["transcript"] if row["kind"] == "key"]
    assert (keys[0]["key"], keys[0]["fate"]) == ("5", "ignored")
    assert "meaning" not in keys[0]  # it never reached the engine
    taken = [k for k in keys if k["fate"] == "taken"]
    assert [k["key"] for k in taken] == [e["key"] for e in data["evidence"]["keys"]]
    assert [k["meaning"] for k in taken] == [
        "full information — the full notice, then the question",
        "repeat — the notice again, then the question",
        "not a choice here — counts as a wrong key",
        "accept — consent given",
    ]


def test_a_withdrawal_flows_keys_are_told_in_its_own_words() -> None:
    r = cli("simulate", "withdrawal", "--dtmf", "-,1", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    taken = [row for row in data["transcript"] if row["kind"] == "key" and row["fate"] == "taken"]
    assert [k["meaning"] for k in taken] == ["withdraw — the withdrawal is recorded"]
    assert data["variables"]["CONSENT_WITHDRAWAL"] == "recorded"
    r = cli("simulate", "withdrawal", "--dtmf", "-,2", "--json")
    taken = [row for row in json.loads(r.stdout)["transcript"] if row.get("fate") == "taken"]
    assert [k["meaning"] for k in taken] == ["cancel — nothing is withdrawn"]


def test_simulate_help_names_the_default_caller_and_how_to_change_it() -> None:
    r = cli("simulate", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    assert "--caller NUMBER|anonymous" in text
    assert "default: +49891234567" in text


def test_simulate_caller_is_the_number_given_or_anonymous() -> None:
    key = {"CONSENT_IVR_HMAC_KEY": "test-caller-key-0123456789"}

    def pseudonym(*caller: str) -> object:
        r = cli("simulate", "call-tracking", "--dtmf", "1", "--json", *caller, env=key)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["evidence"]["call"]["caller_pseudonym"]

    default, same, other = (
        pseudonym(),
        pseudonym("--caller", "089 1234567"),
        pseudonym("--caller", "+4930111111"),
    )
    assert isinstance(default, str) and len(default) == 64
    assert same == default  # the default number, written nationally (region DE)
    assert isinstance(other, str) and other != default
    assert pseudonym("--caller", "anonymous") is None


def test_simulate_refuses_a_caller_that_is_no_number() -> None:
    r = cli("simulate", "call-tracking", "--caller", "alice")
    assert r.returncode == 2
    assert "argument --caller: 'alice' is not a phone number" in r.stderr
    assert "Traceback" not in r.stderr
