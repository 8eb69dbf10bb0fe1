"""The linter against corpora of flows written as authors write them (issue 8).

Two corpora, same layout: `tests/lint-corpus/` (one company, written first; the linter was
corrected against it) and `tests/lint-corpus-2/`, held out: other companies (a dental practice,
a law firm, an English letting agent) and styles, written without reading the first corpus's bad
flows or the linter's cue tables, so it says how the linter does on flows it has never seen.

`<corpus>/good/` holds lawful flows: reworded, resegmented, trilingual, two consent
purposes, key placeholders, English only, and the withdrawal flows they need (R17). Each must
lint with zero findings on its real audio, and the whole-flow proof must hold in every language.

`<corpus>/bad/` (and `bad-r17/<case>/`, whose folders lack a withdrawal flow) hold flows
with one realistic mistake each. The file's header says the mistake and what a correct linter
reports: ``# expect: R1@34 R2`` means an R1 finding at line 34 and an R2 finding anywhere. Two
checks per file: every expected rule is reported (at its line, where one is given), and no other
rule is. Bad flows are linted without audio (the single R13 "no audio" finding is ignored), except
the R13 cases: their audio is built, then tampered with as their header says, with the manifest
kept as it was::

    # tamper: copy de/intro -> de/google       (a WAV overwritten by another prompt's)
    # tamper: edit en/ask                      (bytes of a WAV changed)
    # built-from: "new text" -> "old text"     (the audio was built before the text changed)

A bad flow whose rule is measured on audio (the length of a question, R5; of one language
against another, R7) says so, and is linted on its audio as built from its text::

    # audio: built

R18 cases are linted against a store that remembered the earlier text of the same version::

    # earlier: "new text" -> "old text"

Each bad flow is linted once (both checks read the same report).

Where the linter is known to disagree, the check is marked xfail(strict) with the linter's own
words (`KNOWN`): those are the linter's defects, not the corpus's.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consent_ivr.cli.sounds import build_sounds
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.flow.loader import load_flow
from consent_ivr.lint.check import Report, lint_file, proof

TESTS = Path(__file__).parent
#: corpus folder -> the fewest bad flows it must hold per rule
CORPORA = {TESTS / "lint-corpus": 3, TESTS / "lint-corpus-2": 2}
GOOD = sorted(p for c in CORPORA for p in (c / "good").glob("*.yaml"))
BAD = sorted(
    p for c in CORPORA for p in [*(c / "bad").glob("*.yaml"), *(c / "bad-r17").rglob("*.yaml")]
)
RULES = [f"R{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 18, 19)]


def corpus_of(path: Path) -> Path:
    return next(c for c in CORPORA if c in path.parents)


def case_id(path: Path) -> str:
    """`lint-corpus-2/bad/r1-....yaml`: the corpus folder and the file inside it."""
    return path.relative_to(TESTS).as_posix()


_EXPECT = re.compile(r"^# expect:(.*)$", re.M)
_RULE = re.compile(r"\b(R\d+)(?:@(\d+))?\b")
_TAMPER = re.compile(r"^# tamper: (copy|edit) (\w+)/(\w+)(?: -> (\w+)/(\w+))?\s*$", re.M)
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_SWAP_TEXT = re.compile(rf"^# (built-from|earlier): {_QUOTED} -> {_QUOTED}\s*$", re.M)
_AUDIO_BUILT = re.compile(r"^# audio: built\s*$", re.M)


@dataclass
class Case:
    path: Path
    rules: set[str]
    lines: dict[str, set[int]]
    tamper: list[tuple[str, str, str, str | None, str | None]] = field(default_factory=list)
    built_from: list[tuple[str, str]] = field(default_factory=list)
    earlier: list[tuple[str, str]] = field(default_factory=list)
    audio_built: bool = False

    @property
    def name(self) -> str:
        return case_id(self.path)

    @property
    def needs_audio(self) -> bool:
        return bool(self.tamper or self.built_from or self.audio_built)


def _unescape(s: str) -> str:
    return s.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def read_case(path: Path) -> Case:
    text = path.read_text(encoding="utf-8")
    m = _EXPECT.search(text)
    rules: set[str] = set()
    lines: dict[str, set[int]] = {}
    for rule, line in _RULE.findall(m.group(1) if m else ""):
        rules.add(rule)
        if line:
            lines.setdefault(rule, set()).add(int(line))
    case = Case(path, rules, lines)
    case.tamper = [
        (op, lang, pid, to_lang or None, to_pid or None)
        for op, lang, pid, to_lang, to_pid in _TAMPER.findall(text)
    ]
    for kind, new, old in _SWAP_TEXT.findall(text):
        target = case.built_from if kind == "built-from" else case.earlier
        target.append((_unescape(new), _unescape(old)))
    case.audio_built = bool(_AUDIO_BUILT.search(text))
    return case


def with_text_swapped(src: Path, swaps: list[tuple[str, str]], into: Path) -> Path:
    """A copy of `src` (same file name, in `into`) with each `new` text put back to `old`."""
    text = src.read_text(encoding="utf-8")
    for new, old in swaps:
        assert new in text, f"{src}: {new!r} not in the flow"
        text = text.replace(new, old)
    into.mkdir(parents=True, exist_ok=True)
    out = into / src.name
    out.write_text(text, encoding="utf-8")
    return out


def rule_set(report: Report, *, audio: bool) -> set[str]:
    return {d.rule for d in findings(report, audio=audio)}


def findings(report: Report, *, audio: bool) -> list[Diagnostic]:
    """Every rule finding; without audio, the one R13 'no audio' finding is left out."""
    return [
        d
        for d in report.diagnostics
        if d.rule and (audio or not (d.rule == "R13" and d.message.startswith("no audio")))
    ]


def shown(report: Report) -> str:
    return "\n".join(str(d) for d in report.diagnostics) or "(nothing)"


# ----------------------------------------------------------------------------- known defects
# (file, check) -> what the linter does instead. check: "clean" (good flows), "found" (the
# expected rules at their lines), "only" (nothing but the expected rules). Each is a defect of
# the linter as of this corpus; remove the entry when the linter is fixed (the xfail is strict).
_G2 = "lint-corpus-2/good/"
_B2 = "lint-corpus-2/bad/"
KNOWN: dict[tuple[str, str], str] = {}


def _param(case_name: str, check: str, value: object) -> object:
    reason = KNOWN.get((case_name, check))
    if reason is None:
        return pytest.param(value, id=case_name)
    return pytest.param(value, id=case_name, marks=pytest.mark.xfail(strict=True, reason=reason))


# ----------------------------------------------------------------------------- audio
def _build_all(flows: list[Path], root: Path) -> None:
    """Build several flows' audio into one sounds folder at once. Each build stages its files in
    <root>/.building and removes that folder when it is empty: a file kept there stops one build
    from removing it while another is about to write into it."""
    (root / ".building").mkdir(parents=True, exist_ok=True)
    (root / ".building" / "keep").touch()
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in pool.map(lambda p: build_sounds(p, root), flows):
            pass


@pytest.fixture(scope="session")
def good_sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audio of every good flow, built once."""
    root = tmp_path_factory.mktemp("good-sounds")
    _build_all(GOOD, root)
    return root


def _tamper(case: Case, root: Path) -> None:
    flow_id = load_flow(case.path, check_audio=False).id
    for op, lang, pid, to_lang, to_pid in case.tamper:
        wav = root / lang / flow_id / f"{pid}.wav"
        assert wav.is_file(), wav
        if op == "copy":
            assert to_lang and to_pid
            shutil.copyfile(wav, root / to_lang / flow_id / f"{to_pid}.wav")
        else:  # edit: silence a stretch of samples in the middle, header intact
            data = bytearray(wav.read_bytes())
            middle = len(data) // 2 & ~1
            data[middle : middle + 800] = bytes(800)
            wav.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def tampered_sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The audio of every bad flow linted on audio: built (from the earlier text where it says
    so), then tampered with as its header says (R13); the manifest stays as the build wrote it.
    Flow ids are distinct across these cases: they share the folder."""
    root = tmp_path_factory.mktemp("tampered-sounds")
    cases = [read_case(p) for p in BAD]
    cases = [c for c in cases if c.needs_audio]
    sources = [
        with_text_swapped(c.path, c.built_from, root.parent / f"{root.name}-src" / c.path.stem)
        if c.built_from
        else c.path
        for c in cases
    ]
    _build_all(sources, root)
    for c in cases:
        _tamper(c, root)
    return root


def lint_case(case: Case, tmp_path: Path, *, run_proof: bool) -> Report:
    """`lint_file`, with a store that remembered the earlier text when the case names one (R18)."""
    if not case.earlier:
        return lint_file(str(case.path), run_proof=run_proof)
    earlier = with_text_swapped(case.path, case.earlier, tmp_path / "earlier")
    store = open_store(tmp_path / "evidence.sqlite3")
    try:
        store.remember_flow(load_flow(earlier, check_audio=False))
        return lint_file(str(case.path), store=store, run_proof=run_proof)
    finally:
        store.close()


# ----------------------------------------------------------------------------- good flows
@pytest.mark.parametrize("path", [_param(case_id(p), "clean", p) for p in GOOD])
def test_good_flow_lints_clean(
    path: Path, good_sounds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero findings on the flow's own audio, the proof included; a good flow with `# earlier:`
    lines is linted against a store holding that earlier layout of the same notice (R18 must
    not mistake a comment or a re-wrapped line for a new notice)."""
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(good_sounds))
    report = lint_case(read_case(path), tmp_path, run_proof=True)
    assert report.flow is not None, shown(report)
    assert report.diagnostics == [], shown(report)


GOOD_LANGUAGES = [
    (path, lang) for path in GOOD for lang in load_flow(path, check_audio=False).languages
]


@pytest.mark.parametrize(
    ("path", "lang"),
    [pytest.param(p, lang, id=f"{case_id(p)}-{lang}") for p, lang in GOOD_LANGUAGES],
)
def test_good_flow_proof_holds(
    path: Path, lang: str, good_sounds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole-flow proof, once per language, on the flow as built (with its audio lengths)."""
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(good_sounds))
    result = proof(load_flow(path), lang)
    assert result.ok, [str(v) for v in result.violations]
    assert result.states > 0 and result.longest > 0
    assert result.terminal_statuses <= {"granted", "declined", "partial", "none", "error"}


# ----------------------------------------------------------------------------- bad flows
LintBad = Callable[[Case], Report]


@contextmanager
def _sounds(root: Path) -> Iterator[None]:
    before = os.environ.get("CONSENT_IVR_SOUNDS")
    os.environ["CONSENT_IVR_SOUNDS"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["CONSENT_IVR_SOUNDS"]
        else:
            os.environ["CONSENT_IVR_SOUNDS"] = before


@pytest.fixture(scope="session")
def lint_bad(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LintBad:
    """Lint a bad flow, once per session: cases on audio on their built (and tampered) audio,
    every other one without audio."""
    reports: dict[Path, Report] = {}
    no_sounds = tmp_path_factory.mktemp("no-sounds")

    def run(case: Case) -> Report:
        if case.path not in reports:
            sounds = request.getfixturevalue("tampered_sounds") if case.needs_audio else no_sounds
            with _sounds(sounds):
                tmp = tmp_path_factory.mktemp(case.path.stem)
                reports[case.path] = lint_case(case, tmp, run_proof=False)
        return reports[case.path]

    return run


BAD_CASES = [read_case(p) for p in BAD]


@pytest.mark.parametrize("corpus", [pytest.param(c, id=c.name) for c in CORPORA])
def test_corpus_is_complete(corpus: Path) -> None:
    """Enough bad flows per rule of the issue (three in the first corpus, two in the held-out
    one), six good consent flows, every file loads, and the flows linted on audio have
    distinct ids (they share one sounds folder)."""
    good = [p for p in GOOD if corpus_of(p) == corpus]
    bad = [c for c in BAD_CASES if corpus_of(c.path) == corpus]
    per_rule: dict[str, int] = {}
    for case in bad:
        for rule in case.rules:
            per_rule[rule] = per_rule.get(rule, 0) + 1
    fewest = CORPORA[corpus]
    assert {r: per_rule.get(r, 0) for r in RULES if per_rule.get(r, 0) < fewest} == {}
    consent_flows = [p for p in good if "kind: withdrawal" not in p.read_text(encoding="utf-8")]
    assert len(consent_flows) >= 6
    for path in good + [c.path for c in bad]:
        load_flow(path, check_audio=False)  # raises FlowError with every problem
    for case in bad:
        text = case.path.read_text(encoding="utf-8")
        assert _EXPECT.search(text), f"{case.path}: no '# expect:' line"
    on_audio = [load_flow(c.path, check_audio=False).id for c in BAD_CASES if c.needs_audio]
    assert len(on_audio) == len(set(on_audio)), sorted(on_audio)


@pytest.mark.parametrize("case", [_param(c.name, "found", c) for c in BAD_CASES])
def test_bad_flow_reports_its_rule(case: Case, lint_bad: LintBad) -> None:
    report = lint_bad(case)
    found = findings(report, audio=case.needs_audio)
    if case.needs_audio:  # the tampered file is found, not a missing one
        assert not [d for d in found if d.message.startswith("no audio")], shown(report)
    missing = sorted(case.rules - {d.rule for d in found})
    assert not missing, f"expected {missing}, the linter said:\n{shown(report)}"
    for rule, lines in case.lines.items():
        at = {d.line for d in found if d.rule == rule}
        assert lines <= at, f"expected {rule} at line(s) {sorted(lines)}, the linter said:\n" + (
            shown(report)
        )


@pytest.mark.parametrize("case", [_param(c.name, "only", c) for c in BAD_CASES])
def test_bad_flow_reports_nothing_else(case: Case, lint_bad: LintBad) -> None:
    report = lint_bad(case)
    extra = sorted(rule_set(report, audio=case.needs_audio) - case.rules)
    assert not extra, f"did not expect {extra}, the linter said:\n{shown(report)}"
