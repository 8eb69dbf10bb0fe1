"""What the section walk cannot check alone, run on what it collected: references between
sections (a question's purpose, each purpose asked once, unique prompt ids), the key placeholders
of every text spoken as the configured keys, and where each prompt part stands in the file.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node

from consent_ivr.flow.model import Basis
from consent_ivr.flow.schema import Checker, Parsed, did_you_mean, one_of, prompt_specs

#: `{accept}` in a text is spoken as the accept key; `{{` and `}}` are literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PLACEHOLDERS = ("accept", "decline", "full_notice", "repeat")


def check_cross(c: Checker, p: Parsed, top: dict[str, tuple[Node, Node]]) -> None:
    """References between sections: what a question asks about, prompt ids. (The rules on what a
    flow says and declares — R1 to R19 — are the linter's: `consent_ivr.lint`.)"""
    asked: dict[str, Node] = {}
    purposes_known = "purposes" in top and isinstance(top["purposes"][1], MappingNode)
    for q in p.questions:
        if q.purpose is None or q.purpose_node is None or not purposes_known:
            continue
        if q.purpose not in p.purposes:
            consent = [k for k, (v, _n) in p.purposes.items() if v and v.basis is Basis.CONSENT]
            guess = did_you_mean(q.purpose, p.purposes)
            c.error(
                q.purpose_node,
                f"question asks about purpose '{q.purpose}', which is not defined in purposes",
                f"did you mean '{guess}'?"
                if guess
                else f"expected one of the consent purposes: {one_of(consent) or '(none)'}",
            )
            continue
        if q.purpose in asked:
            line = asked[q.purpose].start_mark.line + 1
            c.error(
                q.purpose_node,
                f"purpose '{q.purpose}' is asked twice (first at line {line})",
                "expected one question per consent purpose",
            )
        asked[q.purpose] = q.purpose_node

    # Prompt ids are unique (they name audio files).
    seen: dict[str, Node] = {}
    for spec in prompt_specs(p):
        if spec.id is None:
            continue
        if spec.id in seen:
            line = seen[spec.id].start_mark.line + 1
            c.error(
                spec.id_node,
                f"duplicate prompt id '{spec.id}' (first used at line {line})",
                "expected a unique id for every prompt (it names the audio file; noinput_N,"
                " nomatch_N and close_KIND are taken)",
            )
        else:
            seen[spec.id] = spec.id_node


def render_placeholders(c: Checker, p: Parsed) -> None:
    """Speak `{accept}`, `{decline}`, `{full_notice}`, `{repeat}` as the configured keys, so a
    text cannot name another key than the one that does what it says (R1)."""
    keys = p.keys
    for t in c.texts:
        for lang, text in list(t.texts.items()):
            if "{" not in text and "}" not in text:
                continue
            problems: list[str] = []
            unbuilt: list[str] = []

            def sub(
                m: re.Match[str], problems: list[str] = problems, unbuilt: list[str] = unbuilt
            ) -> str:
                whole, name = m.group(0), m.group(1)
                if whole in ("{{", "}}"):
                    return whole[0]
                if name is None:
                    problems.append(f"a lone '{whole}' (write '{whole * 2}' for a brace)")
                    return whole
                name = name.strip()
                if name == "date":
                    problems.append(
                        "{date}: a prompt is recorded once for every caller and its audio is"
                        " hashed in the evidence, so it cannot speak a per-call date (the earlier"
                        " decision's time is in the record's link to it)"
                    )
                    return whole
                if name not in PLACEHOLDERS:
                    guess = did_you_mean(name, PLACEHOLDERS)
                    hint = f" (did you mean {{{guess}}}?)" if guess else ""
                    problems.append(f"unknown placeholder {{{name}}}{hint}")
                    return whole
                if keys is None:  # choice.keys has an error, reported there
                    unbuilt.append(name)
                    return whole
                key = getattr(keys, name)
                if key is None:
                    problems.append(f"{{{name}}}, but choice.keys.{name} is null")
                    return whole
                return str(key)

            rendered = _PLACEHOLDER.sub(sub, text)
            for problem in problems:
                c.error(
                    t.nodes[lang],
                    f"the '{lang}' text of {t.where} has {problem}",
                    f"expected one of {', '.join('{' + n + '}' for n in PLACEHOLDERS)}",
                )
            t.texts[lang] = rendered
            if unbuilt:
                t.unbuilt.add(lang)


def place_prompts(c: Checker, p: Parsed) -> None:
    for spec in prompt_specs(p):
        if spec.id is None:
            continue
        base = f"prompt.{spec.id}"
        c.place(base, spec.id_node)
        if spec.text is not None:
            c.place(f"{base}.say", spec.text.node)
            for lang, node in spec.text.nodes.items():
                c.place(f"{base}.say.{lang}", node)
        c.place(f"{base}.covers", spec.covers_node)
        for tag, node in spec.tag_nodes.items():
            c.place(f"{base}.covers.{tag}", node)
