"""`consent-ivr test [PATH...]`: run flow test files — scenarios flow authors keep beside their
flows — through the real process-AGI script against the simulated Asterisk, reported like pytest:
one line per scenario, what did not hold and a command that replays the call, a summary line.

The file format and its checks are `cli/flowtest_file.py`'s; a file with any problem is refused
with every problem's position and none of its scenarios runs (exit 2).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from consent_ivr.cli.flowtest_file import Scenario, heard_entry, read_test_file, result_variables
from consent_ivr.cli.simulate import simulate_call
from consent_ivr.cli.transcript import SimulatedCall, transcript_rows
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import replay_command
from consent_ivr.paths import FLOW_TEST_SUFFIX
from consent_ivr.wav import TELEPHONY_RATE

SUFFIX = FLOW_TEST_SUFFIX


@dataclass
class Outcome:
    scenario: Scenario
    language: str
    problems: list[str]
    call: SimulatedCall | None


def heard(call: SimulatedCall) -> list[str]:
    """The prompts the call played, as a test file writes them (`flowtest_file.heard_entry`)."""
    out = []
    for row in transcript_rows(call):
        if row["kind"] != "play" or row["missing"]:
            continue
        out.append(
            heard_entry(
                str(row["prompt"]),
                row["from_sample"] / TELEPHONY_RATE,
                row["interrupted_by"],
                bool(row["hung_up"] or not row["completed"]),
            )
        )
    return out


def run_scenario(flow: Flow, s: Scenario) -> Outcome:
    """Place the scenario's call and compare it with what it expects; never raises for a call
    that goes wrong (that is a problem of the scenario)."""
    lang = s.lang or flow.default_language
    try:
        call = simulate_call(flow, s.dtmf, language=lang)
    except Exception as exc:  # a call that cannot run fails its scenario, never a traceback
        return Outcome(s, lang, [f"the call did not run: {type(exc).__name__}: {exc}"], None)
    e = s.expect
    problems: list[str] = []
    variables = call.variables
    status_var, purpose_vars = result_variables(flow)
    if e.status is not None and variables.get(status_var) != e.status:
        problems.append(f"{status_var}: expected {e.status}, got {variables.get(status_var)}")
    for purpose, want in (e.outcomes or {}).items():
        var = purpose_vars.get(purpose)
        if var is None:  # the reader refuses it already; never a pass
            problems.append(f"purpose {purpose}: not asked by flow {flow.id}")
            continue
        got = variables.get(var)
        if got != want:
            problems.append(f"{var}: expected {want}, got {got}")
    for name, want in (e.variables or {}).items():
        if variables.get(name) != want:
            problems.append(f"{name}: expected {want}, got {variables.get(name)}")
    if e.heard is not None:
        got_heard = heard(call)
        compared = got_heard[: len(e.heard)] if e.heard_prefix else got_heard
        if compared != e.heard:
            what = f"heard (the first {len(e.heard)} prompts)" if e.heard_prefix else "heard"
            diff = difflib.unified_diff(e.heard, compared, "expected", "heard", lineterm="", n=99)
            problems.append(f"{what}:\n" + "\n".join(f"        {line}" for line in diff))
    if e.keys is not None:
        meanings = [k["meaning"] for k in (call.evidence or {}).get("keys", [])]
        if meanings != e.keys:
            problems.append(f"keys: expected {e.keys}, got {meanings}")
    return Outcome(s, lang, problems, call)


def test_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += sorted(path.glob(f"*{SUFFIX}"))
        else:
            out.append(path)
    return out


def run_tests(paths: list[str], out: TextIO, err: TextIO) -> int:
    """Every scenario of every test file. Exit status: 0 all passed, 1 a scenario failed, 2 a
    test file was refused (its problems on `err`) or none was found."""
    files = test_files(paths or ["flows"])
    if not files:
        print(f"consent-ivr test: no *{SUFFIX} files in {' '.join(paths or ['flows'])}", file=err)
        return 2
    passed = failed = broken = 0
    for path in files:
        try:
            tf = read_test_file(path)
        except FlowError as exc:
            broken += 1
            for d in exc.diagnostics:
                print(d, file=err)
            continue
        print(f"{path} ({tf.flow.label})", file=out)
        for s in tf.scenarios:
            result = run_scenario(tf.flow, s)
            if result.problems:
                failed += 1
                print(f"  FAIL {s.name} [{result.language}] (line {s.line})", file=out)
                for problem in result.problems:
                    print(f"      {problem}", file=out)
                print(
                    f"      replay: {replay_command(tf.flow.source_path, result.language, s.dtmf)}",
                    file=out,
                )
            else:
                passed += 1
                print(f"  ok   {s.name} [{result.language}]", file=out)
    summary = f"{passed} passed, {failed} failed"
    if broken:
        summary += f", {broken} file(s) refused"
    print(summary, file=out)
    return 2 if broken else 1 if failed else 0


def add_parsers(sub: Any) -> None:
    t = sub.add_parser(
        "test", help=f"run the scenarios of flow test files (*{SUFFIX}) in the simulator"
    )
    t.add_argument(
        "paths", nargs="*", metavar="PATH", help="test files or folders (default: flows)"
    )
    t.set_defaults(run=lambda a, out, err: run_tests(a.paths, out, err))
