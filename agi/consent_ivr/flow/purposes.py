"""The purposes section: each purpose's id, legal basis, description, kind and declared lists
(recipients, third countries, processors, data), read into the model's `Purpose`."""

from __future__ import annotations

from yaml.nodes import Node, SequenceNode

from consent_ivr.flow.model import PURPOSE_KINDS, Basis, Purpose
from consent_ivr.flow.schema import HINTS, WORD_ID, Checker, Parsed, did_you_mean, is_null

_PURPOSE = {
    "basis": True,
    "description": True,
    "kind": False,
    "recipients": False,
    "third_countries": False,
    "processors": False,
    "data": False,
}


def check_purposes(c: Checker, p: Parsed, node: Node) -> None:
    """Each purpose into `p.purposes` (None for one with an error) and its description texts."""
    found = c.entries(node, "purposes")
    if found is None:
        return
    if not found:
        c.error(node, "purposes is empty", f"expected {HINTS['purposes']}")
    for pid, (key_node, value_node) in found.items():
        where = f"purpose '{pid}'"
        ok = True
        if not WORD_ID.fullmatch(pid):
            c.error(
                key_node,
                f"purpose id '{pid}' has characters other than lowercase letters, digits and _",
                "expected an id like ga_linkage",
            )
            ok = False
        fields = c.mapping(value_node, where, _PURPOSE)
        if fields is None:
            p.purposes[pid] = (None, key_node)
            continue
        basis: Basis | None = None
        if "basis" in fields:
            b_node = fields["basis"][1]
            b = c.scalar_text(b_node, f"the basis of {where}", HINTS["basis"])
            if b is not None:
                try:
                    basis = Basis(b)
                except ValueError:
                    guess = did_you_mean(b, [x.value for x in Basis])
                    c.error(
                        b_node,
                        f"unknown basis '{b}' for {where}",
                        f"did you mean '{guess}'?" if guess else f"expected {HINTS['basis']}",
                    )
        description = None
        if "description" in fields:
            description = c.text(fields["description"][1], f"the description of {where}")
            if description is not None:
                p.purpose_texts[pid] = description
        c.place(f"purpose.{pid}", key_node)
        for key, (_k, v_node) in fields.items():
            c.place(f"purpose.{pid}.{key}", v_node)
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("recipients", "third_countries", "processors", "data"):
            if key in fields and not is_null(fields[key][1]):
                items = c.text_list(fields[key][1], f"{key} of {where}", "names")
                if items is None:
                    ok = False
                else:
                    lists[key] = tuple(v for v, _n in items)
        kinds: tuple[str, ...] = ()
        if "kind" in fields:
            kinds_found = _check_kind(c, fields["kind"][1], where)
            if kinds_found is None:
                ok = False
            else:
                kinds = kinds_found
        if ok and basis is not None and description is not None:
            purpose = Purpose(
                pid,
                basis,
                dict(description.texts),
                lists.get("recipients", ()),
                lists.get("third_countries", ()),
                kinds,
                lists.get("data", ()),
                lists.get("processors", ()),
            )
            p.purposes[pid] = (purpose, key_node)
        else:
            p.purposes[pid] = (None, key_node)


def _check_kind(c: Checker, node: Node, where: str) -> tuple[str, ...] | None:
    """`kind: linkage` or a list of kinds (a bundle, which the linter refuses: R11)."""
    values: list[tuple[str, Node]] = []
    if isinstance(node, SequenceNode):
        items = c.text_list(node, f"kind of {where}", "a kind")
        if items is None:
            return None
        values = items
    else:
        one = c.scalar_text(node, f"kind of {where}", f"one of: {', '.join(PURPOSE_KINDS)}")
        if one is None:
            return None
        values = [(one, node)]
    out: list[str] = []
    for value, item in values:
        if value not in PURPOSE_KINDS:
            guess = did_you_mean(value, PURPOSE_KINDS)
            c.error(
                item,
                f"unknown kind '{value}' for {where}",
                f"did you mean '{guess}'?"
                if guess
                else f"expected one of: {', '.join(PURPOSE_KINDS)}",
            )
            return None
        out.append(value)
    if not out:
        c.error(
            node,
            f"kind of {where} is an empty list",
            f"expected one of: {', '.join(PURPOSE_KINDS)}",
        )
        return None
    return tuple(out)
