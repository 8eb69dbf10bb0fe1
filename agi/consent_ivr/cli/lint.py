"""`consent-ivr lint` and `consent-ivr validate`: the linter's findings for files, as text or JSON,
and the exit status (`consent_ivr.lint.check` does the checking)."""

from __future__ import annotations

import json
import os
from typing import Any, TextIO

from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.store import open_store, redact
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import resolve_flow_path
from consent_ivr.lint.check import Report, lint_file, load_checked
from consent_ivr.lint.proof import ProofResult
from consent_ivr.paths import flow_files


def _open_store(url: str | None, command: str, err: TextIO) -> Any:
    """The evidence store a command checks R18 against: None without a URL, False (after one
    line to `err`) when it cannot be opened."""
    if not url:
        return None
    try:
        store = open_store(url)
        store.open()
    except StoreError as exc:
        print(
            f"consent-ivr {command}: cannot read the evidence store {redact(url)}: {exc}", file=err
        )
        return False
    return store


def _targets(given: list[str]) -> list[str]:
    out: list[str] = []
    for g in given:
        if os.path.isdir(g):
            out += flow_files(g)
        elif "/" in g or g.endswith((".yaml", ".yml")):
            out.append(g)
        else:
            try:
                out.append(str(resolve_flow_path(g)))
            except FlowError as exc:
                out.append(exc.diagnostics[0].path if exc.diagnostics else g)
    return out


def _proof_line(p: ProofResult) -> str:
    state = "holds" if p.ok else "FAILS"
    return (
        f"proof ({p.language}): {state} — {p.states:,} states, {p.transitions:,} transitions,"
        f" {p.paths:,} distinct calls; every call ends within {p.longest} steps and"
        f" {p.most_keys} key presses ({p.seconds:.2f} s)"
    )


def run_lint(
    paths: list[str],
    out: TextIO,
    err: TextIO,
    *,
    store_url: str | None = None,
    fmt: str = "text",
    run_proof: bool = True,
) -> int:
    """`consent-ivr lint FLOW...`: every finding of every file; 1 if any is an error."""
    store = _open_store(store_url, "lint", err)
    if store is False:
        return 2
    reports: list[Report] = []
    try:
        for target in _targets(paths):
            try:
                reports.append(lint_file(target, store=store, run_proof=run_proof))
            except Exception as exc:  # a store failing mid-run: one line, not a traceback
                print(f"consent-ivr lint: {target}: {type(exc).__name__}: {exc}", file=err)
                return 2
    finally:
        if store is not None:
            store.close()
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    if fmt == "json":
        json.dump(
            {
                "files": [_report_json(r) for r in reports],
                "errors": errors,
                "warnings": warnings,
            },
            out,
            indent=2,
            ensure_ascii=False,
        )
        out.write("\n")
    else:
        for r in reports:
            for d in r.diagnostics:
                print(d, file=out)
            for rule, why in r.skipped:
                print(f"{r.path}: note: {rule} not checked: {why}", file=out)
            for p in r.proofs:
                print(f"{r.path}: {_proof_line(p)}", file=out)
            verdict = "ok" if not r.errors else f"{len(r.errors)} error(s)"
            extra = f", {len(r.warnings)} warning(s)" if r.warnings else ""
            print(f"{r.path}: {verdict}{extra}", file=out)
        if len(reports) > 1:
            print(f"{len(reports)} flows: {errors} error(s), {warnings} warning(s)", file=out)
    return 1 if errors else 0


def _report_json(r: Report) -> dict[str, Any]:
    return {
        "path": r.path,
        "flow": r.flow.label if r.flow else None,
        "ok": not r.errors,
        "findings": [d.as_json() for d in r.diagnostics],
        "skipped": [{"rule": rule, "why": why} for rule, why in r.skipped],
        "proof": [
            {
                "language": p.language,
                "holds": p.ok,
                "states": p.states,
                "transitions": p.transitions,
                "paths": p.paths,
                "longest": p.longest,
                "most_keys": p.most_keys,
                "seconds": round(p.seconds, 3),
                "violations": [
                    {
                        "rule": v.rule,
                        "severity": v.severity,
                        "message": v.message,
                        "dtmf": v.dtmf,
                        "outcome": v.outcome,
                    }
                    for v in p.violations
                ],
            }
            for p in r.proofs
        ],
    }


def run_validate(
    given: list[str], out: TextIO, err: TextIO, *, store_url: str | None = None
) -> int:
    """`consent-ivr validate FLOW...`: load each flow exactly as a call would — the loader's
    checks, every lint rule and the whole-flow proof — with every finding to `err` and an `ok:`
    line per good file to `out`. Returns 0 when no file has an error (warnings allowed), else 2.
    """
    status = 0
    store = _open_store(store_url, "validate", err)
    if store is False:
        return 2
    try:
        for name in given:
            try:
                path = resolve_flow_path(name)
                label = name if ("/" in name or name.endswith((".yaml", ".yml"))) else str(path)
                flow, warnings = load_checked(label, store=store, run_proof=True)
            except FlowError as exc:
                status = 2
                for d in exc.diagnostics:
                    print(d, file=err)
                continue
            for d in warnings:
                print(d, file=err)
            print(f"ok: {label} ({flow.label}, languages {','.join(flow.languages)})", file=out)
    finally:
        if store is not None:
            store.close()
    return status


def add_parsers(sub: Any) -> None:
    v = sub.add_parser(
        "validate", help="load flows as a call would (schema, audio, every lint rule, the proof)"
    )
    v.add_argument("flows", nargs="+", metavar="FLOW", help="flow id (in flows/) or path")
    v.add_argument("--store", default=None, metavar="URL", help="check R18 against this store")
    v.set_defaults(run=lambda a, out, err: run_validate(a.flows, out, err, store_url=a.store))

    lint = sub.add_parser(
        "lint",
        help="prove flows lawful: rules R1-R19 and the whole-flow proof, every finding at once",
    )
    lint.add_argument(
        "flows", nargs="+", metavar="FLOW", help="flow id (in flows/), path, or folder of flows"
    )
    lint.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="evidence store to check R18 against (immutable versions); without it R18 is skipped",
    )
    lint.add_argument("--format", choices=("text", "json"), default="text", dest="fmt")
    lint.add_argument("--no-proof", action="store_true", help="skip the whole-flow proof")

    lint.set_defaults(
        run=lambda a, out, err: run_lint(
            a.flows, out, err, store_url=a.store, fmt=a.fmt, run_proof=not a.no_proof
        )
    )
