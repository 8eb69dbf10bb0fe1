"""Load a flow file (YAML) into a validated, immutable `Flow`, or report every problem at once.

Theory of operation
-------------------
The YAML is *composed* (not constructed) into a node tree, so every value keeps its line and
column. A schema-driven walk over that tree (`schema`'s `Checker`, `sections.check_document` with
`purposes`, `choice` and `returning`) checks each section, records `Diagnostic`s and keeps
going, so an author sees all problems in one run. Cross-section rules (references, prompt ids,
placeholders, positions: `cross`) run on what the walk collected. Audio is checked last
(`audio`): every prompt's WAV must exist in 8 kHz mono 16-bit and its manifest entry must match
the current text. Only when no error remains is the `Flow` built (here).

This module is the entry point: `load_source` (the linter's: everything found, never raises),
`load_flow` / `load_flow_with_warnings` (refuse a flow with any error), `resolve_flow_path`, and
the audio file names of `audio` (`audio_path`, `manifest_path`, `text_sha256`).

Rules of the flow checks: every message is `what is wrong; what was expected` in plain words for
flow authors; nothing here may raise on bad input (any surprise becomes a diagnostic). Process AGI
imports this module only when its flow cache misses (`transports.flowcache`), never on the path
to the first prompt of a cached flow: imports stay at the top.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

from consent_ivr import paths
from consent_ivr.flow.audio import (
    PromptAudio,
    audio_path,
    check_audio_files,
    manifest_path,
    text_sha256,
)
from consent_ivr.flow.diagnostics import Diagnostic, FlowError, SourceMap
from consent_ivr.flow.model import Choice, Flow, Prompt, Question, Returning
from consent_ivr.flow.notice import notice_sha256
from consent_ivr.flow.schema import Checker, Parsed, PromptSpec, suggestion
from consent_ivr.flow.sections import check_document
from consent_ivr.records import Record

__all__ = [
    "Loaded",
    "audio_path",
    "load_flow",
    "load_flow_with_warnings",
    "load_source",
    "manifest_path",
    "resolve_flow_path",
    "text_sha256",
]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _build(p: Parsed, c: Checker, audio: dict[str, PromptAudio], source: str, sha: str) -> Flow:
    """Assemble the `Flow`; only called when no error was reported, so every part is present."""
    langs = c.langs
    assert langs is not None and p.flow_id is not None and p.version is not None
    assert p.controller is not None and p.policy_url is not None and p.keys is not None
    assert p.caps is not None and p.timeout_ms is not None and p.notice_version is not None

    def prompt(spec: PromptSpec) -> Prompt:
        assert spec.id is not None and spec.text is not None
        a = audio.get(spec.id, PromptAudio())
        return Prompt(
            id=spec.id,
            text=dict(spec.text.texts),
            audio={lang: a.audio.get(lang, "") for lang in langs},
            audio_sha256={lang: a.sha.get(lang, "") for lang in langs},
            samples={lang: a.samples.get(lang, 0) for lang in langs},
            covers=spec.covers,
            audio_file={lang: a.file[lang] for lang in langs if lang in a.file},
            audio_dir={lang: a.dirs[lang] for lang in langs if lang in a.dirs},
            format_sha256=dict(a.format_sha),
            format_files=dict(a.format_files),
        )

    purposes = []
    for purpose, _node in p.purposes.values():
        assert purpose is not None
        purposes.append(purpose)
    questions = []
    for q in p.questions:
        assert q.purpose is not None
        questions.append(Question(q.purpose, prompt(q.prompt)))
    returning = None
    if p.returning is not None:
        r = p.returning
        assert r.max_age_days is not None and r.remember is not None
        returning = Returning(
            max_age_days=r.max_age_days,
            remember=r.remember,
            reminder={k: prompt(s) for k, s in r.reminders.items()},
            allow_recording=r.allow_recording,
        )
    flow = Flow(
        kind=p.kind,
        id=p.flow_id,
        version=p.version,
        notice_version=p.notice_version,
        languages=langs,
        controller=p.controller,
        policy_url=p.policy_url,
        purposes=tuple(purposes),
        notice=tuple(prompt(s) for s in p.notice),
        full_notice=tuple(prompt(s) for s in p.full_notice),
        choice=Choice(
            keys=p.keys,
            timeout_ms=p.timeout_ms,
            caps=p.caps,
            noinput=tuple(prompt(s) for s in p.noinput),
            nomatch=tuple(prompt(s) for s in p.nomatch),
            accept_during_notice=p.accept_during_notice,
        ),
        questions=tuple(questions),
        close={k: prompt(s) for k, s in p.close.items()},
        source_path=source,
        source_sha256=sha,
        notice_sha256={},
        sound_formats=p.formats,
        returning=returning,
    )
    flow.notice_sha256.update({lang: notice_sha256(flow, lang) for lang in langs})
    return flow


def _load(
    path: str | os.PathLike[str], sounds_root: Path | None, check_audio: bool
) -> tuple[Flow | None, list[Diagnostic], SourceMap]:
    """The flow, every diagnostic and the source map. The flow is built whenever the document is
    well-formed, even if its audio is wrong (R13 errors): the linter reads it; loaders refuse it."""
    label = os.fspath(path)
    c = Checker(label)
    try:
        data = Path(label).read_bytes()
    except FileNotFoundError:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"no flow file {label}", "expected a path to a flow .yaml file"
                )
            ],
            c.smap,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"cannot read {label} ({reason})", "expected a readable flow file"
                )
            ],
            c.smap,
        )
    try:
        root = yaml.compose(data, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(exc.problem or "not valid YAML").split())
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            cm = exc.context_mark
            context = f" ({exc.context} that starts at line {cm.line + 1}, column {cm.column + 1})"
        elif exc.context:
            context = f" ({exc.context})"
        return (
            None,
            [
                Diagnostic(
                    label,
                    line,
                    col,
                    f"YAML syntax error: {what}{context}",
                    "expected valid YAML (check indentation, colons and quotes)",
                )
            ],
            c.smap,
        )
    except yaml.YAMLError as exc:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"YAML error: {' '.join(str(exc).split())}", "expected UTF-8 YAML"
                )
            ],
            c.smap,
        )
    if root is None:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, "the flow file is empty", "expected flow, version, languages, ..."
                )
            ],
            c.smap,
        )
    p = check_document(c, root)
    schema_ok = not any(d.is_error for d in c.diags)
    audio: dict[str, PromptAudio] = {}
    if check_audio:
        root_dir = sounds_root if sounds_root is not None else paths.sounds_dir()
        audio = check_audio_files(c, p, root_dir, label)
    diags = sorted(c.diags, key=lambda d: (d.line, d.col))
    if not schema_ok:
        return None, diags, c.smap
    flow = _build(p, c, audio, label, hashlib.sha256(data).hexdigest())
    if not check_audio:
        root_dir = sounds_root if sounds_root is not None else paths.sounds_dir()
        flow = _with_audio_paths(flow, root_dir)
    return flow, diags, c.smap


def _with_audio_paths(flow: Flow, sounds_root: Path) -> Flow:
    """Without audio checks, still tell the engine where each file would be."""
    for pr in flow.all_prompts():
        for lang in flow.languages:
            pr.audio[lang] = os.path.abspath(audio_path(sounds_root, lang, flow.id, pr.id))
    return flow


class Loaded(Record):
    """What `load_source` found: the flow (None unless the document is well-formed; it may still
    have audio errors), every diagnostic by position, and where each flow part is in the file."""

    flow: Flow | None
    diagnostics: list[Diagnostic]
    source_map: SourceMap

    @property
    def ok(self) -> bool:
        return self.flow is not None and not any(d.is_error for d in self.diagnostics)


def load_source(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> Loaded:
    """Read and check a flow file as far as it goes, for the linter. Never raises for bad input."""
    try:
        flow, diags, smap = _load(path, sounds_root, check_audio)
    except Exception as exc:  # any surprise becomes a diagnostic, never a traceback
        diags = [
            Diagnostic(
                os.fspath(path),
                1,
                1,
                f"internal error while loading the flow: {type(exc).__name__}: {exc}",
                "expected a loadable flow; please report this",
            )
        ]
        flow, smap = None, SourceMap()
    return Loaded(flow, diags, smap)


def load_flow_with_warnings(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> tuple[Flow, list[Diagnostic]]:
    """Load and check a flow's schema and audio (not the content rules: `consent_ivr.lint`);
    return it with its warnings, or raise `FlowError` listing every diagnostic (errors and
    warnings, by position). Never raises anything else for bad input."""
    loaded = load_source(path, sounds_root=sounds_root, check_audio=check_audio)
    if not loaded.ok or loaded.flow is None:
        raise FlowError(loaded.diagnostics)
    return loaded.flow, loaded.diagnostics


def load_flow(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> Flow:
    """Load and validate a flow; raise `FlowError` with every diagnostic if any error is found."""
    return load_flow_with_warnings(path, sounds_root=sounds_root, check_audio=check_audio)[0]


def resolve_flow_path(name_or_path: str, flows_dir: Path | None = None) -> Path:
    """`call-tracking` -> `<flows_dir>/call-tracking.yaml`; anything with `/` or ending in
    .yaml/.yml is a path as given. A missing file raises `FlowError` naming what was looked for."""
    if "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if path.name.endswith(paths.FLOW_TEST_SUFFIX):
            tested = path.name.removesuffix(paths.FLOW_TEST_SUFFIX)
            raise FlowError(
                [
                    Diagnostic(
                        name_or_path,
                        1,
                        1,
                        f"{name_or_path} is a flow test file, not a flow",
                        f"expected the flow it tests, {tested}",
                    )
                ]
            )
        if not path.is_file():
            raise FlowError(
                [
                    Diagnostic(
                        name_or_path,
                        1,
                        1,
                        f"no flow file {name_or_path}",
                        "expected an existing .yaml file",
                    )
                ]
            )
        return path
    folder = flows_dir if flows_dir is not None else paths.flows_dir()
    path = folder / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    try:
        known = sorted(Path(f).stem for f in paths.flow_files(str(folder)))
    except OSError:
        known = []
    expected = suggestion(name_or_path, known, f"expected a flow file in {folder}")
    raise FlowError(
        [
            Diagnostic(
                name_or_path, 1, 1, f"no flow named '{name_or_path}' (looked for {path})", expected
            )
        ]
    )
