"""Run the linter: every rule and the whole-flow proof on a flow (a `Report` per file), and
`load_checked` for the paths that serve calls (`consent_ivr.cli.lint` prints reports as text or
JSON).

`RULES` is the registry, in report order; each is a function of `consent_ivr.lint.context.Context`.
Errors block a flow wherever it is loaded (`load_checked`: validate, simulate, the FastAGI
server's load and reload, process AGI when its cache misses); warnings never do. What a rule
needs from outside the flow is looked up here: the other flows of its folder (R17) and the
versions the evidence store holds (R18).
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from consent_ivr.flow.diagnostics import Diagnostic, FlowError, SourceMap
from consent_ivr.flow.loader import load_source
from consent_ivr.flow.model import Flow
from consent_ivr.lint import (
    rules_choice,
    rules_notice,
    rules_purposes,
    rules_returning,
    rules_versions,
)
from consent_ivr.lint.context import CHARS_PER_SECOND, SAMPLES_PER_SECOND, Context, StoredVersion
from consent_ivr.lint.cues import available, cues_for
from consent_ivr.lint.proof import ProofResult, Violation, prove
from consent_ivr.paths import flows_dir, is_flow_file

Rule = Callable[[Context], Iterator[Diagnostic]]

#: Every content rule, in the order its findings are reported for a position.
RULES: tuple[Rule, ...] = (
    rules_choice.r1_keys_do_what_the_words_say,
    rules_choice.r2_both_choices_equal,
    rules_choice.r3_no_detriment,
    rules_purposes.r4_legitimate_interest_stays_basic,
    rules_choice.r5_questions_only_announce_keys,
    rules_purposes.r6_no_question_twice,
    rules_notice.r7_every_language_complete,
    rules_notice.r8_full_notice_on_request,
    rules_notice.r9_covers_claims_are_true,
    rules_purposes.r10_no_fake_choice,
    rules_purposes.r11_one_decision_per_purpose,
    rules_purposes.r16_tracking_purposes_declared,
    rules_notice.r17_withdrawal_by_phone,
    rules_returning.r17_reminder_offers_the_change,
    rules_versions.r18_versions_are_immutable,
    rules_returning.r18_returning_is_bounded,
    rules_choice.r19_recording_only_on_consent,
    rules_returning.r19_no_reuse_for_recording,
)


class VersionSource(Protocol):
    """What R18 needs of an evidence store (`evidence.store.ChainStore.flow_versions`)."""

    def flow_versions(self, flow_id: str, version: int) -> list[dict[str, Any]]: ...


@dataclass
class Report:
    """The linter's verdict on one file."""

    path: str
    flow: Flow | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rule, why)
    proofs: list[ProofResult] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


# ------------------------------------------------------------------------------ look-ups
_folder_cache: dict[tuple[str, tuple[tuple[str, int, int], ...]], list[Flow]] = {}
_folder_lock = threading.Lock()


def folder_flows(flow_path: str) -> list[Flow]:
    """The other flows in a flow file's folder that are well-formed (audio not checked), for R17.
    Cached by the folder's listing and each file's size and mtime."""
    folder = os.path.dirname(os.path.abspath(flow_path))
    me = os.path.realpath(flow_path)
    try:
        names = sorted(n for n in os.listdir(folder) if is_flow_file(n))
        stamp = []
        for n in names:
            st = os.stat(os.path.join(folder, n))
            stamp.append((n, st.st_mtime_ns, st.st_size))
    except OSError:
        return []
    key = (folder, tuple(stamp))
    with _folder_lock:
        cached = _folder_cache.get(key)
    if cached is not None:
        return [f for f in cached if os.path.realpath(f.source_path) != me]
    flows = []
    for n in names:
        loaded = load_source(os.path.join(folder, n), check_audio=False)
        if loaded.flow is not None and not any(d.is_error for d in loaded.diagnostics):
            flows.append(loaded.flow)
    with _folder_lock:
        _folder_cache[key] = flows
    return [f for f in flows if os.path.realpath(f.source_path) != me]


def stored_versions(store: VersionSource, flow: Flow) -> list[StoredVersion]:
    """The versions of (flow id, version) the store holds; raises what the store raises."""
    return [
        StoredVersion(
            source_sha256=str(row["source_sha256"]),
            notice_version=str(row["notice_version"]),
            texts=dict(row["texts"]),
            declaration=row.get("declaration"),
            first_seen=str(row["first_seen"]),
        )
        for row in store.flow_versions(flow.id, flow.version)
    ]


# --------------------------------------------------------------------------------- proof
_proof_memo: dict[tuple[object, ...], ProofResult] = {}
_proof_lock = threading.Lock()


def _shape(flow: Flow, lang: str) -> tuple[object, ...]:
    """What the proof's verdict depends on: the flow's structure, not its words or audio (the
    prompts' lengths matter only in being more than one sample)."""

    def ids(prompts: tuple[Any, ...]) -> tuple[tuple[str, bool], ...]:
        return tuple((p.id, p.samples.get(lang, 0) > 1) for p in prompts)

    return (
        flow.kind,
        ids(flow.notice),
        ids(flow.full_notice),
        tuple((q.purpose, q.prompt.id, q.prompt.samples.get(lang, 0) > 1) for q in flow.questions),
        ids(flow.choice.noinput),
        ids(flow.choice.nomatch),
        tuple(sorted((k, p.samples.get(lang, 0) > 1) for k, p in flow.close.items())),
        flow.choice.keys,
        flow.choice.caps,
        flow.choice.accept_during_notice,
        flow.choice.timeout_ms,
        tuple(p.id for p in flow.consent_purposes),
    )


def with_samples(flow: Flow, lang: str) -> Flow:
    """The flow with an estimated length for every prompt that has no audio yet (the proof needs
    lengths: "heard to its end" is a sample count)."""

    def fix(p: Any) -> Any:
        if p.samples.get(lang, 0) > 0:
            return p
        est = max(2, round(len(p.text[lang]) / CHARS_PER_SECOND * SAMPLES_PER_SECOND))
        return p._replace(samples={**p.samples, lang: est})

    return flow._replace(
        notice=tuple(fix(p) for p in flow.notice),
        full_notice=tuple(fix(p) for p in flow.full_notice),
        questions=tuple(q._replace(prompt=fix(q.prompt)) for q in flow.questions),
        choice=flow.choice._replace(
            noinput=tuple(fix(p) for p in flow.choice.noinput),
            nomatch=tuple(fix(p) for p in flow.choice.nomatch),
        ),
        close={k: fix(p) for k, p in flow.close.items()},
        returning=None
        if flow.returning is None
        else flow.returning._replace(
            reminder={k: fix(p) for k, p in flow.returning.reminder.items()}
        ),
    )


def proof(flow: Flow, lang: str) -> ProofResult:
    """The proof for one language, remembered by the flow's shape (a text edit does not
    re-run it)."""
    flow = with_samples(flow, lang)
    key = (lang, *_shape(flow, lang))
    with _proof_lock:
        found = _proof_memo.get(key)
    if found is None:
        found = prove(flow, lang)
        with _proof_lock:
            _proof_memo[key] = found
    return found


_PROOF_WHERE = {
    "R1": "key.accept",
    "R2": "key.decline",
    "R5": "choice.accept_during_notice",
    "R6": "max",
    "R8": "key.full_notice",
    "R12": "key.accept",
}


def _events_text(v: Violation) -> str:
    parts = []
    for action, event in zip(v.actions, v.events, strict=True):
        name = type(event).__name__
        prompt = getattr(action, "prompt_id", None)
        digit = getattr(event, "digit", None)
        parts.append(f"{name}({digit})" if digit else name + (f" at {prompt}" if prompt else ""))
    return ", ".join(parts[-6:])


def replay_command(source_path: str, language: str, dtmf: str) -> str:
    """The `consent-ivr simulate` command line that places the same call, quoted for a shell
    (``--dtmf='...'``): a flow of the flows folder is named by its id, as `simulate` finds it
    from any folder; any other by its path. The linter's counter-examples and a failed flow
    test print it."""
    path = Path(source_path)
    in_flows = path.suffix == ".yaml" and (flows_dir() / path.name).resolve() == path.resolve()
    script = f"'{dtmf}'" if "'" not in dtmf else shlex.quote(dtmf)
    return (
        f"consent-ivr simulate {shlex.quote(path.stem if in_flows else str(path))}"
        f" --lang {shlex.quote(language)} --dtmf={script}"
    )


def proof_findings(ctx: Context, result: ProofResult) -> list[Diagnostic]:
    out = []
    for v in result.violations:
        script = v.dtmf
        if script is not None:
            command = replay_command(str(ctx.path), result.language, script)
            fix = f"counter-example: {command} (ends {v.outcome})"
        else:
            fix = f"counter-example (needs a fault, not scriptable): {_events_text(v)}"
        where = _PROOF_WHERE.get(v.rule, "choice")
        message = f"{v.message} (proof, '{result.language}')"
        out.append(
            ctx.finding(
                v.rule, where, message, fix, "warning" if v.severity == "warning" else "error"
            )
        )
    return out


# ---------------------------------------------------------------------------------- lint
def lint_flow(
    flow: Flow,
    source_map: SourceMap,
    *,
    audio_checked: bool = True,
    look_in_folder: bool = True,
    versions: list[StoredVersion] | None = None,
    run_proof: bool = True,
) -> tuple[list[Diagnostic], list[ProofResult]]:
    """Every rule (and the proof, per language) on a well-formed flow."""
    ctx = Context(
        flow,
        source_map,
        audio_checked=audio_checked,
        folder_flows=(lambda: folder_flows(flow.source_path)) if look_in_folder else None,
        stored_versions=versions,
    )
    found: list[Diagnostic] = []
    for lang in flow.languages:
        if cues_for(lang) is None:
            found.append(
                ctx.finding(
                    "",
                    "languages",
                    f"no cue words for language '{lang}': the rules that read texts (R1–R3, R5,"
                    " R9, R11, R17, R19) checked only names, the web address and key digits in it",
                    f"expected agi/consent_ivr/lint/cues/{lang.split('_')[0]}.yaml (copy en.yaml"
                    f" and translate it; tables exist for {', '.join(available())})",
                    "warning",
                )
            )
    for rule in RULES:
        try:
            found.extend(rule(ctx))
        except Exception as exc:  # a rule's own defect: fail closed, never a traceback
            name = rule.__name__.split("_", 1)[0].upper()
            found.append(
                ctx.finding(
                    name,
                    "flow",
                    f"internal error while checking {name}: {type(exc).__name__}: {exc}",
                    "expected the rule to run; please report this (the flow is refused)",
                )
            )
    proofs: list[ProofResult] = []
    if run_proof:
        for lang in flow.languages:
            result = proof(flow, lang)
            proofs.append(result)
            found.extend(proof_findings(ctx, result))
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda d: (d.line, d.col, d.rule))
    return unique, proofs


def lint_file(
    path: str,
    *,
    store: VersionSource | None = None,
    run_proof: bool = True,
    look_in_folder: bool = True,
) -> Report:
    """Lint one flow file: the loader's findings (schema, R13 audio), then every rule."""
    loaded = load_source(path)
    report = Report(path, loaded.flow, list(loaded.diagnostics))
    if loaded.flow is None:
        return report
    audio_ok = not any(d.rule == "R13" and d.is_error for d in loaded.diagnostics)
    versions = None
    if store is None:
        report.skipped.append(("R18", "no evidence store given (--store URL)"))
    else:
        versions = stored_versions(store, loaded.flow)
    found, proofs = lint_flow(
        loaded.flow,
        loaded.source_map,
        audio_checked=audio_ok,
        look_in_folder=look_in_folder,
        versions=versions,
        run_proof=run_proof,
    )
    report.diagnostics = sorted(
        dict.fromkeys([*report.diagnostics, *found]), key=lambda d: (d.line, d.col, d.rule)
    )
    report.proofs = proofs
    return report


def load_checked(
    path: str | os.PathLike[str],
    *,
    store: VersionSource | Callable[[], VersionSource | None] | None = None,
    run_proof: bool = False,
) -> tuple[Flow, list[Diagnostic]]:
    """Load a flow to serve calls: the loader's checks and every lint rule (the proof too with
    `run_proof`); raise `FlowError` with every finding if any is an error. `store` (or a callable
    that opens one) is asked for R18; a store that cannot be read skips R18 with a warning (the
    call's own write then fails closed)."""
    label = os.fspath(path)
    loaded = load_source(label)
    if loaded.flow is None:  # not well-formed: the rules have nothing to read
        raise FlowError(loaded.diagnostics)
    flow = loaded.flow  # maybe with audio errors (R13): the rules still run, all at once
    versions: list[StoredVersion] | None = None
    notes: list[Diagnostic] = []
    if store is not None:
        try:
            source: Any = store
            if callable(store) and not hasattr(store, "flow_versions"):
                source = store()
            if source is not None:
                versions = stored_versions(source, flow)
        except Exception as exc:
            notes.append(
                Diagnostic(
                    label,
                    *loaded.source_map.at("version"),
                    f"R18 not checked: the evidence store could not be read ({type(exc).__name__})",
                    "expected a readable store; calls will fail closed if it stays unreadable",
                    "warning",
                    "R18",
                )
            )
    found, _proofs = lint_flow(flow, loaded.source_map, versions=versions, run_proof=run_proof)
    diagnostics = sorted(
        dict.fromkeys([*loaded.diagnostics, *notes, *found]), key=lambda d: (d.line, d.col)
    )
    if any(d.is_error for d in diagnostics):
        raise FlowError(diagnostics)
    return flow, diagnostics
