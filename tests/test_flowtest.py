"""`consent-ivr test`: the shipped scenario files pass and cover every outcome; a scenario that does
not hold fails with a readable diff and a replay command that runs as printed; a test file is
checked against its flow when it loads (every problem at once, positioned, exit 2, nothing runs);
where the flow is looked for; the exit statuses."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from consent_ivr.cli.flowtest import run_tests
from consent_ivr.cli.flowtest_file import heard_entry, read_test_file
from consent_ivr.engine.events import KEY_MEANINGS
from consent_ivr.paths import flows_dir
from flowkit import copy_example_flows

#: The first-layer prompts of call-tracking, heard to the end.
NOTICE = "who, analytics, google, voluntary, rights"


def run(*paths: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_tests(list(paths), out, err)
    return status, out.getvalue(), err.getvalue()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_scenarios_pass() -> None:
    status, out, err = run(str(flows_dir()))
    assert status == 0, out + err
    assert out.rstrip().endswith("31 passed, 0 failed")
    assert "call-tracking.test.yaml (call-tracking@1)" in out
    assert "withdrawal.test.yaml (withdrawal@1)" in out


def test_the_shipped_scenarios_cover_every_outcome() -> None:
    """Issue #11's list, for both example flows: decided either way, none by silence and by wrong
    keys, a hang-up in each phase, every key meaning the flow can record."""
    for name, decided, phases in (
        (
            "call-tracking",
            {"granted", "declined"},
            {"notice", "full_notice", "question", "noinput", "nomatch", "close"},
        ),
        (
            "withdrawal",
            {"recorded", "cancelled"},
            {"notice", "question", "noinput", "nomatch", "close"},
        ),
    ):
        tf = read_test_file(flows_dir() / f"{name}.test.yaml")
        flow = tf.flow
        role = {p.id: "notice" for p in flow.notice}
        role.update({p.id: "full_notice" for p in flow.full_notice})
        role.update({q.prompt.id: "question" for q in flow.questions})
        role.update({p.id: "noinput" for p in flow.choice.noinput})
        role.update({p.id: "nomatch" for p in flow.choice.nomatch})
        role.update({p.id: "close" for p in flow.close.values()})
        statuses, reasons, meanings, hung_up = set(), set(), set(), set()
        hangup_before_anything = False
        for s in tf.scenarios:
            e = s.expect
            statuses.add(e.status)
            if e.status == "none":
                reasons.add((e.variables or {}).get("CONSENT_REASON"))
            meanings.update(e.keys or [])
            for entry in e.heard or []:
                if entry.endswith(" hung up"):
                    hung_up.add(role[entry.split()[0]])
            hangup_before_anything |= s.dtmf == "h" and e.heard == []
        assert decided <= statuses, name
        assert {"timeout", "invalid", "hangup"} <= reasons, name
        assert phases <= hung_up and hangup_before_anything, name
        # a test file places one call from a fresh store: no returning caller, so no reminder keys
        reminder = {"keep", "withdraw", "change"}
        can_record = (
            set(KEY_MEANINGS) - reminder - ({"full_notice"} if not flow.full_notice else set())
        )
        assert meanings == can_record, name


def test_a_scenario_that_does_not_hold_fails_with_a_diff_and_a_replay(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    write(
        tmp_path,
        "x.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: the caller says yes\n"
        "    dtmf: '2'\n"
        "    expect:\n"
        "      status: granted\n"
        f"      heard: [{NOTICE}, ask_ga_linkage stopped by 1,\n"
        "        close_granted]\n",
    )
    status, out, _err = run(str(tmp_path))
    assert status == 1
    assert "FAIL the caller says yes [de] (line 3)" in out
    assert "CONSENT_STATUS: expected granted, got declined" in out
    assert "-ask_ga_linkage stopped by 1" in out and "+ask_ga_linkage stopped by 2" in out
    assert "--dtmf='2'" in out and out.rstrip().endswith("0 passed, 1 failed")


def test_the_replay_line_runs_as_printed_in_a_shell(tmp_path: Path) -> None:
    folder = tmp_path / "my flows"  # a space in the path: the command must quote it
    copy_example_flows(folder)
    write(
        folder,
        "x.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: silence is not a yes\n"
        "    lang: en_GB\n"
        "    dtmf: '-,-,-'\n"
        "    expect: {status: granted}\n",
    )
    status, out, _err = run(str(folder))
    assert status == 1 and "FAIL silence is not a yes [en]" in out
    replay = re.search(r"replay: (.*)", out)
    assert replay is not None
    line = replay.group(1)
    assert line.startswith("consent-ivr simulate ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "call: call-tracking@1 [en]  caller keys: -,-,-" in done.stdout
    assert "CONSENT_STATUS=none" in done.stdout  # what the test saw, replayed


def test_every_problem_of_a_test_file_is_reported_at_once_and_nothing_runs(
    tmp_path: Path,
) -> None:
    copy_example_flows(tmp_path)
    path = write(
        tmp_path,
        "bad.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: typo\n"
        "    dtfm: '1'\n"
        "    lang: fr\n"
        "    expect: {heard: [who stopped by nine]}\n"
        "  - name: french again, and a bad script\n"
        "    lang: fr\n"
        "    dtmf: '1@soon'\n"
        "    expect:\n"
        "      status: accepted\n"
        "      keys: [agree, accept]\n"
        "      heard: [who, gogle]\n"
        "      outcomes: {ga_linkge: granted}\n"
        "      variables: {CONSENT_RESON: key, CONSENT_REASON: silence}\n"
        "  - name: fine\n"
        "    dtmf: '1'\n",
    )
    status, out, err = run(str(path))
    assert status == 2 and "Traceback" not in err
    expected = [
        "4:5: error: unknown key 'dtfm' in scenario 1; did you mean 'dtmf'?",
        "5:11: error: flow call-tracking does not serve language 'fr'; expected one of de, en",
        "6:22: error: 'who stopped by nine' is not a prompt heard; expected '<prompt id>',",
        "8:11: error: flow call-tracking does not serve language 'fr'",
        "9:11: error: dtmf '1@soon' does not parse: DTMF script event #1 '1@soon': expected a"
        " time in seconds after '@'",
        "11:15: error: status 'accepted' cannot occur in flow call-tracking (CONSENT_STATUS);"
        " expected one of: granted, declined, none, error",
        "12:14: error: key meaning 'agree' does not exist; expected one of: accept, decline,"
        " early_accept, repeat, full_notice, invalid",
        "13:20: error: prompt 'gogle' is not in flow call-tracking; did you mean 'google'?",
        "14:18: error: purpose 'ga_linkge' is not asked by flow call-tracking; did you mean"
        " 'ga_linkage'?",
        "15:19: error: variable 'CONSENT_RESON' is not set by flow call-tracking; did you mean"
        " 'CONSENT_REASON'?",
        "15:55: error: value of CONSENT_REASON 'silence' cannot occur; expected one of: key,"
        " timeout, invalid, hangup, error",
    ]
    lines = err.splitlines()
    assert len(lines) == len(expected), err
    for line, want in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}:{want}"), (line, want)
    assert "ok" not in out and out.rstrip().endswith("0 passed, 0 failed, 1 file(s) refused")


def test_what_a_withdrawal_flow_cannot_produce_is_refused(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    path = write(
        tmp_path,
        "w.test.yaml",
        "flow: withdrawal\n"
        "scenarios:\n"
        "  - name: consent words for a withdrawal\n"
        "    dtmf: '9'\n"
        "    expect:\n"
        "      status: granted\n"
        "      outcomes: {ga_linkage: declined}\n"
        "      variables: {CONSENT_STATUS: none}\n"
        "      keys: [full_notice]\n",
    )
    status, _out, err = run(str(path))
    assert status == 2
    assert (
        f"{path}:6:15: error: status 'granted' cannot occur in flow withdrawal"
        " (CONSENT_WITHDRAWAL); expected one of: recorded, cancelled, none, error" in err
    )
    assert f"{path}:7:30: error: outcome of ga_linkage 'declined' cannot occur" in err
    assert f"{path}:8:19: error: variable 'CONSENT_STATUS' is not set by flow withdrawal" in err
    assert (
        f"{path}:9:14: error: key meaning 'full_notice' cannot occur in flow withdrawal;"
        " expected one of: accept, decline, early_accept, repeat, invalid" in err
    )


def test_an_unquoted_hash_is_explained_where_it_stands(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    flow_list = write(
        tmp_path,
        "a.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: hash\n"
        "    dtmf: '#'\n"
        "    expect:\n"
        "      heard: [who, ask_ga_linkage stopped by #,\n"
        "        close_none]\n",
    )
    block_list = write(
        tmp_path,
        "b.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: hash\n"
        "    dtmf: #\n"
        "    expect:\n"
        "      heard:\n"
        "        - ask_ga_linkage stopped by #\n",
    )
    status, _out, err = run(str(flow_list), str(block_list))
    assert status == 2
    hint = "a '#' after a space starts a YAML comment"
    assert re.search(rf"a\.test\.yaml:6:46: error: YAML syntax error: .*{hint}", err), err
    assert re.search(rf"b\.test\.yaml:4:10: error: dtmf is empty; .*{hint}", err), err
    assert re.search(rf"b\.test\.yaml:7:11: error: 'ask_ga_linkage stopped by' .*{hint}", err)


def test_a_flow_id_not_found_names_every_place_looked(tmp_path: Path) -> None:
    path = write(
        tmp_path, "bakery.test.yaml", "flow: bakery\nscenarios:\n  - name: x\n    dtmf: '1'\n"
    )
    status, _out, err = run(str(path))
    assert status == 2
    assert (
        f"{path}:1:7: error: no flow 'bakery' beside the test file ({tmp_path / 'bakery.yaml'})"
        f" or in the flows folder ({flows_dir() / 'bakery.yaml'}); expected one of:"
        " call-tracking, withdrawal" in err
    )
    assert "consent-ivr lint" not in err


def test_a_flow_id_not_beside_the_test_file_is_taken_from_the_flows_folder(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        "elsewhere.test.yaml",
        "flow: withdrawal\n"
        "scenarios:\n"
        "  - name: cancel\n"
        "    dtmf: '2'\n"
        "    expect: {status: cancelled}\n"
        "  - name: cancel is not withdraw\n"
        "    dtmf: '2'\n"
        "    expect: {status: recorded}\n",
    )
    status, out, _err = run(str(tmp_path))
    assert status == 1
    assert "ok   cancel [de]" in out and out.rstrip().endswith("1 passed, 1 failed")
    # replayed by id, as simulate finds a flow of the flows folder from any working folder
    assert "replay: consent-ivr simulate withdrawal --lang de --dtmf='2'" in out


def test_a_flow_beside_the_test_file_that_does_not_load_is_named_with_its_first_error(
    tmp_path: Path,
) -> None:
    copy_example_flows(tmp_path)
    flow = tmp_path / "call-tracking.yaml"
    flow.write_text(flow.read_text(encoding="utf-8").replace("version: 1", "version: one"))
    path = shutil.copy(flows_dir() / "call-tracking.test.yaml", tmp_path)
    status, _out, err = run(str(path))
    assert status == 2
    assert re.search(
        rf"call-tracking\.test\.yaml:\d+:7: error: the flow {re.escape(str(flow))} does not load"
        rf" \(\d+ error\(s\); the first, line \d+: version is the text 'one'\); expected a valid"
        rf" flow; run consent-ivr lint {re.escape(str(flow))}",
        err,
    ), err


def test_heard_ending_in_dots_checks_only_the_beginning(tmp_path: Path) -> None:
    copy_example_flows(tmp_path)
    write(
        tmp_path,
        "p.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - name: an early 1 resumes the first segment\n"
        "    dtmf: '1@2.0,1'\n"
        "    expect: {heard: [who stopped by 1, who from 1.50 s, ...]}\n"
        "  - name: a wrong beginning\n"
        "    dtmf: '1@2.0,1'\n"
        "    expect: {heard: [who stopped by 1, analytics, ...]}\n",
    )
    status, out, _err = run(str(tmp_path))
    assert status == 1
    assert "ok   an early 1 resumes the first segment [de]" in out
    assert "FAIL a wrong beginning [de]" in out and "heard (the first 2 prompts):" in out
    assert "-analytics" in out and "+who from 1.5 s" in out


def test_no_test_files_is_a_usage_error(tmp_path: Path) -> None:
    status, _out, err = run(str(tmp_path))
    assert status == 2 and "no *.test.yaml files" in err


def test_odd_shapes_and_a_flow_given_as_a_test_file_are_refused_without_a_traceback(
    tmp_path: Path,
) -> None:
    copy_example_flows(tmp_path)
    write(tmp_path, "empty.test.yaml", "")
    write(tmp_path, "shapes.test.yaml", "flow: [x]\nscenarios: {a: 1}\n")
    write(
        tmp_path,
        "deep.test.yaml",
        "flow: call-tracking\n"
        "scenarios:\n"
        "  - 1\n"
        "  - name: ''\n"
        "    dtmf: [1]\n"
        "    expect: {heard: x, outcomes: [1], variables: {CONSENT_REASON: [key]}}\n",
    )
    status, out, err = run(str(tmp_path), str(tmp_path / "call-tracking.yaml"))
    assert status == 2 and "Traceback" not in err
    for want in (
        "deep.test.yaml:3:5: error: scenario 1 is not a mapping",
        "deep.test.yaml:4:11: error: name is empty",
        "deep.test.yaml:5:11: error: dtmf is not a single value",
        "deep.test.yaml:6:21: error: heard is not a list",
        "deep.test.yaml:6:34: error: outcomes is not a mapping",
        "deep.test.yaml:6:67: error: a value in variables is not a single value",
        "empty.test.yaml:1:1: error: the test file is empty",
        "shapes.test.yaml:1:7: error: flow is not a single value",
        "shapes.test.yaml:2:12: error: scenarios is not a list",
        "call-tracking.yaml:1:1: error: " + str(tmp_path / "call-tracking.yaml") + " is not a flow"
        " test file",
    ):
        assert want in err, (want, err)
    assert out.rstrip().endswith("0 passed, 0 failed, 4 file(s) refused")


def test_a_resume_under_a_twentieth_of_a_second_is_written_as_from_the_start() -> None:
    # the entry a test file can match: `who from 0 s` could never be read back as written
    assert heard_entry("who", 0.03) == "who"
    assert heard_entry("who", 0.05 + 1e-9) == "who from 0.1 s"
    assert heard_entry("who", 1.5, key="2") == "who from 1.5 s stopped by 2"
