"""The `consent-ivr` command line, run as a user runs it (a subprocess of the installed script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert keys == [{"t": 4.0, "kind": "key", "key": "2", "fate": "taken"}]


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


def test_an_unknown_flow_is_a_clear_error() -> None:
    r = cli("simulate", "no-such-flow")
    assert r.returncode == 2 and "no-such-flow" in r.stderr and "Traceback" not in r.stderr


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
    assert '"transport": "fastagi"' in r.stdout
    assert "server stopped cleanly (exit status 0)" in r.stdout


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
