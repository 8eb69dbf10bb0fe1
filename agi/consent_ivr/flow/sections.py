"""The sections of a flow file: the document's top level, the notice segments, the questions.

`check_document` walks the top-level keys (languages first: every text depends on them), checks
the flow id, version, kind, controller, policy address, audio formats (``sounds:``), notice, full
notice, questions and closing texts here, and hands the purposes (`purposes`) and the choice
(`choice`) to their own checks; then the cross-section pass (`cross`) runs on what the walk
collected.
"""

from __future__ import annotations

import re

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_ivr.flow.audiofiles import FORMATS
from consent_ivr.flow.choice import check_choice
from consent_ivr.flow.cross import check_cross, place_prompts, render_placeholders
from consent_ivr.flow.model import CLOSE_KINDS, COVER_ITEMS, KINDS, Controller
from consent_ivr.flow.purposes import check_purposes
from consent_ivr.flow.returning import check_returning
from consent_ivr.flow.schema import (
    HINTS,
    WORD_ID,
    Checker,
    Parsed,
    PromptSpec,
    QuestionSpec,
    did_you_mean,
    is_null,
    one_of,
)

_FLOW_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_LANG = re.compile(r"[a-z]{2,3}(?:_[a-z0-9]{2,4})?")

#: AGI routes of the process-AGI script and the FastAGI server; no flow may take these ids.
RESERVED_IDS = frozenset({"gate", "track"})

# Sections and their keys: key -> required.
_TOP = {
    "flow": True,
    "kind": False,
    "version": True,
    "notice_version": False,
    "languages": True,
    "controller": True,
    "policy_url": True,
    "purposes": True,
    "notice": True,
    "full_notice": False,
    "choice": True,
    "questions": True,
    "close": True,
    "sounds": False,
    "returning": False,
}
_SOUNDS = {"formats": False}
_CONTROLLER = {"name": True, "contact": True}
_SEGMENT = {"id": True, "covers": False, "say": True}
_QUESTION = {"purpose": True, "id": False, "say": True}
_CLOSE = {"granted": True, "declined": True, "none": True, "partial": False, "error": False}


def check_document(c: Checker, root: Node) -> Parsed:
    """Every section of the document, then the cross-section pass; what was found."""
    p = Parsed()
    top = c.mapping(root, "the flow file", _TOP)
    if top is None:
        return p

    def value(key: str) -> Node | None:
        entry = top.get(key)
        return entry[1] if entry else None

    for key, (key_node, value_node) in top.items():
        c.place(key, value_node if not is_null(value_node) else key_node)

    # Languages first: every text depends on them.
    if (node := value("languages")) is not None:
        langs = c.text_list(node, "languages", "language codes like de or en")
        if langs is not None:
            good: list[str] = []
            for lang, item in langs:
                if not _LANG.fullmatch(lang):
                    c.error(
                        item,
                        f"'{lang}' is not a language code",
                        "expected a lowercase code like de, en or pt_br",
                    )
                elif lang in c.lang_nodes:
                    c.error(
                        item, f"language '{lang}' is listed twice", "expected each language once"
                    )
                else:
                    good.append(lang)
                    c.lang_nodes[lang] = item
            if not langs:
                c.error(node, "languages is an empty list", "expected at least one language")
            elif len(good) == len(langs):
                c.langs = tuple(good)

    if (node := value("flow")) is not None:
        fid = c.scalar_text(node, "flow", "the flow id, e.g. call-tracking")
        if fid is not None:
            if fid in RESERVED_IDS:
                c.error(
                    node,
                    f"flow id '{fid}' is the name of a built-in AGI route",
                    f"expected another id (reserved: {', '.join(sorted(RESERVED_IDS))})",
                )
            elif _FLOW_ID.fullmatch(fid):
                p.flow_id, p.flow_id_node = fid, node
            else:
                c.error(
                    node,
                    f"flow id '{fid}' has characters other than lowercase letters, digits and '-'",
                    "expected an id like call-tracking",
                )
    if (node := value("version")) is not None:
        p.version = c.whole_number(node, "version", 1, None)
    if (node := value("notice_version")) is not None:
        p.notice_version = c.scalar_text(node, "notice_version", "a version label, e.g. '2026-11'")
    elif p.version is not None:
        p.notice_version = str(p.version)

    if (node := value("kind")) is not None:
        kind = c.scalar_text(node, "kind", "consent or withdrawal")
        if kind is not None and kind not in KINDS:
            c.error(node, f"unknown flow kind '{kind}'", "expected consent or withdrawal")
        elif kind is not None:
            p.kind = kind

    if (node := value("controller")) is not None:
        ctl = c.mapping(node, "controller", _CONTROLLER)
        if ctl is not None:
            name = contact = None
            if "name" in ctl:
                c.place("controller.name", ctl["name"][1])
                name = c.scalar_text(ctl["name"][1], "controller name", HINTS["name"])
            if "contact" in ctl:
                contact = c.scalar_text(ctl["contact"][1], "controller contact", HINTS["contact"])
            if name is not None and contact is not None:
                p.controller = Controller(name, contact)
    if (node := value("policy_url")) is not None:
        p.policy_url = c.scalar_text(node, "policy_url", HINTS["policy_url"])

    if (node := value("sounds")) is not None:
        _check_sounds(c, p, node)
    if (node := value("purposes")) is not None:
        check_purposes(c, p, node)
    if (node := value("notice")) is not None:
        p.notice = _check_segments(c, node, "notice", required=True)
    if (node := value("full_notice")) is not None and not is_null(node):
        p.full_notice = _check_segments(c, node, "full_notice", required=False)
    if (node := value("choice")) is not None:
        check_choice(c, p, node)
    if (node := value("questions")) is not None:
        _check_questions(c, p, node)
    if (node := value("close")) is not None:
        closes = c.mapping(node, "close", _CLOSE)
        if closes is not None:
            for kind in CLOSE_KINDS:
                if kind in closes:
                    key_node, text_node = closes[kind]
                    text = c.text(text_node, f"close {kind}")
                    p.close[kind] = PromptSpec(f"close_{kind}", key_node, text)
    if (node := value("returning")) is not None and not is_null(node):
        check_returning(c, p, node)

    c.missing_languages()
    check_cross(c, p, top)
    render_placeholders(c, p)
    place_prompts(c, p)
    return p


def _check_sounds(c: Checker, p: Parsed, node: Node) -> None:
    """``sounds: {formats: [wav, alaw, ...]}``: the formats every prompt is written in."""
    sounds = c.mapping(node, "sounds", _SOUNDS)
    if sounds is None or "formats" not in sounds:
        return
    formats_node = sounds["formats"][1]
    items = c.text_list(formats_node, "sounds formats", "audio formats like wav or alaw")
    if items is None:
        return
    seen: list[str] = []
    ok = True
    for fmt, item in items:
        if fmt == "sln":
            ok = False
            c.error(
                item,
                "format 'sln' is the WAV's own codec (8 kHz signed linear)",
                "expected it left out: it saves no transcoding, and with two files of one codec"
                " which one Asterisk opens depends on the order its format modules loaded in",
            )
        elif fmt not in FORMATS:
            ok = False
            guess = did_you_mean(fmt, FORMATS)
            c.error(
                item,
                f"unknown audio format '{fmt}'",
                f"did you mean '{guess}'?" if guess else f"expected one of: {one_of(FORMATS)}",
            )
        elif fmt in seen:
            ok = False
            c.error(item, f"format '{fmt}' is listed twice", "expected each format once")
        else:
            seen.append(fmt)
    if ok and "wav" not in seen:
        c.error(
            formats_node,
            "sounds formats has no wav",
            "expected wav in the list: every other format is made from the prompt's WAV,"
            " whose length is the prompt's length, e.g. formats: [wav, alaw]",
        )
    elif ok:
        p.formats = tuple(f for f in FORMATS if f in seen)


def _check_segments(c: Checker, node: Node, where: str, *, required: bool) -> list[PromptSpec]:
    out: list[PromptSpec] = []
    if not isinstance(node, SequenceNode):
        c.wrong_type(node, where, "a list of segments, each with id, covers and say")
        return out
    if required and not node.value:
        c.error(node, f"{where} is an empty list", "expected at least one segment")
    for n, item in enumerate(node.value, 1):
        seg_where = f"{where} segment {n}"
        if isinstance(item, MappingNode):
            for k, v in item.value:
                if (
                    isinstance(k, ScalarNode)
                    and k.value == "id"
                    and isinstance(v, ScalarNode)
                    and WORD_ID.fullmatch(v.value)
                ):
                    seg_where = f"{where} segment '{v.value}'"
        fields = c.mapping(item, seg_where, _SEGMENT)
        if fields is None:
            continue
        pid = None
        id_node: Node = item
        if "id" in fields:
            id_node = fields["id"][1]
            pid = _prompt_id(c, id_node, seg_where)
        covers: set[str] = set()
        covers_node: Node | None = fields["covers"][1] if "covers" in fields else None
        tag_nodes: dict[str, Node] = {}
        if "covers" in fields and not is_null(fields["covers"][1]):
            tags = c.text_list(fields["covers"][1], f"covers of {seg_where}", "cover tags")
            for tag, tag_node in tags or []:
                if tag in COVER_ITEMS:
                    covers.add(tag)
                    tag_nodes.setdefault(tag, tag_node)
                else:
                    guess = did_you_mean(tag, COVER_ITEMS)
                    c.error(
                        tag_node,
                        f"unknown cover tag '{tag}'",
                        f"did you mean '{guess}'?"
                        if guess
                        else f"expected one of: {one_of(COVER_ITEMS)}",
                    )
        text = c.text(fields["say"][1], f"say of {seg_where}") if "say" in fields else None
        out.append(PromptSpec(pid, id_node, text, frozenset(covers), covers_node, tag_nodes))
    return out


def _prompt_id(c: Checker, node: Node, where: str) -> str | None:
    pid = c.scalar_text(node, f"the id of {where}", HINTS["id"])
    if pid is not None and not WORD_ID.fullmatch(pid):
        c.error(
            node,
            f"id '{pid}' has characters other than lowercase letters, digits and _",
            f"expected {HINTS['id']} (it names the audio file)",
        )
        return None
    return pid


def _check_questions(c: Checker, p: Parsed, node: Node) -> None:
    if not isinstance(node, SequenceNode):
        c.wrong_type(node, "questions", "a list of questions, each with purpose and say")
        return
    if not node.value:
        c.error(node, "questions is an empty list", "expected one question per consent purpose")
    for n, item in enumerate(node.value, 1):
        where = f"question {n}"
        fields = c.mapping(item, where, _QUESTION)
        if fields is None:
            continue
        purpose = purpose_node = None
        if "purpose" in fields:
            purpose_node = fields["purpose"][1]
            purpose = c.scalar_text(purpose_node, f"the purpose of {where}", HINTS["purpose"])
        pid: str | None = None
        id_node: Node = purpose_node or item
        if "id" in fields:
            id_node = fields["id"][1]
            pid = _prompt_id(c, id_node, where)
        elif purpose is not None:
            pid = f"ask_{purpose}"
        if pid is not None:
            where = f"question '{pid}'"
        text = c.text(fields["say"][1], f"say of {where}") if "say" in fields else None
        p.questions.append(QuestionSpec(purpose, purpose_node, PromptSpec(pid, id_node, text)))
