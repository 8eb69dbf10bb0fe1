"""Content rules on the choice itself: what the keys are said to do (R1, R2), how a call ends (R3),
what the question may carry (R5), and recording and "hang up if you object" (R19).

Each rule is one function ``rule(ctx) -> Iterator[Diagnostic]`` whose docstring starts with its
R-number; `consent_ivr.lint.check.RULES` lists them. They read texts with the cue tables
(`consent_ivr.lint.text`): they are checks of natural language, not proofs.
"""

from __future__ import annotations

from collections.abc import Iterator

from consent_ivr.flow.diagnostics import Diagnostic
from consent_ivr.flow.model import Prompt
from consent_ivr.lint.context import (
    CLOSE,
    FULL,
    INPUT_ROLES,
    NOINPUT,
    NOMATCH,
    NOTICE,
    QUESTION,
    Context,
    country_names,
)
from consent_ivr.lint.text import host_letters

#: R5: a question or re-prompt may last 3 s per key it announces plus 3 s for one framing
#: sentence. A key announcement takes 1.5–2.5 s in the example flows ("Einverstanden: Taste 1."
#: 1.9 s, "If you do not agree, press 2." 2.0 s); the accept key counts from the first sample of
#: the question, so whatever plays beyond the announcements may never be heard.
SECONDS_PER_KEY = 3.0
SECONDS_FRAMING = 3.0


def _meaning(ctx: Context, role: str) -> str:
    if ctx.flow.is_withdrawal:
        return {
            "accept": "confirming the withdrawal",
            "decline": "cancelling",
            "full_notice": "the full notice",
            "repeat": "repeating",
        }[role]
    return {
        "accept": "agreeing",
        "decline": "declining",
        "full_notice": "the full notice",
        "repeat": "repeating",
    }[role]


def _key_roles(ctx: Context) -> dict[str, str]:
    keys = ctx.flow.choice.keys
    roles = {keys.accept: "accept", keys.decline: "decline"}
    if keys.repeat:
        roles[keys.repeat] = "repeat"
    if keys.full_notice:
        roles[keys.full_notice] = "full_notice"
    return roles


def _where(prompt: Prompt, lang: str) -> str:
    return f"prompt.{prompt.id}.say.{lang}"


def _label(ctx: Context, prompt: Prompt, lang: str) -> str:
    return (
        f"the '{lang}' text of {ctx.roles.get(prompt.id, 'prompt').replace('_', ' ')} '{prompt.id}'"
    )


def r1_keys_do_what_the_words_say(ctx: Context) -> Iterator[Diagnostic]:
    """R1 — every key the words bind to a meaning is the key configured for it, in every prompt
    and language: "press 2 to agree" with accept "1" would record a no as a yes. A key named in
    a prompt that takes input must do something. Warns when accept is not 1 or decline not 2
    (BayLDA: "1 yes, 2 no")."""
    keys = ctx.flow.choice.keys
    roles = _key_roles(ctx)
    by_role = {role: key for key, role in roles.items()}
    for prompt in ctx.prompts(NOTICE, FULL, QUESTION, NOINPUT, NOMATCH):
        for lang in ctx.flow.languages:
            seen: set[tuple[str, str | None]] = set()
            for m in ctx.reading(prompt, lang).mentions:
                if (m.key, m.role) in seen:
                    continue
                seen.add((m.key, m.role))
                configured = roles.get(m.key)
                if m.role is not None and configured != m.role:
                    right = by_role.get(m.role)
                    what = (
                        f"is the {configured.replace('_', '-')} key"
                        if configured
                        else "does nothing in this flow"
                    )
                    yield ctx.finding(
                        "R1",
                        _where(prompt, lang),
                        f"{_label(ctx, prompt, lang)} says key {m.key} is for"
                        f" {_meaning(ctx, m.role)}, but key {m.key} {what}",
                        f"expected key {right} for {_meaning(ctx, m.role)}"
                        if right
                        else f"expected no key for {_meaning(ctx, m.role)}: this flow has none",
                    )
                elif (
                    configured is None
                    and ctx.roles.get(prompt.id) in INPUT_ROLES
                    and m.sentence not in ctx.reading(prompt, lang).effort_sentences
                ):  # a second key to decline ("2 and then #") is R2's
                    yield ctx.finding(
                        "R1",
                        _where(prompt, lang),
                        f"{_label(ctx, prompt, lang)} names key {m.key}, which does nothing in"
                        " this flow",
                        f"expected only the flow's keys ({', '.join(sorted(roles))}); write"
                        " {accept} / {decline} to name a key by its meaning",
                    )
    if keys.accept != "1" or keys.decline != "2":
        yield ctx.finding(
            "R1",
            "key.accept" if keys.accept != "1" else "key.decline",
            f"the accept key is {keys.accept} and the decline key {keys.decline}",
            'expected accept "1" and decline "2", the choice callers know (BayLDA: key 1 yes,'
            " key 2 no)",
            "warning",
        )


def r2_both_choices_equal(ctx: Context) -> Iterator[Diagnostic]:
    """R2 — each question binds the accept key to agreeing and the decline key to declining, in
    the same prompt, in every language; a re-prompt that names one names both; declining never
    asks for more than one key press, for waiting or for hanging up."""
    keys = ctx.flow.choice.keys
    for prompt in ctx.prompts(QUESTION, NOINPUT, NOMATCH):
        role = ctx.roles[prompt.id]
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            label = _label(ctx, prompt, lang)
            # a meaning bound to the wrong key is R1's contradiction; R2 is a meaning not offered
            bound_accept = any(m.role == "accept" for m in r.mentions)
            bound_decline = any(m.role == "decline" for m in r.mentions)
            named_accept = any(m.key == keys.accept for m in r.mentions)
            named_decline = any(m.key == keys.decline for m in r.mentions)
            if role == QUESTION:
                if not bound_accept and r.cues is not None:
                    yield ctx.finding(
                        "R2",
                        _where(prompt, lang),
                        f"{label} does not say that key {keys.accept} means"
                        f" {_meaning(ctx, 'accept')}",
                        f"expected both keys with their meaning in the question, e.g."
                        f" '{_example(ctx, lang)}'",
                    )
                if not bound_decline and r.cues is not None:
                    yield ctx.finding(
                        "R2",
                        _where(prompt, lang),
                        f"{label} does not announce key {keys.decline} for"
                        f" {_meaning(ctx, 'decline')}: the caller must hear both choices in the"
                        " same prompt",
                        f"expected both keys with their meaning in the question, e.g."
                        f" '{_example(ctx, lang)}'",
                    )
                if r.cues is None and not (named_accept and named_decline):
                    yield ctx.finding(
                        "R2",
                        _where(prompt, lang),
                        f"{label} does not name both key {keys.accept} and key {keys.decline}",
                        "expected both keys announced in the same question",
                    )
            elif named_accept and not named_decline:
                yield ctx.finding(
                    "R2",
                    _where(prompt, lang),
                    f"{label} names key {keys.accept} but not key {keys.decline}: declining must"
                    " be offered as plainly as agreeing",
                    "expected both keys in every re-prompt that names one",
                )
            if r.declines_by_effort:
                yield ctx.finding(
                    "R2",
                    _where(prompt, lang),
                    f"{label} asks for more than one key press, for waiting or for hanging up to"
                    f" decline",
                    f"expected declining to be one press of key {keys.decline}, like agreeing",
                )
    for prompt in ctx.prompts(NOTICE, FULL):
        for lang in ctx.flow.languages:
            if ctx.reading(prompt, lang).declines_by_effort:
                yield ctx.finding(
                    "R2",
                    _where(prompt, lang),
                    f"{_label(ctx, prompt, lang)} offers declining by waiting, hanging up or more"
                    " key presses",
                    f"expected declining to be one press of key {keys.decline}, like agreeing",
                )


def _example(ctx: Context, lang: str) -> str:
    keys = ctx.flow.choice.keys
    base = lang.split("_")[0]
    if ctx.flow.is_withdrawal:
        if base == "de":
            return f"Widerrufen: Taste {keys.accept}. Abbrechen: Taste {keys.decline}."
        return f"To withdraw, press {keys.accept}. To cancel, press {keys.decline}."
    if base == "de":
        return f"Einverstanden: Taste {keys.accept}. Nicht einverstanden: Taste {keys.decline}."
    return f"If you agree, press {keys.accept}. If you do not agree, press {keys.decline}."


def r3_no_detriment(ctx: Context) -> Iterator[Diagnostic]:
    """R3 — no closing text sends the caller away, ends the call or refuses service: every
    outcome continues to the same dialplan (the engine never hangs up). Not for a withdrawal
    line: it is a line of its own, and nothing is withheld from a caller for what they chose
    there, so its closing texts may say goodbye."""
    if ctx.flow.is_withdrawal:
        return
    for kind, prompt in ctx.flow.close.items():
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            if r.cues is not None and r.says(r.cues.detriment):
                yield ctx.finding(
                    "R3",
                    _where(prompt, lang),
                    f"the '{lang}' closing text for '{kind}' tells the caller the call ends or"
                    " cannot go on",
                    "expected every outcome to continue the call (e.g. 'We are now connecting"
                    " you'): a decision must cost the caller nothing",
                )


def r5_questions_only_announce_keys(ctx: Context) -> Iterator[Diagnostic]:
    """R5 — what a caller must know before agreeing is in the first layer, which plays completely
    before the accept key counts. A question or re-prompt, where the accept key counts at once,
    carries only key announcements: no fact of the notice (recipients, countries, rights,
    withdrawal, …) outside its key sentences, no recipient or country the first layer does not
    name, and it is short (`SECONDS_PER_KEY` per key it announces plus `SECONDS_FRAMING`)."""
    facts = ["voluntary", "rights", "objection", "dpo", "complaint", "transfer_safeguards"]
    if not ctx.flow.is_withdrawal:
        facts.append("withdrawal")
    notice = ctx.flow.notice
    for prompt in ctx.prompts(QUESTION, NOINPUT, NOMATCH):
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            label = _label(ctx, prompt, lang)
            said: list[str] = []
            for name in ctx.all_recipients:
                if r.names(name, outside_keys=True):
                    said.append(f"the recipient {name}")
                elif r.names(name) and not any(ctx.reading(n, lang).names(name) for n in notice):
                    said.append(f"the recipient {name}, which the first layer never names")
            for country in ctx.all_countries:
                if any(r.names(c, outside_keys=True) for c in _country_names(ctx, country, lang)):
                    said.append(f"the country {country}")
                elif ctx.names_country(r, country) and not any(
                    ctx.names_country(ctx.reading(n, lang), country) for n in notice
                ):
                    said.append(f"the country {country}, which the first layer never names")
            if r.spells_host(host_letters(ctx.flow.policy_url), outside_keys=True):
                said.append("the policy address")
            if r.cues is not None and not ctx.flow.is_withdrawal:
                named = [k for k, phrases in r.cues.kinds.items() if r.says_affirmed(phrases)]
                said += [f"what is agreed to ({kind})" for kind in named]
            said += [name.replace("_", " ") for name in facts if r.fact(name, outside_keys=True)]
            if said:
                yield ctx.finding(
                    "R5",
                    _where(prompt, lang),
                    f"{label} says {', '.join(said)}: the accept key already counts while it"
                    " plays, so a caller can agree before hearing it",
                    "expected it in the first layer (notice), which plays completely before the"
                    " accept key counts; keep questions to the key announcements",
                )
            announced = len({m.key for m in r.mentions}) or 1
            limit = SECONDS_FRAMING + SECONDS_PER_KEY * announced
            seconds = ctx.seconds(prompt, lang)
            if seconds > limit:
                how = (
                    " (estimated from its text: no audio made for it)"
                    if ctx.estimated(prompt, lang)
                    else ""
                )
                yield ctx.finding(
                    "R5",
                    _where(prompt, lang),
                    f"{label} plays {seconds:.1f} s{how}, longer than {limit:.0f} s for the"
                    f" {announced} key(s) it announces",
                    "expected a short prompt: the key announcements and at most one framing"
                    " sentence; anything else belongs in the notice",
                )


def _country_names(ctx: Context, country: str, lang: str) -> tuple[str, ...]:
    return country_names(country, ctx.cues(lang))


def r19_recording_only_on_consent(ctx: Context) -> Iterator[Diagnostic]:
    """R19 — a recording purpose is asked for consent; a flow that speaks of recording the call
    declares such a purpose; "hang up if you object" (to the recording) is not consent. (Hanging
    up to decline anything else is R2's: declining that costs more than a key.)"""
    recording = [p for p in ctx.flow.purposes if "recording" in (p.kinds or (p.kind,))]
    for p in recording:
        if p.basis.value != "consent":
            yield ctx.finding(
                "R19",
                f"purpose.{p.id}.basis",
                f"purpose '{p.id}' records the call on {p.basis.value}",
                "expected basis: consent: a call may be recorded only after the caller pressed"
                " the accept key for it (§ 201 StGB)",
            )
    asked = any(p.basis.value == "consent" for p in recording)
    for prompt in ctx.prompts(NOTICE, FULL, QUESTION, NOINPUT, NOMATCH, CLOSE):
        for lang in ctx.flow.languages:
            r = ctx.reading(prompt, lang)
            if r.cues is None:
                continue
            if not asked and r.says(r.cues.recording):
                yield ctx.finding(
                    "R19",
                    _where(prompt, lang),
                    f"{_label(ctx, prompt, lang)} speaks of recording the call, but no purpose"
                    " of kind recording is asked",
                    "expected a purpose with kind: recording and basis: consent, with its own"
                    " question, or no recording",
                )
            if (
                ctx.roles.get(prompt.id) != CLOSE
                and r.speaks_of_recording
                and r.says(r.cues.hang_up_to_object)
            ):
                yield ctx.finding(
                    "R19",
                    _where(prompt, lang),
                    f"{_label(ctx, prompt, lang)} tells the caller to hang up (or end the call)"
                    " to object: that is no choice",
                    "expected the decline key as the way to say no; the call always continues",
                )
