"""The shipped dialplan kit (asterisk-config/*.conf) is valid Asterisk 22; the docs name it truly.

asterisklint (the pinned ``asterisklint-jjs``, checking against Asterisk 22) reads
extensions_consent.conf the way Asterisk does, through an extensions.conf that ``#include``s it,
and reports nothing; a broken copy makes it fail, naming the line. It has no checker for
pjsip.conf, so that file is read section by section here. The structure the docs promise (one
continuation for every outcome, the CDR fields before the bridge, the hangup handler's target,
the test phone's lines) is read from the file, and every context, extension, variable and CDR
field the README and docs name exists in the files, and the other way round.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "asterisk-config"
DIALPLAN = CONFIG / "extensions_consent.conf"
PJSIP = CONFIG / "pjsip.conf"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OPERATIONS = ROOT / "docs" / "operations.md"

ASTERISK_VERSION = "22"
#: Runs asterisklint's own entry point with this interpreter (the one with the test extra).
ASTERISKLINT = [
    sys.executable,
    "-c",
    "import os, sys; from asterisklint.main import main; sys.exit(main(sys.argv[1:], os.environ))",
]

_EXTEN = re.compile(r"^\s*exten\s*=>\s*([^,]+),([^,]+),(.*)$")
_SAME = re.compile(r"^\s*same\s*=>\s*([^,]+),(.*)$")
_CONTEXT = re.compile(r"^\[([^\]]+)\]")
_APP = re.compile(r"^(\w+)\((.*)\)$")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")


# ------------------------------------------------------------------------------ reading the kit
@dataclass(frozen=True)
class Step:
    context: str
    exten: str
    priority: str  # "1", "n", "n(label)"
    app: str
    data: str
    line: int

    @property
    def label(self) -> str | None:
        m = re.search(r"\((\w+)\)", self.priority)
        return m.group(1) if m else None


def strip_comment(line: str) -> str:
    """A config line without its ';' comment (Asterisk: an unescaped ';' starts one)."""
    return re.split(r"(?<!\\);", line, maxsplit=1)[0].rstrip()


def read_dialplan(text: str) -> dict[str, list[Step]]:
    """Context -> its steps, in file order, as pbx_config reads `exten =>` and `same =>`."""
    contexts: dict[str, list[Step]] = {}
    context = exten = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = strip_comment(raw)
        if m := _CONTEXT.match(line):
            context = m.group(1)
            contexts.setdefault(context, [])
            continue
        if m := _EXTEN.match(line):
            exten, priority, rest = m.group(1).strip(), m.group(2).strip(), m.group(3)
        elif m := _SAME.match(line):
            priority, rest = m.group(1).strip(), m.group(2)
        else:
            continue
        app = _APP.match(rest.strip())
        assert app, f"{DIALPLAN.name}:{number}: expected App(data), got {rest!r}"
        contexts[context].append(Step(context, exten, priority, app[1], app[2], number))
    return contexts


def dialplan() -> dict[str, list[Step]]:
    return read_dialplan(DIALPLAN.read_text(encoding="utf-8"))


def code_lines(path: Path) -> list[str]:
    return [strip_comment(line).strip() for line in path.read_text(encoding="utf-8").splitlines()]


def read_sections(path: Path) -> list[tuple[str, dict[str, str]]]:
    """A pjsip.conf as Asterisk's config reader sees it: sections in order (a name may repeat,
    one per object type), each with its `key=value` options."""
    sections: list[tuple[str, dict[str, str]]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = strip_comment(raw).strip()
        if not line:
            continue
        if m := _CONTEXT.match(line):
            sections.append((m.group(1), {}))
        else:
            key, sep, value = line.partition("=")
            assert sep and sections, f"{path.name}:{number}: expected [section] or key=value"
            sections[-1][1][key.strip()] = value.lstrip(">").strip()
    return sections


def run_asterisklint(extensions_conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ASTERISKLINT, "dialplan-check", "--asterisk-version", ASTERISK_VERSION, extensions_conf],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ALINT_IGNORE": ""},
        cwd=extensions_conf.parent,
    )


def extensions_conf_including(tmp_path: Path, included: Path) -> Path:
    """An extensions.conf as operations.md says to write it: its own [general] and [globals],
    then the kit by #include."""
    root = tmp_path / "extensions.conf"
    root.write_text(
        f'[general]\nstatic=yes\nwriteprotect=yes\n\n[globals]\n\n#include "{included}"\n',
        encoding="utf-8",
    )
    return root


# ---------------------------------------------------------------------------------- asterisklint
def test_asterisklint_reports_nothing_in_the_shipped_dialplan(tmp_path: Path) -> None:
    result = run_asterisklint(extensions_conf_including(tmp_path, DIALPLAN))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_asterisklint_reads_the_whole_kit_through_the_include(tmp_path: Path) -> None:
    root = extensions_conf_including(tmp_path, DIALPLAN)
    shown = subprocess.run(
        [*ASTERISKLINT, "dialplan-show", root], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    seen = set(re.findall(r"\[ Context '([^']+)'", shown.stdout))
    assert seen == set(dialplan())


BREAKAGES = {
    # (what is broken in the copy, the text replaced, its replacement, the class reported)
    "an application misspelt": ("Verbose(2,consent-ivr gate closed", "Verbos(2,x", "E_APP_MISSING"),
    "a Goto to a missing context": (
        "Goto(consent-continue,${EXTEN},1)",
        "Goto(consent-continu,${EXTEN},1)",
        "E_DP_GOTO_NOCONTEXT",
    ),
    "a function misspelt": (
        "CHANNEL(hangup_handler_push)",
        "CHANEL(hangup_handler_push)",
        "E_FUNC_MISSING",
    ),
    "an unbalanced variable in a condition": (
        '$["${AGISTATUS}" = "FAILURE"',
        '$["${AGISTATUS" = "FAILURE"',
        "E_APP_PARSE_ERROR",
    ),
    "a Dial option Asterisk 22 does not have": (
        "Dial(PJSIP/sales,30)",
        "Dial(PJSIP/sales,30,Z)",
        "E_APP_ARG_BADOPT",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_asterisklint_fails_on_a_broken_copy_naming_the_line(tmp_path: Path, breakage: str) -> None:
    old, new, reported = BREAKAGES[breakage]
    text = DIALPLAN.read_text(encoding="utf-8")
    assert old in text, f"the kit no longer has {old!r}: update the breakage"
    copy = tmp_path / "broken" / DIALPLAN.name
    copy.parent.mkdir()
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    line = text[: text.index(old)].count("\n") + 1
    result = run_asterisklint(extensions_conf_including(tmp_path, copy))
    assert result.returncode == 1
    assert f"{copy}:{line} {reported}:" in result.stdout + result.stderr


# ------------------------------------------------------------------------------ the structure
def consent_contexts() -> dict[str, list[Step]]:
    return {name: steps for name, steps in dialplan().items() if name.startswith("consent-inbound")}


def test_every_consent_context_continues_the_same_way_whatever_the_outcome() -> None:
    contexts = consent_contexts()
    assert set(contexts) == {"consent-inbound", "consent-inbound-fastagi", "consent-inbound-hagi"}
    for name, steps in contexts.items():
        apps = {step.app for step in steps}
        assert apps <= {"Gosub", "AGI", "GotoIf", "Goto", "Verbose"}, name  # no Dial, no Hangup
        leaving = [step.data for step in steps if step.app == "Goto"]
        assert leaving and set(leaving) == {"consent-continue,${EXTEN},1"}, name
        assert steps[-1].app == "Goto", f"{name} must end in its Goto(consent-continue,...)"
        # The one condition: FastAGI failed before touching the call -> the process script.
        for step in steps:
            if step.app == "GotoIf":
                assert (
                    step.data == '$["${AGISTATUS}" = "FAILURE" & "${CONSENT_STATUS}" = ""]?fallback'
                )
                fallback = [s for s in steps if s.label == "fallback"]
                assert fallback and fallback[0].line > step.line
        agis = [step.data for step in steps if step.app == "AGI"]
        assert agis[-1] == "consent-ivr.agi,call-tracking", name


def test_fastagi_contexts_use_agi_and_hagi_urls_of_the_call_tracking_flow() -> None:
    agis = {
        name: [s.data for s in steps if s.app == "AGI"]
        for name, steps in consent_contexts().items()
    }
    assert agis["consent-inbound-fastagi"][0] == "agi://127.0.0.1:4573/call-tracking"
    hagi = agis["consent-inbound-hagi"][0]
    host = re.fullmatch(r"hagi://([^/:]+)/call-tracking", hagi)
    assert host, "a port in a hagi:// URL turns the SRV lookup off"
    srv = f"_agi._tcp.{host.group(1)}."
    assert srv in DIALPLAN.read_text(encoding="utf-8"), "the SRV example names another host"


def test_the_outcome_is_written_to_the_cdr_before_every_bridge() -> None:
    contexts = dialplan()
    for exten in {s.exten for s in contexts["consent-continue"]}:
        steps = [s for s in contexts["consent-continue"] if s.exten == exten]
        assert steps[0].app == "Gosub" and steps[0].data == "consent-cdr,s,1", exten
        assert any(s.app in {"Dial", "Echo"} for s in steps[1:]), exten
    fields = [
        re.match(r"CDR\((\w+)\)=\$\{(\w+)\}", s.data)
        for s in contexts["consent-cdr"]
        if s.app == "Set"
    ]
    assert all(fields)
    written = {m.group(2): m.group(1) for m in fields if m}
    assert written["CONSENT_STATUS"] == "consent_status"
    assert written["CONSENT_GA_LINKAGE"] == "consent_ga_linkage"
    assert written["CONSENT_RECORD_ID"] == "consent_record_id"


def test_the_hangup_handler_is_pushed_before_the_agi_and_returns() -> None:
    contexts = dialplan()
    start = contexts["consent-start"]
    pushes = [s.data for s in start if s.data.startswith("CHANNEL(hangup_handler_push)=")]
    assert len(pushes) == 1
    target = re.fullmatch(r"CHANNEL\(hangup_handler_push\)=([\w-]+),(\w+),1\(.*\)", pushes[0])
    assert target, "hangup_handler_push takes context,exten,priority(args)"
    handler = [s for s in contexts[target.group(1)] if s.exten == target.group(2)]
    assert handler and handler[-1].app == "Return"
    for name, steps in consent_contexts().items():
        assert steps[0].app == "Gosub" and steps[0].data.startswith("consent-start,s,1("), name
        assert steps[1].app == "AGI", f"{name}: the handler must be pushed before the AGI"
    # The handler's steps: the gate first, then the tracking step with a process-AGI fallback.
    agis = [s.data for s in handler if s.app == "AGI"]
    assert agis == ["${ARG1}/track", "consent-ivr.agi,track"]
    assert handler[0].app == "Gosub" and handler[0].data.startswith("consent-ga-step,")


def test_the_google_linked_step_runs_only_when_the_gate_says_open() -> None:
    steps = dialplan()["consent-ga-step"]
    agis = [s.data for s in steps if s.app == "AGI"]
    assert agis == ["${ARG1}/gate?purpose=ga_linkage", "consent-ivr.agi,gate,ga_linkage"]
    assert steps[0].data == "CONSENT_GATE_GA_LINKAGE=", "a gate value from another leg is forgotten"
    opens = [s for s in steps if s.app == "GotoIf" and "?open" in s.data]
    assert [s.data for s in opens] == ['$["${CONSENT_GATE_GA_LINKAGE}" = "open"]?open']


def test_the_withdrawal_line_runs_the_withdrawal_flow_on_either_transport() -> None:
    agis = [s.data for s in dialplan()["consent-withdrawal"] if s.app == "AGI"]
    assert agis == ["agi://127.0.0.1:4573/withdrawal", "consent-ivr.agi,withdrawal"]
    assert (ROOT / "flows" / "withdrawal.yaml").is_file()


def test_agisighup_and_agiexitonhangup_are_left_to_asterisks_defaults() -> None:
    code = "\n".join(code_lines(DIALPLAN))
    assert "AGISIGHUP" not in code and "AGIEXITONHANGUP" not in code
    text = DIALPLAN.read_text(encoding="utf-8")
    assert "AGISIGHUP" in text and "AGIEXITONHANGUP" in text  # and the comment says why


# ------------------------------------------------------------------------------------ pjsip.conf
def test_pjsip_conf_defines_a_test_endpoint_that_dials_the_consent_contexts() -> None:
    sections = read_sections(PJSIP)
    by_type = {(name, options.get("type")): options for name, options in sections}
    assert all(options.get("type") for _, options in sections), "every section has a type"
    assert len(by_type) == len(sections), "a name repeats only with another type"
    transport = by_type[("transport-udp", "transport")]
    assert transport["protocol"] == "udp" and transport["bind"].endswith(":5060")
    endpoint = by_type[("consent-test", "endpoint")]
    assert ("consent-test", "aor") in by_type and endpoint["aors"] == "consent-test"
    assert (endpoint["auth"], "auth") in by_type and endpoint["transport"] == "transport-udp"
    assert endpoint["dtmf_mode"] == "rfc4733"  # the consent keys arrive as DTMF events
    auth = by_type[(endpoint["auth"], "auth")]
    assert auth["username"] == "consent-test"
    assert auth["password"].startswith("CHANGE-ME"), "an obviously example password"
    phone = [s for s in dialplan()[endpoint["context"]]]
    targets = {s.exten: s.data for s in phone if s.app == "Goto"}
    assert targets == {
        "100": "consent-inbound,${EXTEN},1",
        "101": "consent-inbound-fastagi,${EXTEN},1",
        "102": "consent-inbound-hagi,${EXTEN},1",
        "200": "consent-withdrawal,${EXTEN},1",
    }


# --------------------------------------------------------------------------- the docs and the kit
def kit_section() -> str:
    page = OPERATIONS.read_text(encoding="utf-8")
    m = re.search(r"^## The dialplan kit\n(.*?)(?=^## )", page, re.M | re.S)
    assert m, "docs/operations.md lost its section 'The dialplan kit'"
    return m.group(1)


def kit_table() -> dict[str, set[str]]:
    """The section's table: context -> the extensions it says the context has."""
    rows = re.findall(r"^\| `([\w-]+)` \| ((?:`[^`]+` ?)+) \|", kit_section(), re.M)
    return {context: set(_CODE_SPAN.findall(extens)) for context, extens in rows}


def spans(pages: list[Path]) -> set[str]:
    found: set[str] = set()
    for page in pages:
        found |= set(_CODE_SPAN.findall(page.read_text(encoding="utf-8")))
    return found


def test_the_docs_table_lists_every_context_with_its_extensions() -> None:
    table = kit_table()
    actual = {name: {s.exten for s in steps} for name, steps in dialplan().items()}
    assert table == actual


def test_every_context_variable_and_cdr_field_the_kit_uses_is_named_in_the_docs() -> None:
    code = "\n".join(code_lines(DIALPLAN))
    named = spans(PAGES)
    named_text = "\n".join(named)
    for context in dialplan():
        assert context in named, f"no page names the context {context}"
    for variable in sorted(set(re.findall(r"\b(CONSENT_[A-Z0-9_]+)\b", code))):
        assert re.search(rf"\b{variable}\b", named_text), f"no page names {variable}"
    for field in sorted(set(re.findall(r"CDR\((consent_\w+)\)=", code))):
        assert f"CDR({field})" in named, f"no page names CDR({field})"


def test_every_context_variable_and_cdr_field_the_docs_name_exists_in_the_files() -> None:
    code = "\n".join(code_lines(DIALPLAN))
    contexts = set(dialplan())
    pjsip = {name for name, _ in read_sections(PJSIP)}
    for span in spans(PAGES):
        if re.fullmatch(r"consent-[a-z-]+", span) and span != "consent-ivr":
            assert span in contexts | pjsip, f"the docs name {span}, no .conf has it"
    for span in _CODE_SPAN.findall(kit_section()):
        if re.fullmatch(r"(CONSENT|TRACKING)_[A-Z0-9_]+|AGISTATUS", span):
            assert re.search(rf"\b{span}\b", code), (
                f"the kit section names {span}, the kit does not use it"
            )
        if m := re.fullmatch(r"CDR\((\w+)\)", span):
            assert f"CDR({m.group(1)})=" in code, (
                f"the kit section names {span}, the kit sets no such field"
            )


def dialplan_lines_of(page: Path) -> list[str]:
    lines = []
    for block in _FENCE.findall(page.read_text(encoding="utf-8")):
        for line in block.splitlines():
            code = strip_comment(line).strip()
            if re.match(r"(exten|same)\s*=>|\[[\w-]+\]$", code):
                lines.append(code)
    return lines


def test_every_dialplan_line_the_readme_and_docs_show_is_a_line_of_the_kit() -> None:
    kit = set(code_lines(DIALPLAN))
    shown = {page.name: dialplan_lines_of(page) for page in PAGES}
    assert shown["README.md"], "the README lost its dialplan snippet"
    for page, lines in shown.items():
        for line in lines:
            assert line in kit, (
                f"{page} shows {line!r}, which extensions_consent.conf does not have"
            )
