"""R18 — versions are immutable: a flow whose (id, version) the evidence store already holds with
other words or other declarations must raise `version`. Needs the store's recorded versions,
which `consent_ivr.lint.check` reads (`lint --store URL`, and always where flows are loaded to
serve calls); without them the rule is skipped, and says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.flow.notice import declaration
from consent_ivr.lint.context import Context, StoredVersion


def differences(ctx: Context, stored: StoredVersion) -> list[str]:
    """How the flow differs from a stored version of the same (id, version), in words."""
    flow = ctx.flow
    out: list[str] = []
    if stored.declaration is not None:
        now: dict[str, Any] = declaration(flow)
        before: dict[str, Any] = stored.declaration
        old_purposes = {p["id"]: p for p in before.get("purposes", [])}
        new_purposes = {p["id"]: p for p in now["purposes"]}
        for pid in sorted(set(old_purposes) | set(new_purposes)):
            a, b = old_purposes.get(pid), new_purposes.get(pid)
            if a is None:
                out.append(f"purpose '{pid}' is new")
            elif b is None:
                out.append(f"purpose '{pid}' was removed")
            else:
                changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                if changed:
                    out.append(f"the {', '.join(changed)} of '{pid}' changed")
        if before.get("keys") != now["keys"]:
            out.append("the keys changed")
    prompts = {p.id: p for p in flow.all_prompts()}
    for lang in sorted(set(stored.texts) | set(flow.languages)):
        old_texts = stored.texts.get(lang)
        if old_texts is None:
            out.append(f"language '{lang}' is new")
            continue
        if lang not in flow.languages:
            out.append(f"language '{lang}' was removed")
            continue
        for pid in sorted(set(old_texts) | set(prompts)):
            if pid not in prompts:
                out.append(f"prompt '{pid}' was removed")
            elif pid not in old_texts:
                out.append(f"prompt '{pid}' ({lang}) is new")
            elif old_texts[pid] != prompts[pid].text.get(lang):
                out.append(f"the '{lang}' text of '{pid}' changed")
    return out


def r18_versions_are_immutable(ctx: Context) -> Iterator[Diagnostic]:
    """R18 — the same (flow id, version) never names other purposes, recipients, data or words
    than the version the store already holds decisions for (audio re-made from the same words
    is the same notice: each record pins its audio hashes anyway)."""
    if ctx.stored_versions is None:
        return
    flow = ctx.flow
    for stored in ctx.stored_versions:
        if stored.source_sha256 == flow.source_sha256:
            continue
        diffs = differences(ctx, stored)
        if not diffs:
            continue
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        yield ctx.finding(
            "R18",
            "version",
            f"{flow.id} version {flow.version} is already in the evidence store (first seen"
            f" {stored.first_seen}) with another notice: {shown}",
            f"expected a new version for a changed notice: raise `version` to"
            f" {flow.version + 1} (old decisions keep pointing at the notice they were made on)",
        )
        return
