"""Content rules on the layered notice: `covers` claims are true (R9), every language says the
same (R7), the full notice is there and complete (R8), withdrawal works by phone (R17).

A `covers` claim is checked against the words (`Context.supports`): the controller's name, each
recipient's name, each country (or a synonym), the policy URL's host spelled out with the
full-notice key, or the item's cue words. A claim that fails in every language it can be checked
in is an R9 error; one that fails in some languages only is also an R7 error at those texts.
R8's completeness verdict counts such an item as missing too (an item counts only where its claim
is true) and names the claim that failed, so the three findings read as the one mistake they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.flow.model import (
    FULL_NOTICE_REQUIRED,
    LAYER1_REQUIRED,
    WITHDRAWAL_REQUIRED,
    Flow,
    Prompt,
)
from consent_ivr.lint.context import FULL, NOTICE, Context, core_name, same_controller
from consent_ivr.lint.cues import cues_for

if TYPE_CHECKING:
    from consent_ivr.flow.diagnostics import Severity

#: R7: a language's version of a segment may not be shorter than this share of the longest
#: (error), or than the warning share; segments shorter than `RATIO_MIN_SECONDS` are compared
#: only for the error (two words more or less swing a short prompt's ratio).
RATIO_ERROR = 0.5
RATIO_WARNING = 0.7
RATIO_MIN_SECONDS = 4.0


def _looked_for(ctx: Context, item: str, lang: str) -> str:
    """What `supports` looks for, in words an author understands."""
    flow = ctx.flow
    if item == "controller":
        name = core_name(flow.controller.name, cues_for(lang), as_written=True)
        return f"the controller's name ('{name}')"
    if item == "recipients":
        names = ctx.consent_recipients or ctx.all_recipients or ctx.all_processors
        return f"the recipient's name ({', '.join(names)})"
    if item == "third_country":
        return f"the country ({', '.join(ctx.consent_countries or ctx.all_countries)})"
    if item == "policy_pointer":
        key = flow.choice.keys.full_notice
        spoken = f"the web address {flow.policy_url} spelled out"
        return spoken if key is None or flow.is_withdrawal else f"{spoken} and the key {key}"
    cues = cues_for(lang)
    phrases = cues.facts.get(item, ()) if cues else ()
    sample = ", ".join(f"'{p.text}'" for p in phrases[:4])
    return f"words such as {sample}" if sample else f"words that say {item}"


def _layer1_required(ctx: Context) -> set[str]:
    if ctx.flow.is_withdrawal:
        return set(WITHDRAWAL_REQUIRED)
    required = set(LAYER1_REQUIRED)
    if ctx.consent_recipients:
        required.add("recipients")
    if ctx.consent_countries:
        required.add("third_country")
    return required


def r9_covers_claims_are_true(ctx: Context) -> Iterator[Diagnostic]:
    """R9 — every `covers` claim is said by the segment's words, and the first layer covers every
    mandatory item (controller, purposes, data, rights, objection, voluntary, withdrawal, the
    policy pointer; recipients and countries when a consent purpose has them), naming each
    recipient and country of the consent purposes."""
    langs = ctx.flow.languages
    for prompt in ctx.prompts(NOTICE, FULL):
        for item in sorted(prompt.covers):
            known = {
                lang: ok for lang in langs if (ok := ctx.supports(prompt, item, lang)) is not None
            }
            failed = [lang for lang, ok in known.items() if not ok]
            if not failed:
                continue
            if len(failed) == len(known):
                lang = failed[0]
                yield ctx.finding(
                    "R9",
                    f"prompt.{prompt.id}.covers.{item}",
                    f"segment '{prompt.id}' covers {item}, but its words never say it"
                    f" ({', '.join(failed)})",
                    f"expected {_looked_for(ctx, item, lang)} in its text, or remove {item}"
                    " from its covers",
                )
                continue
            good = next(lang for lang, ok in known.items() if ok)
            yield ctx.finding(
                "R9",
                f"prompt.{prompt.id}.covers.{item}",
                f"segment '{prompt.id}' covers {item}, but its {', '.join(failed)} text never"
                " says it",
                f"expected {_looked_for(ctx, item, failed[0])} in every language's text",
            )
            for lang in failed:
                yield ctx.finding(
                    "R7",
                    f"prompt.{prompt.id}.say.{lang}",
                    f"the '{lang}' text of segment '{prompt.id}' does not say {item}, which its"
                    f" '{good}' text says",
                    f"expected {_looked_for(ctx, item, lang)}: every language says the same",
                )
    notice = ctx.flow.notice
    claimed = set().union(*(p.covers for p in notice)) if notice else set()
    missing = sorted(_layer1_required(ctx) - claimed)
    if missing:
        yield ctx.finding(
            "R9",
            "notice",
            f"the first layer (notice) does not cover: {', '.join(missing)}",
            "expected every R9 item in the covers of a notice segment that says it"
            if not ctx.flow.is_withdrawal
            else "expected a withdrawal notice covering controller and withdrawal (R17)",
        )
    yield from _names_in_first_layer(ctx)


def _names_in_first_layer(ctx: Context) -> Iterator[Diagnostic]:
    """Each recipient and third country of a consent purpose is named in the first layer."""
    if ctx.flow.is_withdrawal:
        return
    langs = ctx.flow.languages
    for purpose in ctx.flow.consent_purposes:
        for what, names, check in (
            ("recipient", purpose.recipients, "recipients"),
            ("country", purpose.third_countries, "third_countries"),
        ):
            for name in names:
                found = {
                    lang: any(
                        ctx.names_country(ctx.reading(p, lang), name)
                        if what == "country"
                        else ctx.reading(p, lang).names(name)
                        for p in ctx.flow.notice
                    )
                    for lang in langs
                }
                if not any(found.values()):
                    yield ctx.finding(
                        "R9",
                        f"purpose.{purpose.id}.{check}",
                        f"the first layer never names the {what} {name} of '{purpose.id}'",
                        f"expected the {what} named in a notice segment (covers"
                        f" {'recipients' if what == 'recipient' else 'third_country'}): the"
                        " caller must hear it before agreeing",
                    )
                    continue
                for lang, ok in found.items():
                    if not ok:
                        yield ctx.finding(
                            "R7",
                            f"purpose.{purpose.id}.{check}",
                            f"the '{lang}' first layer never names the {what} {name}, which the"
                            " other languages name",
                            f"expected {name} named in the '{lang}' notice too",
                        )


def r8_full_notice_on_request(ctx: Context) -> Iterator[Diagnostic]:
    """R8 — a consent flow has a full-notice key and a non-empty second layer, and the two
    layers together say every Art. 13 item (an item counts only where its claim is true)."""
    if ctx.flow.is_withdrawal:
        return
    keys = ctx.flow.choice.keys
    full = ctx.flow.full_notice
    if keys.full_notice is None:
        yield ctx.finding(
            "R8",
            "key.full_notice" if "key.full_notice" in ctx.smap.positions else "choice",
            "the caller cannot ask for the full notice: choice.keys.full_notice is null",
            'expected a key for the full notice, e.g. full_notice: "9", and full_notice segments',
        )
    if not full:
        yield ctx.finding(
            "R8",
            "full_notice" if "full_notice" in ctx.smap.positions else "notice",
            "the flow has no full notice (second layer)",
            "expected full_notice segments with every Art. 13 item the first layer leaves out,"
            " played on request",
        )
    required = set(FULL_NOTICE_REQUIRED)
    if ctx.consent_recipients:
        required.add("recipients")
    if ctx.consent_countries:
        required |= {"third_country", "transfer_safeguards"}
    layers: list[Prompt] = [*ctx.flow.notice, *full]
    gaps: dict[str, list[str]] = {}
    for item in sorted(required):
        for lang in ctx.flow.languages:
            if not ctx.covered(layers, item, lang):
                gaps.setdefault(item, []).append(lang)
    if gaps:
        listed = "; ".join(_gap(layers, item, langs) for item, langs in gaps.items())
        yield ctx.finding(
            "R8",
            "full_notice" if "full_notice" in ctx.smap.positions else "notice",
            f"notice and full notice together do not say: {listed}",
            "expected every Art. 13 item claimed in covers by a segment whose words say it",
        )


def _gap(layers: list[Prompt], item: str, langs: list[str]) -> str:
    """An item R8 misses, and why: unclaimed, or claimed by segments whose words do not say it
    (that claim is also R9's finding, or R7's where other languages say it)."""
    claimed = [p.id for p in layers if item in p.covers]
    if not claimed:
        return f"{item} ({', '.join(langs)})"
    by = ", ".join(f"'{c}'" for c in claimed)
    return f"{item} ({', '.join(langs)}: claimed by {by}, whose words do not say it)"


def r7_every_language_complete(ctx: Context) -> Iterator[Diagnostic]:
    """R7 — every language has the complete notice: no language's version of a segment is less
    than half as long as the longest (a warning below 70 %). (That each covered fact is said in
    every language is checked with the claims, by `r9_covers_claims_are_true`.)"""
    langs = ctx.flow.languages
    if len(langs) < 2:
        return
    for prompt in ctx.prompts(NOTICE, FULL):
        seconds = {lang: ctx.seconds(prompt, lang) for lang in langs}
        longest_lang = max(seconds, key=lambda lang: seconds[lang])
        longest = seconds[longest_lang]
        if longest <= 0:
            continue
        for lang, s in seconds.items():
            ratio = s / longest
            estimated = ctx.estimated(prompt, lang) or ctx.estimated(prompt, longest_lang)
            how = " (estimated from the texts: no audio made for them)" if estimated else ""
            severity: Severity
            if ratio < RATIO_ERROR:
                severity = "error"
            elif ratio < RATIO_WARNING and longest >= RATIO_MIN_SECONDS:
                severity = "warning"
            else:
                continue
            yield ctx.finding(
                "R7",
                f"prompt.{prompt.id}.say.{lang}",
                f"the '{lang}' version of segment '{prompt.id}' plays {s:.1f} s, {ratio:.0%} of"
                f" the '{longest_lang}' version ({longest:.1f} s){how}",
                "expected every language to say the same things (at least half as long as the"
                " longest version)",
                severity,
            )


def r17_withdrawal_by_phone(ctx: Context) -> Iterator[Diagnostic]:
    """R17 — withdrawing is as easy as consenting: the segment covering withdrawal names a way by
    phone (not only post or e-mail) where it speaks of withdrawing (`Reading.withdrawal_ways`: a
    full-notice key announced elsewhere in the segment is not one), and every consent purpose, in
    every language the flow serves, has a withdrawal flow (kind: withdrawal) of the same
    controller (`same_controller`) in the same folder."""
    if ctx.flow.is_withdrawal:
        return
    for prompt in ctx.flow.notice:
        if "withdrawal" not in prompt.covers:
            continue
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            ways = r.withdrawal_ways()
            if ways is None or r.fact("withdrawal") is False:
                continue  # the claim itself is R9's
            by_phone, by_other = ways
            if by_phone:
                continue
            only = " only by post, e-mail or the web" if by_other else ""
            yield ctx.finding(
                "R17",
                f"prompt.{prompt.id}.say.{lang}",
                f"the '{lang}' text of segment '{prompt.id}' explains withdrawal{only} but names"
                " no way to do it by phone",
                "expected the phone way, e.g. 'call this number again': withdrawing must be as"
                " easy as consenting",
            )
    if not ctx.looks_at_folder:
        return
    withdrawal_flows = [f for f in ctx.folder_flows() if f.is_withdrawal]
    controller = ctx.flow.controller.name
    folder = os.path.dirname(ctx.flow.source_path) or "."
    for purpose in ctx.flow.consent_purposes:
        unserved: dict[str, list[str]] = {}  # why -> the languages it holds for: one finding
        for lang in ctx.flow.languages:
            reasons = [_why_not(f, controller, purpose.id, lang) for f in withdrawal_flows]
            if any(reason is None for reason in reasons):
                continue
            found = "; ".join(r for r in reasons if r) or "there is no withdrawal flow there"
            unserved.setdefault(found, []).append(lang)
        for found, langs in unserved.items():
            spoken = ", ".join(f"'{lang}'" for lang in langs)
            yield ctx.finding(
                "R17",
                f"purpose.{purpose.id}",
                f"no withdrawal flow of {controller} in {folder} serves '{purpose.id}' in"
                f" {spoken} ({found}): the notice promises a withdrawal by phone nobody can make",
                f"expected a flow with kind: withdrawal, controller {controller}, asking about"
                f" '{purpose.id}' in {spoken}, next to this flow",
            )


def _why_not(flow: Flow, controller: str, purpose: str, lang: str) -> str | None:
    """Why a withdrawal flow does not serve a consent purpose in a language (None: it does)."""
    name = os.path.basename(flow.source_path)
    if not same_controller(flow.controller.name, controller):
        return f"{name} withdraws for {flow.controller.name}, not {controller}"
    if flow.match_language(lang) is None:
        return f"{name} does not speak '{lang}'"
    if not any(q.purpose == purpose for q in flow.questions):
        asks = ", ".join(f"'{q.purpose}'" for q in flow.questions) or "nothing"
        return f"{name} asks about {asks}, not '{purpose}'"
    return None
