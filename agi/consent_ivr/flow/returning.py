"""The `returning:` section: re-using a returning caller's earlier decision (R18, off by default).

    returning:
      max_age: 30d                    # a decision older than this is asked again
      remember: [granted, declined]   # the outcomes that are honoured
      say:                            # the reminder played instead of the first layer
        granted: {de: ..., en: ...}
        declined: {de: ..., en: ...}
      allow_recording: false          # a `recording` purpose is never re-used unless true

Each reminder is one prompt (``reminder_granted``, ``reminder_declined``) with its own audio,
recorded once for every caller like every other prompt: the evidence hashes the audio played
(R13), so a reminder cannot speak a per-call date. ``{date}`` is refused with that reason; the
earlier decision's time is in the new record's link to it. What the reminder must say and how long
a decision may be remembered are the linter's (`consent_ivr.lint.rules_returning`).
"""

from __future__ import annotations

import re

from yaml.nodes import Node, ScalarNode

from consent_ivr.flow.model import REMEMBER_OUTCOMES
from consent_ivr.flow.schema import TAG_BOOL, Checker, Parsed, PromptSpec, ReturningSpec, one_of

_RETURNING = {"max_age": True, "remember": True, "say": True, "allow_recording": False}
_MAX_AGE = re.compile(r"\s*(\d+)\s*d\s*")


def check_returning(c: Checker, p: Parsed, node: Node) -> None:
    """The block into `p.returning` (its parts None where they are wrong)."""
    fields = c.mapping(node, "returning", _RETURNING)
    if fields is None:
        return
    spec = ReturningSpec(node)
    p.returning = spec
    c.place("returning", node)
    if p.kind == "withdrawal":
        c.error(
            node,
            "a withdrawal flow has a returning block",
            "expected none: a withdrawal is confirmed in every call that asks for it",
        )
    if "max_age" in fields:
        a_node = fields["max_age"][1]
        c.place("returning.max_age", a_node)
        m = (
            _MAX_AGE.fullmatch(a_node.value)
            if isinstance(a_node, ScalarNode) and a_node.tag != TAG_BOOL
            else None
        )
        if m is None or int(m.group(1)) < 1:
            c.wrong_type(a_node, "returning.max_age", "a number of days, e.g. 30d")
        else:
            spec.max_age_days = int(m.group(1))
    if "remember" in fields:
        r_node = fields["remember"][1]
        items = c.text_list(r_node, "returning.remember", "granted or declined")
        if items is not None:
            seen: list[str] = []
            ok = True
            for word, item in items:
                if word not in REMEMBER_OUTCOMES:
                    c.error(
                        item,
                        f"returning.remember lists '{word}'",
                        f"expected {one_of(REMEMBER_OUTCOMES)}: only a decision by key is"
                        " remembered (none and error are asked again)",
                    )
                    ok = False
                elif word in seen:
                    c.error(item, f"'{word}' is listed twice", "expected each outcome once")
                    ok = False
                else:
                    seen.append(word)
            if not items:
                c.error(r_node, "returning.remember is an empty list", "expected granted")
            elif ok:
                spec.remember = tuple(k for k in REMEMBER_OUTCOMES if k in seen)
    if "say" in fields:
        say = c.entries(fields["say"][1], "returning.say")
        for outcome, (key_node, text_node) in (say or {}).items():
            if outcome not in REMEMBER_OUTCOMES:
                c.error(
                    key_node,
                    f"returning.say has a text for '{outcome}'",
                    f"expected a reminder per outcome of remember ({one_of(REMEMBER_OUTCOMES)})",
                )
                continue
            text = c.text(text_node, f"returning.say {outcome}")
            spec.reminders[outcome] = PromptSpec(f"reminder_{outcome}", key_node, text)
        if say is not None and spec.remember is not None:
            for outcome in spec.remember:
                if outcome not in spec.reminders:
                    c.error(
                        fields["say"][1],
                        f"returning.say has no reminder for '{outcome}', which remember lists",
                        f"expected say: {{{outcome}: ...}}, the reminder a caller whose earlier"
                        f" decision was {outcome} hears",
                    )
            for outcome, reminder in list(spec.reminders.items()):
                if outcome not in spec.remember:
                    c.error(
                        reminder.id_node,
                        f"returning.say has a reminder for '{outcome}', which remember does not"
                        " list",
                        f"expected '{outcome}' in remember, or no reminder for it",
                    )
        spec.reminders = {k: spec.reminders[k] for k in REMEMBER_OUTCOMES if k in spec.reminders}
    if "allow_recording" in fields:
        b_node = fields["allow_recording"][1]
        if isinstance(b_node, ScalarNode) and b_node.tag == TAG_BOOL:
            spec.allow_recording = b_node.value.lower() in ("true", "yes", "on")
            c.place("returning.allow_recording", b_node)
        else:
            c.wrong_type(b_node, "returning.allow_recording", "true or false")
