"""Content rules on the `returning:` block (R18 with R2, R6, R17, R19): how long a decision may be
remembered, what the reminder must say, and which purposes may be re-used at all.

Each rule is one function ``rule(ctx) -> Iterator[Diagnostic]`` whose docstring starts with its
R-number; `consent_ivr.lint.check.RULES` lists them. The engine's side (the reminder path, what
it honours) is proved by `consent_ivr.lint.proof`.
"""

from __future__ import annotations

from collections.abc import Iterator

from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.lint.context import Context

#: The longest a decision may be remembered: 180 days. Consent is per call by default and
#: re-use must be bounded (R18; EDPB Guidelines 05/2020 §110-111: renew consent at appropriate
#: intervals); the nearest published figure for a remembered choice is the CNIL's six months for
#: a cookie choice (Délibération 2020-091), which this follows. Beyond it, a caller's memory of a
#: phone decision is gone, and the reminder no longer reminds.
MAX_AGE_DAYS = 180

#: A first notice segment longer than this is heard by a returning caller in every call before
#: the reminder (the look-up runs while it plays); a greeting-length segment keeps that short.
FIRST_SEGMENT_SECONDS = 8.0


def r18_returning_is_bounded(ctx: Context) -> Iterator[Diagnostic]:
    """R18 — re-use across calls is bounded: ``max_age`` is at most `MAX_AGE_DAYS` days. Warns
    when the first notice segment (played to a returning caller before the reminder, while the
    store is asked) is long, or is the whole first layer (then the reminder saves nothing)."""
    returning = ctx.flow.returning
    if returning is None:
        return
    if returning.max_age_days > MAX_AGE_DAYS:
        yield ctx.finding(
            "R18",
            "returning.max_age",
            f"returning.max_age is {returning.max_age_days} days",
            f"expected at most {MAX_AGE_DAYS}d: a remembered decision must be renewed at"
            " appropriate intervals (EDPB 05/2020 §110-111; the CNIL's six months for a"
            " remembered choice)",
        )
    if len(ctx.flow.notice) < 2:
        yield ctx.finding(
            "R18",
            "returning",
            "the first layer is one segment, which a returning caller hears in full before"
            " the reminder",
            "expected a short first segment (e.g. who is calling) before the rest of the notice",
            "warning",
        )
        return
    first = ctx.flow.notice[0]
    for lang in ctx.flow.languages:
        seconds = ctx.seconds(first, lang)
        if seconds > FIRST_SEGMENT_SECONDS:
            yield ctx.finding(
                "R18",
                f"prompt.{first.id}.say.{lang}",
                f"the first notice segment '{first.id}' ({lang}) lasts {seconds:.1f} s; a"
                " returning caller hears it in every call before the reminder",
                f"expected at most {FIRST_SEGMENT_SECONDS:.0f} s (e.g. who is calling)",
                "warning",
            )


def r17_reminder_offers_the_change(ctx: Context) -> Iterator[Diagnostic]:
    """R17 — a reminder names the earlier decision and offers to change it with one key: the
    reminder of a grant names agreeing and the decline key (withdrawing costs one key, R2,
    R17); the reminder of a decline names declining and the accept key (which leads to the
    notice and the question, R5)."""
    returning = ctx.flow.returning
    if returning is None:
        return
    keys = ctx.flow.choice.keys
    for outcome, prompt in returning.reminder.items():
        change = keys.decline if outcome == "granted" else keys.accept
        role = "accept" if outcome == "granted" else "decline"
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            where = f"prompt.{prompt.id}.say.{lang}"
            if r.cues is not None:
                named = (
                    r.says_affirmed(r.cues.roles["accept"])
                    if role == "accept"
                    else r.says(r.cues.roles["decline"])
                )
                if not named:
                    yield ctx.finding(
                        "R17",
                        where,
                        f"the reminder of a {outcome} decision ({lang}) does not say what the"
                        " caller decided",
                        f"expected words for {'agreeing' if role == 'accept' else 'declining'},"
                        " e.g. 'On an earlier call you agreed that ...'",
                    )
            if not any(m.key == change for m in r.mentions):
                yield ctx.finding(
                    "R17",
                    where,
                    f"the reminder of a {outcome} decision ({lang}) does not offer key {change}"
                    " to change it",
                    f"expected 'press {{{'decline' if change == keys.decline else 'accept'}}}'"
                    " in the reminder: changing one's mind costs one key",
                )


def r19_no_reuse_for_recording(ctx: Context) -> Iterator[Diagnostic]:
    """R19 — a recording purpose's decision is not re-used unless the flow states it
    (``allow_recording: true``, then a warning): recording starts only after an explicit grant,
    and a caller may not remember one given weeks ago. (The engine refuses it as well.)"""
    returning = ctx.flow.returning
    if returning is None:
        return
    asked = {q.purpose for q in ctx.flow.questions}
    recording = [p.id for p in ctx.flow.purposes if p.id in asked and p.kind == "recording"]
    if not recording:
        return
    if not returning.allow_recording:
        yield ctx.finding(
            "R19",
            "returning",
            f"returning would re-use the decision on the recording purpose {recording[0]!r}",
            "expected no returning block in a flow that asks about recording, or"
            " allow_recording: true with a documented reason",
        )
    else:
        yield ctx.finding(
            "R19",
            "returning.allow_recording",
            f"a grant to record the call ({recording[0]!r}) is re-used from an earlier call",
            "expected a documented reason: recording normally needs an explicit grant in the"
            " call itself",
            "warning",
        )
