"""`consent-ivr test [PATH...]`: flow test files — scenarios flow authors keep beside their flows —
run through the real process-AGI script against the simulated Asterisk, reported like pytest.

A test file is `<anything>.test.yaml`, next to the flow it tests::

    flow: call-tracking              # the flow: an id in this folder, or a path from this file
    scenarios:
      - name: accept after the notice
        lang: de                     # optional: the flow's first language
        dtmf: "1"                    # the --dtmf script of consent-ivr simulate
        expect:                      # every part optional; what is given must hold exactly
          status: granted            # CONSENT_STATUS (CONSENT_WITHDRAWAL for a withdrawal flow)
          outcomes: {ga_linkage: granted}      # CONSENT_<PURPOSE> per purpose
          variables: {CONSENT_REASON: key}     # any channel variable
          heard: [who, analytics, google, voluntary, rights, ask_ga_linkage, close_granted]
          keys: [accept]             # the meanings the evidence gives the keys, in order

`heard` lists the prompts played, in order: `who` played to its end, `who stopped by 2` stopped by
key 2, `who hung up` cut by the caller's hang-up, `who from 2.5 s` resumed 2.5 s in (and played
to its end; `... from 2.5 s stopped by 1` combines). A malformed file is refused with
`file:line:col` and nothing runs for it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_ivr.cli.simulate import SimulatedCall, simulate_call, transcript_rows
from consent_ivr.flow.diagnostics import Diagnostic, FlowError
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import FLOW_TEST_SUFFIX

SUFFIX = FLOW_TEST_SUFFIX
_TOP = {"flow", "scenarios"}
_SCENARIO = {"name", "lang", "dtmf", "expect"}
_EXPECT = {"status", "outcomes", "variables", "heard", "keys"}
_HEARD = re.compile(
    r"^(?P<id>[a-z][a-z0-9_]*)(?: from (?P<from>\d+(?:\.\d+)?) s)?"
    r"(?: (?:stopped by (?P<key>[0-9*#A-D])|(?P<hangup>hung up)))?$"
)


@dataclass
class Scenario:
    name: str
    line: int
    lang: str | None
    dtmf: str
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass
class TestFile:
    path: Path
    flow: Flow
    scenarios: list[Scenario]


@dataclass
class Outcome:
    scenario: Scenario
    language: str
    problems: list[str]
    call: SimulatedCall | None


class _Reader:
    """Reads a test file's node tree; every problem is a positioned diagnostic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.diags: list[Diagnostic] = []

    def error(self, node: Node | None, message: str, expected: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.diags.append(Diagnostic(str(self.path), line, col, message, expected))

    def mapping(self, node: Node, where: str, keys: set[str]) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{where} is not a mapping", "expected key: value lines")
            return None
        out: dict[str, Node] = {}
        for k, v in node.value:
            name = k.value if isinstance(k, ScalarNode) else ""
            if name not in keys:
                guess = difflib.get_close_matches(name, sorted(keys), n=1)
                hint = (
                    f"did you mean '{guess[0]}'?"
                    if guess
                    else f"expected one of: {', '.join(sorted(keys))}"
                )
                self.error(k, f"unknown key '{name}' in {where}", hint)
            else:
                out[name] = v
        return out

    def text(self, node: Node, where: str) -> str | None:
        if isinstance(node, ScalarNode):
            return str(node.value)
        self.error(node, f"{where} is not a single value", "expected text")
        return None

    def texts(self, node: Node, where: str) -> list[str] | None:
        if isinstance(node, SequenceNode) and all(isinstance(n, ScalarNode) for n in node.value):
            return [str(n.value) for n in node.value]
        self.error(node, f"{where} is not a list", "expected a list, e.g. [who, analytics]")
        return None

    def pairs(self, node: Node, where: str) -> dict[str, str] | None:
        if isinstance(node, MappingNode) and all(
            isinstance(k, ScalarNode) and isinstance(v, ScalarNode) for k, v in node.value
        ):
            return {str(k.value): str(v.value) for k, v in node.value}
        self.error(node, f"{where} is not a mapping of values", "expected {name: value, ...}")
        return None


def read_test_file(path: Path, flows_dir: Path | None = None) -> TestFile:
    """Read and check a test file and load its flow (as calls load it); raises `FlowError` with
    every problem found."""
    r = _Reader(path)
    try:
        root = yaml.compose(path.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise FlowError(
            [
                Diagnostic(
                    str(path),
                    line,
                    col,
                    f"cannot read the test file: {what}",
                    "expected YAML: flow: ..., scenarios: [...]",
                )
            ]
        ) from None
    top = r.mapping(root, "the test file", _TOP) if root is not None else None
    if top is None:
        if root is None:
            r.error(None, "the test file is empty", "expected flow: ... and scenarios: [...]")
        raise FlowError(r.diags)
    for key in ("flow", "scenarios"):
        if key not in top:
            r.error(root, f"missing '{key}'", "expected flow: <id> and scenarios: [...]")
    flow: Flow | None = None
    if "flow" in top and (name := r.text(top["flow"], "flow")) is not None:
        folder = flows_dir or path.parent
        target = (
            folder / f"{name}.yaml"
            if "/" not in name and not name.endswith(".yaml")
            else (path.parent / name)
        )
        try:
            flow = load_checked(target)[0]
        except FlowError as exc:
            r.error(
                top["flow"],
                f"the flow {name} does not load ({len(exc.errors)} error(s))",
                f"expected a valid flow; run consent-ivr lint {target}",
            )
    scenarios: list[Scenario] = []
    node = top.get("scenarios")
    if node is not None and not isinstance(node, SequenceNode):
        r.error(node, "scenarios is not a list", "expected a list of scenarios")
    elif node is not None:
        for i, item in enumerate(node.value, 1):
            s = _scenario(r, item, i, flow)
            if s is not None:
                scenarios.append(s)
    if r.diags or flow is None:
        raise FlowError(r.diags)
    return TestFile(path, flow, scenarios)


def _scenario(r: _Reader, item: Node, n: int, flow: Flow | None) -> Scenario | None:
    fields = r.mapping(item, f"scenario {n}", _SCENARIO)
    if fields is None:
        return None
    if "name" not in fields:
        r.error(item, f"scenario {n} has no name", "expected name: what the caller does")
    name = r.text(fields["name"], "name") if "name" in fields else f"scenario {n}"
    lang = r.text(fields["lang"], "lang") if "lang" in fields else None
    if lang is not None and flow is not None and lang not in flow.languages:
        r.error(
            fields["lang"],
            f"flow {flow.id} does not serve language '{lang}'",
            f"expected one of {', '.join(flow.languages)}",
        )
    dtmf = r.text(fields["dtmf"], "dtmf") if "dtmf" in fields else ""
    expect: dict[str, Any] = {}
    if "expect" in fields:
        e = r.mapping(fields["expect"], f"expect of '{name}'", _EXPECT) or {}
        for key, node in e.items():
            if key == "status":
                expect[key] = r.text(node, "status")
            elif key in ("outcomes", "variables"):
                expect[key] = r.pairs(node, key)
            else:
                expect[key] = r.texts(node, key)
        for entry in expect.get("heard") or []:
            if not _HEARD.match(entry):
                r.error(
                    e["heard"],
                    f"'{entry}' is not a prompt heard",
                    "expected '<prompt id>', '<id> stopped by 2', '<id> hung up' or"
                    " '<id> from 2.5 s'",
                )
    return Scenario(name or f"scenario {n}", item.start_mark.line + 1, lang, dtmf or "", expect)


def heard(call: SimulatedCall) -> list[str]:
    """The prompts the call played, as a test file writes them."""
    out = []
    for row in transcript_rows(call):
        if row["kind"] != "play" or row["missing"]:
            continue
        entry = str(row["prompt"])
        if row["from_sample"]:
            entry += f" from {row['from_sample'] / 8000:g} s"
        if row["interrupted_by"]:
            entry += f" stopped by {row['interrupted_by']}"
        elif row["hung_up"] or not row["completed"]:
            entry += " hung up"
        out.append(entry)
    return out


def run_scenario(flow: Flow, s: Scenario) -> Outcome:
    lang = s.lang or flow.default_language
    try:
        call = simulate_call(flow, s.dtmf, language=lang)
    except ValueError as exc:
        return Outcome(s, lang, [f"--dtmf: {exc}"], None)
    problems: list[str] = []
    variables = call.variables
    status_var = "CONSENT_WITHDRAWAL" if flow.is_withdrawal else "CONSENT_STATUS"
    if "status" in s.expect and variables.get(status_var) != s.expect["status"]:
        problems.append(
            f"{status_var}: expected {s.expect['status']}, got {variables.get(status_var)}"
        )
    prefix = "CONSENT_WITHDRAWAL_" if flow.is_withdrawal else "CONSENT_"
    for purpose, want in (s.expect.get("outcomes") or {}).items():
        got = variables.get(prefix + purpose.upper())
        if got != want:
            problems.append(f"{prefix}{purpose.upper()}: expected {want}, got {got}")
    for name, want in (s.expect.get("variables") or {}).items():
        if variables.get(name) != want:
            problems.append(f"{name}: expected {want}, got {variables.get(name)}")
    if "heard" in s.expect and (got_heard := heard(call)) != s.expect["heard"]:
        diff = difflib.unified_diff(s.expect["heard"], got_heard, "expected", "heard", lineterm="")
        problems.append("heard:\n" + "\n".join(f"        {line}" for line in diff))
    if "keys" in s.expect:
        meanings = [k["meaning"] for k in (call.evidence or {}).get("keys", [])]
        if meanings != s.expect["keys"]:
            problems.append(f"keys: expected {s.expect['keys']}, got {meanings}")
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
    """Every scenario of every test file; 1 if any fails or a file cannot be read, else 0."""
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
                    f"      replay: consent-ivr simulate {tf.flow.source_path} --lang"
                    f" {result.language} --dtmf='{s.dtmf}'",
                    file=out,
                )
            else:
                passed += 1
                print(f"  ok   {s.name} [{result.language}]", file=out)
    summary = f"{passed} passed, {failed} failed"
    if broken:
        summary += f", {broken} file(s) could not be read"
    print(summary, file=out)
    return 1 if failed or broken else 0


def add_parsers(sub: Any) -> None:
    t = sub.add_parser(
        "test", help=f"run the scenarios of flow test files (*{SUFFIX}) in the simulator"
    )
    t.add_argument(
        "paths", nargs="*", metavar="PATH", help="test files or folders (default: flows)"
    )
    t.set_defaults(run=lambda a, out, err: run_tests(a.paths, out, err))
