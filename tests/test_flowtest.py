"""`consent-ivr test`: the shipped scenario files pass; a scenario that does not hold fails with a
readable diff and the command that replays it; a malformed test file is refused with its
positions and nothing runs; the exit statuses."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

from consent_ivr.cli.flowtest import run_tests
from consent_ivr.paths import flows_dir
from flowkit import copy_example_flows


def run(*paths: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_tests(list(paths), out, err)
    return status, out.getvalue(), err.getvalue()


def test_the_shipped_scenarios_pass() -> None:
    status, out, err = run(str(flows_dir()))
    assert status == 0, out + err
    assert out.rstrip().endswith("19 passed, 0 failed")
    assert "call-tracking.test.yaml (call-tracking@1)" in out


def test_a_scenario_that_does_not_hold_fails_with_a_diff_and_a_replay(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    (tmp_path / "x.test.yaml").write_text(
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: the caller says yes\n"
        "    dtmf: '2'\n"
        "    expect:\n"
        "      status: granted\n"
        "      heard: [who, analytics, google, voluntary, rights, ask_ga_linkage stopped by 1,\n"
        "        close_granted]\n",
        encoding="utf-8",
    )
    status, out, _err = run(str(tmp_path))
    assert status == 1
    assert "FAIL the caller says yes [de] (line 3)" in out
    assert "CONSENT_STATUS: expected granted, got declined" in out
    assert "-ask_ga_linkage stopped by 1" in out and "+ask_ga_linkage stopped by 2" in out
    assert "--dtmf='2'" in out and out.rstrip().endswith("0 passed, 1 failed")


def test_a_malformed_test_file_is_refused_with_positions(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    (tmp_path / "bad.test.yaml").write_text(
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: typo\n"
        "    dtfm: '1'\n"
        "    lang: fr\n"
        "    expect: {heard: [who stopped by nine]}\n",
        encoding="utf-8",
    )
    status, out, err = run(str(tmp_path / "bad.test.yaml"))
    assert status == 1 and "Traceback" not in err
    path = tmp_path / "bad.test.yaml"
    assert f"{path}:4:5: error: unknown key 'dtfm' in scenario 1; did you mean 'dtmf'?" in err
    assert f"{path}:5:11: error: flow call-tracking does not serve language 'fr'" in err
    assert "'who stopped by nine' is not a prompt heard" in err
    assert out.rstrip().endswith("0 passed, 0 failed, 1 file(s) could not be read")


def test_a_test_file_for_a_flow_that_does_not_load_names_it(tmp_path: Path) -> None:
    shutil.copy(flows_dir() / "call-tracking.test.yaml", tmp_path / "call-tracking.test.yaml")
    status, _out, err = run(str(tmp_path))
    assert status == 1
    assert "the flow call-tracking does not load" in err


def test_no_test_files_is_a_usage_error(tmp_path: Path) -> None:
    status, _out, err = run(str(tmp_path))
    assert status == 2 and "no *.test.yaml files" in err
