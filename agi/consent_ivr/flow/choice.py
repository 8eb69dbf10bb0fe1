"""The choice section: the keys, the answer timeout, accept during the notice, the caps and the
re-prompts after silence (noinput) and after a wrong key (nomatch)."""

from __future__ import annotations

import re

from yaml.nodes import Node, ScalarNode, SequenceNode

from consent_ivr.flow.model import DTMF_KEYS, Caps, Keys
from consent_ivr.flow.schema import TAG_BOOL, Checker, Parsed, PromptSpec, describe, is_null

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*")

TIMEOUT_MIN_MS = 500
TIMEOUT_MAX_MS = 60_000
MAX_CAP = 9

_CHOICE = {
    "keys": False,
    "timeout": False,
    "accept_during_notice": False,
    "max": False,
    "noinput": True,
    "nomatch": True,
}
_KEYS = {"accept": False, "decline": False, "repeat": False, "full_notice": False}
_MAX = {
    "noinput": False,
    "nomatch": False,
    "total": False,
    "replays": False,
    "early_accepts": False,
}


def check_choice(c: Checker, p: Parsed, node: Node) -> None:
    """The keys, timeout, caps and re-prompts into `p` (None for a part with an error)."""
    fields = c.mapping(node, "choice", _CHOICE)
    if fields is None:
        return
    # Keys
    keys: dict[str, str | None] = {"accept": "1", "decline": "2", "repeat": "0", "full_notice": "9"}
    keys_ok = True
    if "keys" in fields:
        kf = c.mapping(fields["keys"][1], "choice.keys", _KEYS)
        if kf is None:
            keys_ok = False
        else:
            for name, (_k, v) in kf.items():
                p.key_nodes[name] = v
                c.place(f"key.{name}", v)
                if is_null(v):
                    if name in ("accept", "decline"):
                        c.error(
                            v,
                            f"the {name} key is empty",
                            f'expected one key of {DTMF_KEYS} (write * and # in quotes: "#")',
                        )
                        keys_ok = False
                    else:
                        keys[name] = None
                    continue
                if not isinstance(v, ScalarNode) or v.value not in set(DTMF_KEYS):
                    shown = f"'{v.value}'" if isinstance(v, ScalarNode) else describe(v)
                    c.error(
                        v,
                        f"the {name} key {shown} is not a single telephone key",
                        f"expected exactly one of {DTMF_KEYS}",
                    )
                    keys[name] = "?"
                    keys_ok = False
                    continue
                keys[name] = v.value
    if keys_ok or "keys" in fields:
        seen: dict[str, str] = {}
        for name in ("accept", "decline", "repeat", "full_notice"):
            key = keys[name]
            if key is None or key not in DTMF_KEYS:
                continue
            if key in seen:
                other = seen[key]
                c.error(
                    p.key_nodes.get(name, fields["keys"][1] if "keys" in fields else node),
                    f"key '{key}' is used for both {other} and {name}",
                    "expected a different key for each action (the caller must have a real choice)",
                )
                keys_ok = False
            else:
                seen[key] = name
    if keys_ok:
        accept, decline = keys["accept"], keys["decline"]
        assert accept is not None and decline is not None
        p.keys = Keys(accept, decline, keys["repeat"], keys["full_notice"])

    if "timeout" in fields:
        t_node = fields["timeout"][1]
        m = (
            _DURATION.fullmatch(t_node.value)
            if isinstance(t_node, ScalarNode) and not is_null(t_node)
            else None
        )
        if m is None:
            p.timeout_ms = None
            c.wrong_type(t_node, "timeout", "a duration with unit, e.g. 6s, 6.5s or 500ms")
        else:
            ms = round(float(m.group(1)) * (1 if m.group(2) == "ms" else 1000))
            if not TIMEOUT_MIN_MS <= ms <= TIMEOUT_MAX_MS:
                p.timeout_ms = None
                c.error(
                    t_node,
                    f"timeout {t_node.value.strip()} is out of range",
                    f"expected between {TIMEOUT_MIN_MS}ms and {TIMEOUT_MAX_MS // 1000}s",
                )
            else:
                p.timeout_ms = ms

    if "accept_during_notice" in fields:
        a_node = fields["accept_during_notice"][1]
        if isinstance(a_node, ScalarNode) and a_node.tag == TAG_BOOL:
            p.accept_during_notice = a_node.value.lower() in ("true", "yes", "on")
            if p.accept_during_notice:
                c.warning(
                    a_node,
                    "accept_during_notice is true: an accept pressed before the notice has"
                    " played completely will count",
                    "expected false unless there is a documented reason",
                    "R5",
                )
        else:
            c.wrong_type(a_node, "accept_during_notice", "true or false")

    caps = {"noinput": 2, "nomatch": 2, "total": 3, "replays": 3, "early_accepts": 3}
    caps_ok = True
    if "max" in fields:
        mf = c.mapping(fields["max"][1], "choice.max", _MAX)
        if mf is None:
            caps_ok = False
        else:
            for name, (_k, v) in mf.items():
                c.place(f"max.{name}", v)
                low = 1 if name == "total" else 0
                n = c.whole_number(v, f"max {name}", low, MAX_CAP)
                if n is None:
                    caps_ok = False
                else:
                    caps[name] = n
    if caps_ok:
        p.caps = Caps(**caps)

    for kind in ("noinput", "nomatch"):
        if kind not in fields:
            continue
        k_node = fields[kind][1]
        specs: list[PromptSpec] = []
        if not isinstance(k_node, SequenceNode):
            c.wrong_type(k_node, kind, f"a list of re-prompts, e.g. {kind}: [{{de: ..., en: ...}}]")
        elif not k_node.value:
            c.error(k_node, f"{kind} is an empty list", "expected at least one re-prompt")
        else:
            for n, item in enumerate(k_node.value, 1):
                specs.append(PromptSpec(f"{kind}_{n}", item, c.text(item, f"{kind} {n}")))
        setattr(p, kind, specs)
