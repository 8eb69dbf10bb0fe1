"""Content rules on the declared purposes: they are what the processing is (R4, R10, R16), one
decision each (R11), and no processing is asked twice (R6).

These read the declarations (`basis`, `kind`, `recipients`, `third_countries`, `data`) and, for
bundles, the words of a consent purpose's description and question (cue words of each kind).
"""

from __future__ import annotations

from collections.abc import Iterator

from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.flow.model import (
    CONSENT_KINDS,
    GA4_CONSENT_PURPOSES,
    GA4_GATE_PURPOSE,
    Basis,
    Purpose,
)
from consent_ivr.lint.context import Context, country_names
from consent_ivr.lint.cues import cues_for
from consent_ivr.lint.text import Reading
from consent_ivr.lint.words import words


def _kinds(p: Purpose) -> tuple[str, ...]:
    return p.kinds or (p.kind,)


def r4_legitimate_interest_stays_basic(ctx: Context) -> Iterator[Diagnostic]:
    """R4 — a legitimate-interest purpose does nothing that needs consent: no recipients that use
    the data for their own purposes, no third countries, and no linkage, advertising,
    personalisation, profiling or recording (processors acting for the controller are fine)."""
    for p in ctx.flow.purposes:
        if p.basis is not Basis.LEGITIMATE_INTEREST:
            continue
        if p.recipients:
            yield ctx.finding(
                "R4",
                f"purpose.{p.id}.recipients",
                f"purpose '{p.id}' runs on legitimate interest but gives the data to"
                f" {', '.join(p.recipients)}, who use it for their own purposes",
                "expected basis: consent for a purpose with recipients (BayLDA: once data reach"
                " Google, consent is required), or `processors:` for providers acting for you",
            )
        if p.third_countries:
            yield ctx.finding(
                "R4",
                f"purpose.{p.id}.third_countries",
                f"purpose '{p.id}' runs on legitimate interest but sends the data to"
                f" {', '.join(p.third_countries)}",
                "expected basis: consent for a transfer to a third country",
            )
        needs = [k for k in _kinds(p) if k in CONSENT_KINDS]
        if needs:
            yield ctx.finding(
                "R4",
                f"purpose.{p.id}.kind" if p.kinds else f"purpose.{p.id}",
                f"purpose '{p.id}' is {'/'.join(needs)} processing on legitimate interest",
                "expected basis: consent: linkage, advertising, personalisation, profiling and"
                " recording need the caller's consent",
            )


def r10_no_fake_choice(ctx: Context) -> Iterator[Diagnostic]:
    """R10 — the question governs only consent purposes: a legitimate-interest purpose is never
    asked, and the basic call analytics the tracking step records for every call (kind
    `analytics`) is never put to the caller as a consent choice."""
    for q in ctx.flow.questions:
        p = next((x for x in ctx.flow.purposes if x.id == q.purpose), None)
        if p is not None and p.basis is not Basis.CONSENT:
            yield ctx.finding(
                "R10",
                f"prompt.{q.prompt.id}",
                f"question '{q.prompt.id}' asks about '{p.id}', which is based on {p.basis.value}",
                "expected questions only for purposes with basis: consent (no fake choice)",
            )
    if ctx.flow.is_withdrawal:
        return
    for p in ctx.flow.consent_purposes:
        if "analytics" in _kinds(p):
            yield ctx.finding(
                "R10",
                f"purpose.{p.id}.basis",
                f"purpose '{p.id}' is the basic call analytics, which the tracking step records"
                " for every call whatever the caller chooses: asking for it is a fake choice",
                "expected basis: legitimate_interest and no question for it (or a kind other"
                " than analytics if it is really something else)",
            )


def _bundle(reading: Reading) -> list[str]:
    cues = reading.cues
    if cues is None:
        return []
    return [kind for kind, phrases in cues.kinds.items() if reading.says(phrases)]


def r11_one_decision_per_purpose(ctx: Context) -> Iterator[Diagnostic]:
    """R11 — each consent purpose is one kind of processing with its own question: a purpose that
    declares several kinds, or whose description or question names several kinds (linkage and
    advertising, say), bundles decisions; every consent purpose is asked."""
    asked = {q.purpose for q in ctx.flow.questions}
    questions = {q.purpose: q.prompt for q in ctx.flow.questions}
    for p in ctx.flow.purposes:
        if len(p.kinds) > 1:
            yield ctx.finding(
                "R11",
                f"purpose.{p.id}.kind",
                f"purpose '{p.id}' declares {len(p.kinds)} kinds of processing"
                f" ({', '.join(p.kinds)}) under one decision",
                "expected one purpose per kind, each with its own question (granting one must"
                " never imply another)",
            )
        if p.basis is not Basis.CONSENT:
            continue
        if p.id not in asked:
            yield ctx.finding(
                "R11",
                f"purpose.{p.id}",
                f"consent purpose '{p.id}' is never asked",
                f"expected a question with purpose: {p.id} (one decision per purpose)",
            )
        if ctx.flow.is_withdrawal:
            continue
        for lang in ctx.flow.languages:
            texts = [("description", Reading(p.description[lang], cues_for(lang),
                                             input_prompt=False, withdrawal=False))]  # fmt: skip
            if p.id in questions:
                texts.append(("question", ctx.reading(questions[p.id], lang)))
            asked_elsewhere = {
                k for o in ctx.flow.consent_purposes if o.id != p.id for k in _kinds(o)
            }
            for what, reading in texts:
                kinds = _bundle(reading)
                if what == "description":  # context for a kind asked separately is no bundle
                    kinds = [k for k in kinds if k not in asked_elsewhere]
                if len(kinds) > 1:
                    where = (
                        f"purpose.{p.id}.description"
                        if what == "description"
                        else f"prompt.{questions[p.id].id}.say.{lang}"
                    )
                    yield ctx.finding(
                        "R11",
                        where,
                        f"the '{lang}' {what} of '{p.id}' bundles {' and '.join(kinds)} in one"
                        " decision",
                        "expected one consent purpose (and question) per kind of processing",
                    )


def _same(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return {" ".join(words(x)) for x in a} == {" ".join(words(x)) for x in b}


def r6_no_question_twice(ctx: Context) -> Iterator[Diagnostic]:
    """R6 — no nagging: two consent purposes that declare the same processing (same kind,
    recipients, countries and data) are one question asked twice. (That every call ends within
    the caps and a decided question is never asked again is proved by the whole-flow proof.)"""
    consent = [p for p in ctx.flow.consent_purposes if p.kind != "other" or p.data]
    for i, a in enumerate(consent):
        for b in consent[i + 1 :]:
            if (
                _kinds(a) == _kinds(b)
                and _same(a.recipients, b.recipients)
                and _same(a.third_countries, b.third_countries)
                and _same(a.data, b.data)
            ):
                yield ctx.finding(
                    "R6",
                    f"purpose.{b.id}",
                    f"purposes '{a.id}' and '{b.id}' declare the same processing ({a.kind},"
                    f" recipients {', '.join(a.recipients) or 'none'}): one question asked twice",
                    "expected one purpose for it, or declarations that say how they differ"
                    " (kind, recipients, data)",
                )


def _names_google(names: tuple[str, ...]) -> bool:
    return any("google" in words(n) for n in names)


def _names_usa(names: tuple[str, ...]) -> bool:
    usa = {" ".join(words(n)) for n in country_names("USA", cues_for("en"))}
    return any(" ".join(words(n)) in usa for n in names)


def r16_tracking_purposes_declared(ctx: Context) -> Iterator[Diagnostic]:
    """R16 — the purpose whose grant opens the GA4 send (`ga_linkage`) is asked for consent and
    declares Google as recipient and the USA as third country (R9 then makes the first layer say
    so); a consent purpose the tracking step cannot map to GA4 gets a warning saying what is
    sent for it."""
    if ctx.flow.is_withdrawal:
        return
    for p in ctx.flow.purposes:
        if p.id == GA4_GATE_PURPOSE:
            if p.basis is not Basis.CONSENT:
                yield ctx.finding(
                    "R16",
                    f"purpose.{p.id}.basis",
                    f"the tracking step sends '{p.id}' calls to Google Analytics, but the"
                    f" purpose is based on {p.basis.value}",
                    "expected basis: consent (R4: nothing reaches Google before a grant)",
                )
            for field, names, ok, says, fix in (
                ("recipients", p.recipients, _names_google(p.recipients), "Google",
                 "recipients: [Google] (Google uses the data for its own purposes)"),
                ("third_countries", p.third_countries, _names_usa(p.third_countries),
                 "the USA", "third_countries: [USA]"),
            ):  # fmt: skip
                if not ok:
                    yield ctx.finding(
                        "R16",
                        f"purpose.{p.id}.{field}" if names else f"purpose.{p.id}",
                        f"the tracking step sends '{p.id}' calls to Google (also in the USA), but"
                        f" its {field} do not name {says}",
                        f"expected {fix}",
                    )
    mapped = {GA4_GATE_PURPOSE, *GA4_CONSENT_PURPOSES.values()}
    for p in ctx.flow.consent_purposes:
        if p.id in mapped or "recording" in _kinds(p):
            continue
        close = [m for m in mapped if m.replace("_", "") == p.id.replace("_", "") or
                 m.rstrip("s") == p.id.rstrip("s") or m.replace("ads_", "ad_") == p.id]  # fmt: skip
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        yield ctx.finding(
            "R16",
            f"purpose.{p.id}",
            f"the tracking step sends nothing to Google Analytics for '{p.id}'{hint}: only"
            f" '{GA4_GATE_PURPOSE}' opens the send, and only"
            f" {' / '.join(GA4_CONSENT_PURPOSES.values())} set GA4's consent fields (they say"
            " DENIED unless granted)",
            "expected a purpose id the tracking step knows, or a gate step of your own that"
            " checks this purpose (the decision is recorded and the gate can check it)",
            "warning",
        )
