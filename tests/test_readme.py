"""The README and docs/ stay true: links, paths, commands and the example flow all still work.

The README is a landing page (at most 300 lines); the reference lives in docs/. Each test reads
the Markdown as a reader would follow it: every relative link leads to a file (and its #anchor to
a heading there), every repository path a page names exists, every `make` target and every
`consent-ivr` sub-command it names is one the Makefile and the command line have, and the
flow-language reference's example flow is a valid flow.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.cli.main import parser
from consent_ivr.flow.loader import load_flow_with_warnings
from consent_ivr.lint.check import lint_file

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")

#: Pages written in the same step by another hand: a link to one is checked like any other once
#: the page exists, and tolerated while it does not yet.

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"(?<!!)\[(?:[^\]\n]|\][^(\n])*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
#: A path inside the repository as a page writes it: from a top-level folder, without
#: placeholders (`sounds/<lang>/...`) or globs.
_REPO_PATH = re.compile(
    r"(?<![\w./<>-])((?:agi|asterisk-config|docs|flows|sounds|tests|\.ci)/[\w./-]*[\w/])"
    r"(?![\w<>*…{])"
)
#: `consent-ivr SUB [SUBSUB]` where it is run: at a line's or span's start, after a prompt, a
#: pipe or `.venv/bin/`.
_COMMAND = re.compile(
    r"(?:^|(?<=[\s`$(|;&])|(?<=bin/))consent-ivr[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?"
)
_MAKE = re.compile(r"(?:^|(?<=[\s`$(|;&]))make[ \t]+([a-z][a-z-]*)")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def text_outside_code(markdown: str) -> str:
    """The prose of a page: fenced blocks and code spans blanked (their links are examples)."""
    prose = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return _CODE_SPAN.sub("``", prose)


def code_of(markdown: str) -> list[str]:
    """Every fenced block and code span of a page: where commands and paths are written."""
    blocks = [m.group(0) for m in _FENCE.finditer(markdown)]
    spans = _CODE_SPAN.findall(_FENCE.sub("", markdown))
    return blocks + spans


def anchor(heading: str) -> str:
    """The #anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    prose = _FENCE.sub("", markdown)
    found: set[str] = set()
    for m in _HEADING.finditer(prose):
        slug = base = anchor(m.group(2))
        n = 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    return found


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.M))


def test_the_flow_language_reference_example_flows_lint_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The minimal consent flow and its withdrawal flow, alone in a folder, pass every lint rule
    and the whole-flow proof; the one finding allowed is R13's "no audio" (none is built here)."""
    page = (DOCS / "flow-language.md").read_text(encoding="utf-8")
    consent = re.search(r"```yaml\n(flow: hotline-consent.*?)```", page, re.DOTALL)
    withdrawal = re.search(r"```yaml\n(kind: withdrawal.*?flow: hotline-withdrawal.*?)```", page,
                           re.DOTALL)  # fmt: skip
    assert consent, "docs/flow-language.md lost its example flow"
    assert withdrawal, "docs/flow-language.md lost the example flow's withdrawal flow"
    folder = tmp_path / "flows"
    folder.mkdir()
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    path = folder / "hotline-consent.yaml"
    path.write_text(consent.group(1), encoding="utf-8")
    (folder / "hotline-withdrawal.yaml").write_text(withdrawal.group(1), encoding="utf-8")
    for flow_file in sorted(folder.iterdir()):
        report = lint_file(str(flow_file))
        assert report.flow is not None, [str(d) for d in report.diagnostics]
        found = [
            str(d)
            for d in report.diagnostics
            if not (d.rule == "R13" and d.message.startswith("no audio"))
        ]
        assert found == [], found
        assert report.proofs and all(p.ok for p in report.proofs)
    flow, warnings = load_flow_with_warnings(path, sounds_root=tmp_path, check_audio=False)
    assert flow.id == "hotline-consent" and warnings == []
    assert [p.id for p in flow.consent_purposes] == ["ga_linkage"]


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    readme = README.read_text(encoding="utf-8")
    commands = re.search(r"## The two commands\n\n```sh\n(.*?)```", readme, re.DOTALL)
    assert commands
    lines = [line.split("#")[0].strip() for line in commands.group(1).strip().splitlines()]
    assert lines == ["make demo", "make test"]
    assert {"demo", "test"} <= make_targets()
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "make test" in ci


def test_the_fast_target_runs_the_suite_without_the_fault_tests_and_the_soak() -> None:
    recipe = re.search(r"^test-fast:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert recipe, "the Makefile lost its test-fast target"
    assert '-m pytest -m "not soak and not faults"' in recipe.group(1)


def test_every_make_target_the_pages_name_is_in_the_makefile() -> None:
    targets = make_targets()
    named = {
        (rel(page), target)
        for page in pages()
        for code in code_of(page.read_text(encoding="utf-8"))
        for target in _MAKE.findall(code)
    }
    assert ("README.md", "test-fast") in named
    missing = sorted(f"{page}: make {target}" for page, target in named if target not in targets)
    assert not missing, "\n".join(missing)


def test_every_relative_link_leads_to_a_file_and_its_anchor_to_a_heading() -> None:
    problems: list[str] = []
    followed = 0
    for page in pages():
        for target in _LINK.findall(text_outside_code(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:, ...
                continue
            followed += 1
            path_part, _, fragment = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{rel(page)}: ({target})"
            if ROOT not in dest.parents and dest != ROOT:
                problems.append(f"{where} leads outside the repository")
            elif not dest.exists():
                problems.append(f"{where}: no such file")
            elif fragment and fragment not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading #{fragment} in {rel(dest)}")
    assert followed > 50
    assert not problems, "\n".join(problems)


def test_every_repository_path_the_pages_name_exists() -> None:
    problems = []
    for page in pages():
        for code in code_of(page.read_text(encoding="utf-8")):
            for path in _REPO_PATH.findall(code):
                if not (ROOT / path).exists():
                    problems.append(f"{rel(page)}: {path} does not exist")
    assert not problems, "\n".join(problems)


def test_every_consent_ivr_sub_command_the_pages_name_exists() -> None:
    commands = sub_commands(parser())
    problems = []
    named = 0
    for page in pages():
        for code in code_of(page.read_text(encoding="utf-8")):
            for line in code.splitlines():
                for sub, subsub in _COMMAND.findall(line):
                    named += 1
                    if sub not in commands:
                        problems.append(f"{rel(page)}: consent-ivr {sub} ({line.strip()[:80]})")
                        continue
                    actions = sub_commands(commands[sub])
                    if actions and subsub and subsub not in actions:
                        problems.append(f"{rel(page)}: consent-ivr {sub} {subsub}")
    assert named > 30
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = text_outside_code(README.read_text(encoding="utf-8"))
    linked = {target.partition("#")[0] for target in _LINK.findall(readme)}
    expected = {rel(page) for page in DOCS.glob("*.md")}
    assert not expected - linked, f"not linked from the README: {sorted(expected - linked)}"


def test_every_test_module_is_described_in_the_testing_page() -> None:
    testing = (DOCS / "testing.md").read_text(encoding="utf-8")
    missing = sorted(
        path.name for path in (ROOT / "tests").glob("test_*.py") if path.name not in testing
    )
    assert not missing, f"docs/testing.md does not say what these prove: {missing}"


def test_the_readme_stays_a_landing_page_of_at_most_300_lines() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move reference material to docs/"


#: A transcript line of `consent-ivr simulate`: its time, then what happened.
_TRANSCRIPT_LINE = re.compile(r"^ +\d+\.\d\ds  \S")


def sample_pattern(line: str) -> re.Pattern[str]:
    """A sample line as a pattern of the real one: `[…]` stands for text the page left out, and a
    record id or notice hash for any (a record id is new on every call)."""
    parts = [re.escape(part) for part in line.split("[…]")]
    pattern = ".*".join(parts)
    pattern = re.sub(r"\b[0-9a-f]{64}\b", "[0-9a-f]{64}", pattern)
    pattern = re.sub(r"\b[0-9a-f]{32}\b", "[0-9a-f]{32}", pattern)
    return re.compile(pattern)


def test_the_readmes_simulated_call_is_what_the_command_it_names_prints() -> None:
    readme = README.read_text(encoding="utf-8")
    sample = re.search(
        r"```console\n\$ \.venv/bin/(consent-ivr simulate [^\n]*)\n(.*?)```", readme, re.S
    )
    assert sample, "README.md lost its simulated call"
    command, shown = sample.group(1), sample.group(2).splitlines()
    args = command.split()[1:]
    r = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", *[a.strip("'") for a in args]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    real = r.stdout.splitlines()
    assert shown[0] == real[0]  # the call line
    sample_lines = [line for line in shown if _TRANSCRIPT_LINE.match(line)]
    real_lines = [line for line in real if _TRANSCRIPT_LINE.match(line)]
    assert len(sample_lines) == len(real_lines) > 10
    for page_line, real_line in zip(sample_lines, real_lines, strict=True):
        assert sample_pattern(page_line).fullmatch(real_line), (
            f"README: {page_line}\nreal:   {real_line}"
        )


def test_the_debian_packages_the_pages_name_are_the_ones_make_installs() -> None:
    install = re.search(r"apt-get install -y -qq ([a-z0-9 -]+?) >/dev/null", MAKEFILE)
    assert install, "the Makefile's system-deps target lost its apt-get install"
    packages = install.group(1).split()
    readme = " ".join(README.read_text(encoding="utf-8").split())
    testing = " ".join((DOCS / "testing.md").read_text(encoding="utf-8").split())
    named = ", ".join(f"`{p}`" for p in packages[:-1]) + f" and `{packages[-1]}`"
    assert f"installs the Debian packages {named}" in readme
    assert f"the Debian packages {named}" in testing
    assert f"(also {', '.join(packages)})" in readme  # the comment of `make test`
