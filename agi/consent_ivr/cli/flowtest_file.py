"""Read a flow test file (`<anything>.test.yaml`) and check it against the flow it names, reporting
every problem at once as `file:line:col: error: what; expected …` (the flow loader's form).

A test file::

    flow: call-tracking              # a flow id (beside this file, else in the flows folder),
                                     # or a path from this file's folder
    scenarios:
      - name: accept after the notice
        lang: de                     # optional: the flow's first language
        dtmf: "1"                    # the --dtmf script of consent-ivr simulate
        expect:                      # every part optional; what is given must hold exactly
          status: granted            # CONSENT_STATUS (CONSENT_WITHDRAWAL for a withdrawal flow)
          outcomes: {ga_linkage: granted}      # CONSENT_<PURPOSE> per purpose
          variables: {CONSENT_REASON: key}     # a consent variable the flow sets
          heard: [who, analytics, google, voluntary, rights, ask_ga_linkage stopped by 1,
            close_granted]           # the prompts played, in order (a last `...`: and more)
          keys: [accept]             # the meanings the evidence gives the keys, in order

Like the flow loader, the YAML is composed (not constructed), so every value keeps its line and
column. Whatever a scenario claims is checked against the flow before anything runs: its language
is one the flow serves, its DTMF script parses, its status, outcomes, variables, prompt ids and key
meanings are ones this flow can produce. A wrong expectation that could never hold is a load
error, not a failure found after a call. Running the scenarios is `cli/flowtest.py`'s job.
(About 500 lines, most of them the wording of the diagnostics: one job, one reader.)
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_ivr.cli.simulate import UnservedLanguage, pick_language
from consent_ivr.engine.events import KEY_MEANINGS, Outcome, Reason, withdrawal_word
from consent_ivr.flow.diagnostics import Diagnostic, FlowError
from consent_ivr.flow.model import Flow
from consent_ivr.flow.schema import is_null, suggestion
from consent_ivr.harness.dtmf import DTMF_KEYS, parse_dtmf_script
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import FLOW_TEST_SUFFIX, flow_files, flows_dir

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOP = ("flow", "scenarios")
_SCENARIO = ("name", "lang", "dtmf", "expect")
_EXPECT = ("status", "outcomes", "variables", "heard", "keys")
_HEARD = re.compile(
    r"^(?P<id>[A-Za-z][A-Za-z0-9_]*)(?: from (?P<from>\d+(?:\.\d+)?) s)?"
    r"(?: (?:stopped by (?P<key>\S)|(?P<hangup>hung up)))?$"
)
#: The last entry of `heard` that means "and whatever follows": the list is a prefix.
ANY_REST = "..."
_HEARD_FORMS = (
    "expected '<prompt id>', '<id> stopped by 2', '<id> hung up', '<id> from 1.5 s' or a last '...'"
)
#: Variables any call of a flow sets besides its status and per-purpose outcomes.
_COMMON_VARIABLES = ("CONSENT_REASON", "CONSENT_RECORD_ID", "CONSENT_FLOW", "CONSENT_NOTICE_SHA256")
#: A `#` after a space starts a YAML comment: `stopped by #` unquoted loses its key.
_UNQUOTED_HASH = re.compile(r"\bby #")
_HASH_HINT = " (a '#' after a space starts a YAML comment: quote the entry, 'x stopped by #')"


@dataclass
class Expect:
    """What must hold after a scenario's call; None = not checked."""

    status: str | None = None
    outcomes: dict[str, str] | None = None
    variables: dict[str, str] | None = None
    #: The prompts heard, each in the form `heard_entry` writes.
    heard: list[str] | None = None
    #: `heard` ended with `...`: the prompts heard must begin with it.
    heard_prefix: bool = False
    keys: list[str] | None = None


@dataclass
class Scenario:
    name: str
    line: int
    #: The language to call in (the flow's own spelling of it), None = the flow's first.
    lang: str | None
    dtmf: str
    expect: Expect = field(default_factory=Expect)


@dataclass
class TestFile:
    path: Path
    flow: Flow
    scenarios: list[Scenario]


def result_variables(flow: Flow) -> tuple[str, dict[str, str]]:
    """The channel variables a call of `flow` decides: its status variable and each asked
    purpose's, by purpose (the engine's names: `Purpose.variable`; a withdrawal flow's
    ``CONSENT_WITHDRAWAL`` and ``CONSENT_WITHDRAWAL_<PURPOSE>``)."""
    if flow.is_withdrawal:
        status = "CONSENT_WITHDRAWAL"
        return status, {q.purpose: f"{status}_{q.purpose.upper()}" for q in flow.questions}
    return "CONSENT_STATUS", {q.purpose: flow.purpose(q.purpose).variable for q in flow.questions}


def heard_entry(
    prompt: str, from_s: float = 0.0, key: str | None = None, hung_up: bool = False
) -> str:
    """One prompt heard as a test file writes it: `who`, `who from 1.5 s`, `who stopped by 2`,
    `who hung up`, `who from 1.5 s stopped by 1`. The resume point is to 0.1 s, as the
    transcript of `consent-ivr simulate` shows it."""
    resumed = round(from_s, 1)  # a resume under 0.05 s reads as from the start, both ways
    entry = prompt + (f" from {resumed:g} s" if resumed else "")
    if key:
        return f"{entry} stopped by {key}"
    return f"{entry} hung up" if hung_up else entry


class _Reader:
    """Reads a test file's node tree; every problem is a positioned diagnostic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.diags: list[Diagnostic] = []

    def error(self, node: Node | None, message: str, expected: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.diags.append(Diagnostic(str(self.path), line, col, message, expected))

    def unknown(self, node: Node, what: str, word: str, known: list[str], where: str) -> None:
        """`word` is not among `known`: say so, with the closest or all of them."""
        self.error(
            node, f"{what} '{word}' {where}", suggestion(word, known, "expected nothing here")
        )

    def mapping(self, node: Node, where: str, keys: tuple[str, ...]) -> dict[str, Node] | None:
        if not isinstance(node, MappingNode):
            self.error(node, f"{where} is not a mapping", "expected key: value lines")
            return None
        out: dict[str, Node] = {}
        for k, v in node.value:
            name = str(k.value) if isinstance(k, ScalarNode) else ""
            if name in out:
                first = out[name].start_mark.line + 1
                self.error(
                    k,
                    f"duplicate key '{name}' in {where} (first at line {first})",
                    "expected each key once",
                )
            elif name not in keys:
                self.unknown(k, "unknown key", name, list(keys), f"in {where}")
            else:
                out[name] = v
        return out

    def text(self, node: Node, where: str) -> str | None:
        if isinstance(node, ScalarNode) and not is_null(node):
            return str(node.value)
        self.error(
            node,
            f"{where} is {'empty' if isinstance(node, ScalarNode) else 'not a single value'}",
            "expected text",
        )
        return None

    def items(self, node: Node, where: str, example: str) -> list[tuple[str, Node]] | None:
        if isinstance(node, SequenceNode):
            out = []
            for item in node.value:
                value = self.text(item, f"an item of {where}")
                if value is not None:
                    out.append((value, item))
            return out
        self.error(node, f"{where} is not a list", f"expected a list, e.g. {example}")
        return None

    def pairs(
        self, node: Node, where: str, example: str
    ) -> list[tuple[str, str, Node, Node]] | None:
        if isinstance(node, MappingNode):
            out = []
            for k, v in node.value:
                name, value = (
                    self.text(k, f"a name in {where}"),
                    self.text(v, f"a value in {where}"),
                )
                if name is not None and value is not None:
                    out.append((name, value, k, v))
            return out
        self.error(node, f"{where} is not a mapping", f"expected {example}")
        return None


def find_flow(
    name: str, test_file: Path, folder: Path | None = None
) -> tuple[Path | None, str, str]:
    """Where the flow a test file names lives: a flow id is `<id>.yaml` beside the test file, else
    in the flows folder (`folder`, default $CONSENT_IVR_FLOWS or flows/); a name with `/` or ending
    in .yaml/.yml is a path from the test file's folder. Returns (path, "", "") or (None, what is
    wrong, what was expected), naming every place looked."""
    here = test_file.parent
    if "/" in name or name.endswith((".yaml", ".yml")):
        target = here / name
        if target.is_file():
            return target, "", ""
        return None, f"no flow file {target}", "expected a path from the test file's folder"
    folders = [here]
    flows = folder if folder is not None else flows_dir()
    if flows.resolve() != here.resolve():
        folders.append(flows)
    for f in folders:
        if (f / f"{name}.yaml").is_file():
            return f / f"{name}.yaml", "", ""
    looked = f"beside the test file ({here / f'{name}.yaml'})"
    if len(folders) > 1:
        looked += f" or in the flows folder ({flows / f'{name}.yaml'})"
    known: list[str] = []
    for f in folders:
        with contextlib.suppress(OSError):
            known += [Path(p).stem for p in flow_files(str(f)) if Path(p).stem not in known]
    expected = suggestion(
        name,
        sorted(known),
        "expected a flow id (its file name without .yaml) or a path from the test file",
    )
    return None, f"no flow '{name}' {looked}", expected


def read_test_file(path: Path, flows_folder: Path | None = None) -> TestFile:
    """Read and check a test file and load its flow (as calls load it: every lint error rule);
    raises `FlowError` with every problem found."""
    r = _Reader(path)
    if not path.name.endswith(FLOW_TEST_SUFFIX):
        raise FlowError(
            [
                Diagnostic(
                    str(path),
                    1,
                    1,
                    f"{path} is not a flow test file",
                    f"expected a *{FLOW_TEST_SUFFIX} file (consent-ivr lint checks a flow)",
                )
            ]
        )
    try:
        root = yaml.compose(path.read_bytes(), Loader=_Loader)
    except OSError as exc:
        raise FlowError(
            [
                Diagnostic(
                    str(path),
                    1,
                    1,
                    f"cannot read the test file ({exc.strerror or exc})",
                    f"expected a readable *{FLOW_TEST_SUFFIX} file",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise FlowError([_yaml_error(path, exc)]) from None
    if root is None:
        raise FlowError(
            [
                Diagnostic(
                    str(path),
                    1,
                    1,
                    "the test file is empty",
                    "expected flow: <id> and scenarios: [...]",
                )
            ]
        )
    top = r.mapping(root, "the test file", _TOP)
    if top is None:
        raise FlowError(r.diags)
    for key in _TOP:
        if key not in top:
            r.error(root, f"missing '{key}'", "expected flow: <id> and scenarios: [...]")
    flow: Flow | None = None
    if "flow" in top and (name := r.text(top["flow"], "flow")) is not None:
        target, problem, expected = find_flow(name, path, flows_folder)
        if target is None:
            r.error(top["flow"], problem, expected)
        else:
            try:
                flow = load_checked(target)[0]
            except FlowError as exc:
                first = exc.errors[0] if exc.errors else exc.diagnostics[0]
                r.error(
                    top["flow"],
                    f"the flow {target} does not load ({len(exc.errors)} error(s); the first,"
                    f" line {first.line}: {first.message})",
                    f"expected a valid flow; run consent-ivr lint {target}",
                )
    scenarios: list[Scenario] = []
    node = top.get("scenarios")
    if node is not None and not isinstance(node, SequenceNode):
        r.error(node, "scenarios is not a list", "expected a list of scenarios: - name: ...")
    elif node is not None and not node.value:
        r.error(node, "scenarios is empty", "expected at least one scenario: - name: ...")
    elif node is not None:
        names: dict[str, int] = {}
        for i, item in enumerate(node.value, 1):
            s = _scenario(r, item, i, flow)
            if s is None:
                continue
            if s.name in names:
                r.error(
                    item,
                    f"a second scenario named '{s.name}' (first at line {names[s.name]})",
                    "expected a name of its own",
                )
            names.setdefault(s.name, s.line)
            scenarios.append(s)
    if r.diags or flow is None:
        raise FlowError(sorted(r.diags, key=lambda d: (d.line, d.col)))
    return TestFile(path, flow, scenarios)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    what = " ".join(str(getattr(exc, "problem", None) or exc).split())
    context = getattr(exc, "context_mark", None)
    hint = ""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    first = context.line if context is not None else line - 1
    for n in range(max(0, first), min(len(lines), line)):
        if _UNQUOTED_HASH.search(lines[n].split('"')[0].split("'")[0]):
            line, col, hint = n + 1, lines[n].index(" #") + 2, _HASH_HINT
            break
    return Diagnostic(
        str(path),
        line,
        col,
        f"YAML syntax error: {what}{hint}",
        "expected YAML: flow: ..., scenarios: [...]",
    )


def _scenario(r: _Reader, item: Node, n: int, flow: Flow | None) -> Scenario | None:
    fields = r.mapping(item, f"scenario {n}", _SCENARIO)
    if fields is None:
        return None
    if "name" not in fields:
        r.error(item, f"scenario {n} has no name", "expected name: what the caller does")
    given = r.text(fields["name"], "name") if "name" in fields else None
    if given is not None and not given.strip():
        r.error(fields["name"], "name is empty", "expected name: what the caller does")
    name = (given or "").strip() or f"scenario {n}"
    lang = r.text(fields["lang"], "lang") if "lang" in fields else None
    if lang is not None and flow is not None:
        try:
            lang = pick_language(flow, lang)  # the rule of simulate, demo and graph
        except UnservedLanguage:
            r.error(
                fields["lang"],
                f"flow {flow.id} does not serve language '{lang}'",
                f"expected one of {', '.join(flow.languages)}",
            )
            lang = None
    dtmf = ""
    if "dtmf" in fields:
        node = fields["dtmf"]
        if isinstance(node, ScalarNode) and is_null(node):
            r.error(
                node,
                "dtmf is empty",
                "expected a script in quotes, e.g. dtmf: \"1\" (a '#' after a space starts a"
                ' YAML comment: write "#")',
            )
        elif (text := r.text(node, "dtmf")) is not None:
            try:
                parse_dtmf_script(text)
                dtmf = text
            except ValueError as exc:
                r.error(
                    node,
                    f"dtmf '{text}' does not parse: {exc}",
                    'expected the --dtmf script of consent-ivr simulate, e.g. "1@5.0,-,2"',
                )
    expect = Expect()
    if "expect" in fields:
        e = r.mapping(fields["expect"], f"expect of '{name}'", _EXPECT) or {}
        _expect(r, e, expect, flow)
    return Scenario(name, item.start_mark.line + 1, lang, dtmf, expect)


def _expect(r: _Reader, e: dict[str, Node], out: Expect, flow: Flow | None) -> None:
    """Read `expect:`; with a flow, refuse what that flow can never produce."""
    withdrawal = flow is not None and flow.is_withdrawal
    outcome_words = [withdrawal_word(o.value) if withdrawal else o.value for o in Outcome]
    statuses = list(outcome_words)
    if flow is not None and len(flow.questions) > 1:
        statuses.append("partial")
    status_var, purpose_vars = (
        result_variables(flow) if flow is not None else ("CONSENT_STATUS", {})
    )
    purposes = list(purpose_vars)
    closed = {status_var: statuses, "CONSENT_REASON": [x.value for x in Reason]}
    closed.update({var: outcome_words for var in purpose_vars.values()})
    if "status" in e and (status := r.text(e["status"], "status")) is not None:
        if flow is not None and status not in statuses:
            r.unknown(
                e["status"],
                "status",
                status,
                statuses,
                f"cannot occur in flow {flow.id} ({status_var})",
            )
        out.status = status
    if (
        "outcomes" in e
        and (got := r.pairs(e["outcomes"], "outcomes", "{purpose: outcome, ...}")) is not None
    ):
        out.outcomes = {}
        for purpose, value, k, v in got:
            if flow is not None and purpose not in purposes:
                r.unknown(k, "purpose", purpose, purposes, f"is not asked by flow {flow.id}")
            elif flow is not None and value not in outcome_words:
                r.unknown(v, f"outcome of {purpose}", value, outcome_words, "cannot occur")
            out.outcomes[purpose] = value
    if (
        "variables" in e
        and (got := r.pairs(e["variables"], "variables", "{CONSENT_REASON: key, ...}")) is not None
    ):
        out.variables = {}
        names = [status_var, *purpose_vars.values(), *_COMMON_VARIABLES]
        for var, value, k, v in got:
            if flow is not None and var not in names:
                r.unknown(k, "variable", var, names, f"is not set by flow {flow.id}")
            elif flow is not None and var in closed and value not in closed[var]:
                r.unknown(v, f"value of {var}", value, closed[var], "cannot occur")
            out.variables[var] = value
    if "heard" in e and (got_heard := r.items(e["heard"], "heard", "[who, analytics]")) is not None:
        out.heard = _heard(r, got_heard, flow)
        if got_heard and got_heard[-1][0] == ANY_REST:
            out.heard_prefix = True
    if (
        "keys" in e
        and (got_keys := r.items(e["keys"], "keys", "[early_accept, accept]")) is not None
    ):
        meanings = list(KEY_MEANINGS) if flow is None else _meanings(flow)
        for meaning, node in got_keys:
            if meaning not in meanings:
                where = (
                    f"cannot occur in flow {flow.id}"
                    if flow is not None and meaning in KEY_MEANINGS
                    else "does not exist"
                )
                r.unknown(node, "key meaning", meaning, meanings, where)
        out.keys = [m for m, _ in got_keys]


def _meanings(flow: Flow) -> list[str]:
    """The key meanings a call of `flow` can record."""
    keys = flow.choice.keys
    return [
        m
        for m in KEY_MEANINGS
        if not (m == "repeat" and not keys.repeat)
        and not (m == "full_notice" and not (keys.full_notice and flow.full_notice))
        and not (m == "early_accept" and flow.choice.accept_during_notice)
    ]


def _heard(r: _Reader, entries: list[tuple[str, Node]], flow: Flow | None) -> list[str]:
    """The `heard` entries in `heard_entry`'s form (`1.50` -> `1.5`, `stopped by a` -> `A`)."""
    ids = [p.id for p in flow.all_prompts()] if flow is not None else []
    out: list[str] = []
    for i, (entry, node) in enumerate(entries):
        if entry == ANY_REST:
            if i != len(entries) - 1:
                r.error(
                    node,
                    "'...' before the end of heard",
                    "expected '...' only as the last entry (and whatever follows)",
                )
            continue
        m = _HEARD.match(" ".join(entry.split()))
        if m is None:
            hint = _HASH_HINT if entry.rstrip().endswith("stopped by") else ""
            r.error(node, f"'{entry}' is not a prompt heard{hint}", _HEARD_FORMS)
            continue
        key = m.group("key")
        if key is not None and key.upper() not in DTMF_KEYS:
            r.error(
                node,
                f"'{key}' in '{entry}' is not a phone key",
                f"expected one of {' '.join(DTMF_KEYS)}",
            )
            continue
        if flow is not None and m.group("id") not in ids:
            r.unknown(node, "prompt", m.group("id"), ids, f"is not in flow {flow.id}")
        out.append(
            heard_entry(
                m.group("id"),
                float(m.group("from") or 0),
                key.upper() if key else None,
                bool(m.group("hangup")),
            )
        )
    return out


__all__ = [
    "ANY_REST",
    "Expect",
    "Scenario",
    "TestFile",
    "find_flow",
    "heard_entry",
    "read_test_file",
]
