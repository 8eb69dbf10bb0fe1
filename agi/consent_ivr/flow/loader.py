"""Load a flow file (YAML) into a validated, immutable `Flow`, or report every problem at once.

Theory of operation
-------------------
The YAML is *composed* (not constructed) into a node tree, so every value keeps its line and
column. A schema-driven walk over that tree checks each section, records `Diagnostic`s and keeps
going, so an author sees all problems in one run. Cross-section rules (references, keys, notice
coverage, prompt ids, languages, R2 key announcement) run on what the walk collected. Audio is
checked last: every prompt's WAV must exist in 8 kHz mono 16-bit and its manifest entry must match
the current text. Only when no error remains is the `Flow` built.

Rules of this file: every message is `what is wrong; what was expected` in plain words for flow
authors; nothing here may raise on bad input (any surprise becomes a diagnostic); keep imports
light, because process AGI loads a flow per call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_ivr import paths
from consent_ivr.flow.audiofiles import DirIdent, dir_ident, file_ident, folder_problem
from consent_ivr.flow.diagnostics import Diagnostic, FlowError, SourceMap
from consent_ivr.flow.model import (
    CLOSE_KINDS,
    COVER_ITEMS,
    DTMF_KEYS,
    KINDS,
    PURPOSE_KINDS,
    Basis,
    Caps,
    Choice,
    Controller,
    Flow,
    Keys,
    Prompt,
    Purpose,
    Question,
)
from consent_ivr.flow.notice import notice_sha256
from consent_ivr.records import Record
from consent_ivr.wav import WavError, is_telephony_format, read_wav_info

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_BOOL = "tag:yaml.org,2002:bool"

_FLOW_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_WORD_ID = re.compile(r"[a-z][a-z0-9_]*")
_LANG = re.compile(r"[a-z]{2,3}(?:_[a-z0-9]{2,4})?")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*")
_DIGITS = re.compile(r"[0-9]+")
#: `{accept}` in a text is spoken as the accept key; `{{` and `}}` are literal braces.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PLACEHOLDERS = ("accept", "decline", "full_notice", "repeat")

#: AGI routes of the process-AGI script and the FastAGI server; no flow may take these ids.
RESERVED_IDS = frozenset({"gate", "track"})

TIMEOUT_MIN_MS = 500
TIMEOUT_MAX_MS = 60_000
DEFAULT_TIMEOUT_MS = 6_000
MAX_CAP = 9

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
}
_CONTROLLER = {"name": True, "contact": True}
_PURPOSE = {
    "basis": True,
    "description": True,
    "kind": False,
    "recipients": False,
    "third_countries": False,
    "processors": False,
    "data": False,
}
_SEGMENT = {"id": True, "covers": False, "say": True}
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
_QUESTION = {"purpose": True, "id": False, "say": True}
_CLOSE = {"granted": True, "declined": True, "none": True, "partial": False, "error": False}

# What to write for a missing key, shown after "expected".
_HINTS = {
    "flow": "the flow id, e.g. flow: call-tracking",
    "version": "a whole number >= 1, e.g. version: 1",
    "languages": "the languages served, the default first, e.g. languages: [de, en]",
    "controller": "controller: {name: ..., contact: ...}",
    "name": "the name of the company responsible for the data",
    "contact": "a contact address, e.g. an e-mail address",
    "policy_url": "the short web address of the written privacy policy",
    "purposes": "the purposes of processing, e.g. ga_linkage: {basis: consent, description: ...}",
    "notice": "the first-layer notice: a list of segments with id, covers and say",
    "choice": "choice: with keys, timeout, noinput and nomatch",
    "questions": "a list of questions, one per consent purpose",
    "close": "closing messages granted, declined and none",
    "basis": "basis: consent or basis: legitimate_interest",
    "description": "a short description per language",
    "id": "a short name in lowercase letters, digits and _, e.g. id: who",
    "say": "the spoken text per language, e.g. say: {de: ..., en: ...}",
    "noinput": "a list of re-prompts after silence, one per attempt",
    "nomatch": "a list of re-prompts after a wrong key, one per attempt",
    "purpose": "the consent purpose this question asks about",
    "granted": "the closing text after consent was given",
    "declined": "the closing text after consent was refused",
    "none": "the closing text when no decision was made",
}


def _pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG_NULL


def _short(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(node: Node) -> str:
    if isinstance(node, ScalarNode):
        if node.tag == _TAG_NULL:
            return "empty"
        if node.tag in (_TAG_INT, _TAG_FLOAT):
            return f"the number {node.value}"
        if node.tag == _TAG_BOOL:
            return f"the yes/no value {node.value}"
        return f"the text '{_short(node.value)}'"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a mapping"


def _did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    import difflib  # only when needed: the happy path never pays for it

    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices))


def text_sha256(text: str) -> str:
    """The manifest hash of a prompt text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_path(sounds_root: Path, flow_id: str) -> Path:
    """Where `consent-ivr sounds build` records which text each audio file speaks."""
    return sounds_root / f"{flow_id}.manifest.json"


def audio_path(sounds_root: Path, lang: str, flow_id: str, prompt_id: str) -> Path:
    """`<sounds_root>/<lang>/<flow id>/<prompt id>.wav`."""
    return sounds_root / lang / flow_id / f"{prompt_id}.wav"


@dataclass
class _Text:
    """A say/description value: text per language and the node of each (for positions)."""

    node: Node
    where: str
    texts: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)


@dataclass
class _PromptSpec:
    id: str | None
    id_node: Node
    text: _Text | None
    covers: frozenset[str] = frozenset()
    covers_node: Node | None = None
    tag_nodes: dict[str, Node] = field(default_factory=dict)


@dataclass
class _QuestionSpec:
    purpose: str | None
    purpose_node: Node | None
    prompt: _PromptSpec


class _Checker:
    """Walks one composed flow document and collects diagnostics."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.smap = SourceMap()
        self.diags: list[Diagnostic] = []
        self.langs: tuple[str, ...] | None = None
        self.lang_nodes: dict[str, Node] = {}
        self.texts: list[_Text] = []

    # -- reporting ---------------------------------------------------------------------------

    def error(self, node: Node, message: str, expected: str, rule: str = "") -> None:
        line, col = _pos(node)
        self.diags.append(Diagnostic(self.path, line, col, message, expected, "error", rule))

    def place(self, name: str, node: Node | None) -> None:
        """Remember where flow part `name` stands in the file (for the linter's findings)."""
        if node is not None:
            self.smap.set(name, *_pos(node))

    def warning(self, node: Node, message: str, expected: str, rule: str = "") -> None:
        line, col = _pos(node)
        self.diags.append(Diagnostic(self.path, line, col, message, expected, "warning", rule))

    def wrong_type(self, node: Node, where: str, expected: str) -> None:
        self.error(node, f"{where} is {_describe(node)}", f"expected {expected}")

    # -- generic shapes ----------------------------------------------------------------------

    def entries(self, node: Node, where: str) -> dict[str, tuple[Node, Node]] | None:
        """The entries of a mapping by key text; reports duplicate and non-text keys."""
        if not isinstance(node, MappingNode):
            self.wrong_type(node, where, "a mapping (key: value lines)")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or _is_null(key_node):
                self.error(
                    key_node, f"a key in {where} is {_describe(key_node)}", "expected a name"
                )
                continue
            key = key_node.value
            if key in out:
                line = out[key][0].start_mark.line + 1
                self.error(
                    key_node,
                    f"duplicate key '{key}' in {where} (first at line {line})",
                    "expected each key once",
                )
                continue
            out[key] = (key_node, value_node)
        return out

    def mapping(
        self, node: Node, where: str, fields: Mapping[str, bool]
    ) -> dict[str, tuple[Node, Node]] | None:
        """Like `entries`, plus unknown keys (with a suggestion) and missing required keys."""
        found = self.entries(node, where)
        if found is None:
            return None
        for key, (key_node, _value) in list(found.items()):
            if key not in fields:
                del found[key]
                guess = _did_you_mean(key, fields)
                expected = (
                    f"did you mean '{guess}'?" if guess else f"expected one of: {_one_of(fields)}"
                )
                self.error(key_node, f"unknown key '{key}' in {where}", expected)
        for key, required in fields.items():
            if required and key not in found:
                self.error(node, f"missing '{key}' in {where}", f"expected {key}: {_HINTS[key]}")
        return found

    def scalar_text(self, node: Node, where: str, expected: str) -> str | None:
        """A non-empty single value, read as the author wrote it (`Yes` stays `Yes`)."""
        if not isinstance(node, ScalarNode) or _is_null(node):
            self.wrong_type(node, where, expected)
            return None
        if not node.value.strip():
            self.error(node, f"{where} is empty", f"expected {expected}")
            return None
        return str(node.value).strip()

    def text_list(self, node: Node, where: str, expected: str) -> list[tuple[str, Node]] | None:
        if not isinstance(node, SequenceNode):
            self.wrong_type(node, where, f"a list of {expected}, e.g. [a, b]")
            return None
        out = []
        for item in node.value:
            value = self.scalar_text(item, f"an item of {where}", expected)
            if value is not None:
                out.append((value, item))
        return out

    def whole_number(self, node: Node, where: str, low: int, high: int | None) -> int | None:
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        if not (
            isinstance(node, ScalarNode)
            and node.tag == _TAG_INT
            and _DIGITS.fullmatch(node.value.lstrip("+"))
        ):
            self.wrong_type(node, where, f"a whole number {bound}")
            return None
        value = int(node.value)
        if value < low or (high is not None and value > high):
            self.error(node, f"{where} is {value}", f"expected a whole number {bound}")
            return None
        return value

    def text(self, node: Node, where: str) -> _Text | None:
        """A spoken/described text: `{lang: text}` for exactly the flow's languages."""
        langs = self.langs
        if isinstance(node, ScalarNode) and not _is_null(node):
            if langs is not None and len(langs) == 1:
                if not node.value.strip():
                    self.error(node, f"{where} is empty", "expected spoken words")
                    return None
                t = _Text(node, where, {langs[0]: node.value.strip()}, {langs[0]: node})
                self.texts.append(t)
                return t
            if langs is not None:
                example = ", ".join(f"{lang}: ..." for lang in langs)
                self.error(
                    node,
                    f"{where} is a single text, but this flow serves {len(langs)} languages"
                    f" ({', '.join(langs)})",
                    f"expected one text per language, e.g. {{{example}}}",
                )
            return None
        found = self.entries(node, where)
        if found is None:
            return None
        t = _Text(node, where)
        for lang, (key_node, value_node) in found.items():
            if langs is not None and lang not in langs:
                guess = _did_you_mean(lang, langs)
                self.error(
                    key_node,
                    f"{where} has a text for language '{lang}', which this flow does not serve",
                    f"did you mean '{guess}'?"
                    if guess
                    else f"expected only the languages listed in languages ({', '.join(langs)})",
                )
                continue
            value = self.scalar_text(value_node, f"the '{lang}' text of {where}", "spoken words")
            if value is not None:
                t.texts[lang] = value
                t.nodes[lang] = value_node
            else:
                t.nodes[lang] = value_node  # present but bad: not "missing"
        self.texts.append(t)
        return t

    def missing_languages(self) -> None:
        """Per text: missing languages. A language missing from every text: one error, once."""
        if self.langs is None:
            return
        nowhere = [lang for lang in self.langs if not any(lang in t.nodes for t in self.texts)]
        for lang in nowhere:
            if self.texts:
                self.error(
                    self.lang_nodes[lang],
                    f"language '{lang}' is served but has no texts at all",
                    f"expected a '{lang}' text in every say and description, or remove '{lang}'"
                    " from languages",
                )
        for t in self.texts:
            missing = [lang for lang in self.langs if lang not in t.nodes and lang not in nowhere]
            if missing:
                self.error(
                    t.node,
                    f"{t.where} has no {', '.join(repr(m) for m in missing)} text",
                    f"expected a text for every language of the flow ({', '.join(self.langs)})",
                )


@dataclass
class _Parsed:
    flow_id: str | None = None
    flow_id_node: Node | None = None
    version: int | None = None
    notice_version: str | None = None
    kind: str = "consent"
    controller: Controller | None = None
    policy_url: str | None = None
    purposes: dict[str, tuple[Purpose | None, Node]] = field(default_factory=dict)
    purpose_texts: dict[str, _Text] = field(default_factory=dict)
    notice: list[_PromptSpec] = field(default_factory=list)
    full_notice: list[_PromptSpec] = field(default_factory=list)
    keys: Keys | None = None
    key_nodes: dict[str, Node] = field(default_factory=dict)
    timeout_ms: int | None = DEFAULT_TIMEOUT_MS
    caps: Caps | None = None
    accept_during_notice: bool = False
    noinput: list[_PromptSpec] = field(default_factory=list)
    nomatch: list[_PromptSpec] = field(default_factory=list)
    questions: list[_QuestionSpec] = field(default_factory=list)
    close: dict[str, _PromptSpec] = field(default_factory=dict)


def _check_document(c: _Checker, root: Node) -> _Parsed:
    p = _Parsed()
    top = c.mapping(root, "the flow file", _TOP)
    if top is None:
        return p

    def value(key: str) -> Node | None:
        entry = top.get(key)
        return entry[1] if entry else None

    for key, (key_node, value_node) in top.items():
        c.place(key, value_node if not _is_null(value_node) else key_node)

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
                name = c.scalar_text(ctl["name"][1], "controller name", _HINTS["name"])
            if "contact" in ctl:
                contact = c.scalar_text(ctl["contact"][1], "controller contact", _HINTS["contact"])
            if name is not None and contact is not None:
                p.controller = Controller(name, contact)
    if (node := value("policy_url")) is not None:
        p.policy_url = c.scalar_text(node, "policy_url", _HINTS["policy_url"])

    if (node := value("purposes")) is not None:
        _check_purposes(c, p, node)
    if (node := value("notice")) is not None:
        p.notice = _check_segments(c, node, "notice", required=True)
    if (node := value("full_notice")) is not None and not _is_null(node):
        p.full_notice = _check_segments(c, node, "full_notice", required=False)
    if (node := value("choice")) is not None:
        _check_choice(c, p, node)
    if (node := value("questions")) is not None:
        _check_questions(c, p, node)
    if (node := value("close")) is not None:
        closes = c.mapping(node, "close", _CLOSE)
        if closes is not None:
            for kind in CLOSE_KINDS:
                if kind in closes:
                    key_node, text_node = closes[kind]
                    text = c.text(text_node, f"close {kind}")
                    p.close[kind] = _PromptSpec(f"close_{kind}", key_node, text)

    c.missing_languages()
    _check_cross(c, p, top)
    _render_placeholders(c, p)
    _place_prompts(c, p)
    return p


def _check_purposes(c: _Checker, p: _Parsed, node: Node) -> None:
    found = c.entries(node, "purposes")
    if found is None:
        return
    if not found:
        c.error(node, "purposes is empty", f"expected {_HINTS['purposes']}")
    for pid, (key_node, value_node) in found.items():
        where = f"purpose '{pid}'"
        ok = True
        if not _WORD_ID.fullmatch(pid):
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
            b = c.scalar_text(b_node, f"the basis of {where}", _HINTS["basis"])
            if b is not None:
                try:
                    basis = Basis(b)
                except ValueError:
                    guess = _did_you_mean(b, [x.value for x in Basis])
                    c.error(
                        b_node,
                        f"unknown basis '{b}' for {where}",
                        f"did you mean '{guess}'?" if guess else f"expected {_HINTS['basis']}",
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
            if key in fields and not _is_null(fields[key][1]):
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


def _check_kind(c: _Checker, node: Node, where: str) -> tuple[str, ...] | None:
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
            guess = _did_you_mean(value, PURPOSE_KINDS)
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


def _check_segments(c: _Checker, node: Node, where: str, *, required: bool) -> list[_PromptSpec]:
    out: list[_PromptSpec] = []
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
                    and _WORD_ID.fullmatch(v.value)
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
        if "covers" in fields and not _is_null(fields["covers"][1]):
            tags = c.text_list(fields["covers"][1], f"covers of {seg_where}", "cover tags")
            for tag, tag_node in tags or []:
                if tag in COVER_ITEMS:
                    covers.add(tag)
                    tag_nodes.setdefault(tag, tag_node)
                else:
                    guess = _did_you_mean(tag, COVER_ITEMS)
                    c.error(
                        tag_node,
                        f"unknown cover tag '{tag}'",
                        f"did you mean '{guess}'?"
                        if guess
                        else f"expected one of: {_one_of(COVER_ITEMS)}",
                    )
        text = c.text(fields["say"][1], f"say of {seg_where}") if "say" in fields else None
        out.append(_PromptSpec(pid, id_node, text, frozenset(covers), covers_node, tag_nodes))
    return out


def _prompt_id(c: _Checker, node: Node, where: str) -> str | None:
    pid = c.scalar_text(node, f"the id of {where}", _HINTS["id"])
    if pid is not None and not _WORD_ID.fullmatch(pid):
        c.error(
            node,
            f"id '{pid}' has characters other than lowercase letters, digits and _",
            f"expected {_HINTS['id']} (it names the audio file)",
        )
        return None
    return pid


def _check_choice(c: _Checker, p: _Parsed, node: Node) -> None:
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
                if _is_null(v):
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
                    shown = f"'{v.value}'" if isinstance(v, ScalarNode) else _describe(v)
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
            if isinstance(t_node, ScalarNode) and not _is_null(t_node)
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
        if isinstance(a_node, ScalarNode) and a_node.tag == _TAG_BOOL:
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
        specs: list[_PromptSpec] = []
        if not isinstance(k_node, SequenceNode):
            c.wrong_type(k_node, kind, f"a list of re-prompts, e.g. {kind}: [{{de: ..., en: ...}}]")
        elif not k_node.value:
            c.error(k_node, f"{kind} is an empty list", "expected at least one re-prompt")
        else:
            for n, item in enumerate(k_node.value, 1):
                specs.append(_PromptSpec(f"{kind}_{n}", item, c.text(item, f"{kind} {n}")))
        setattr(p, kind, specs)


def _check_questions(c: _Checker, p: _Parsed, node: Node) -> None:
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
            purpose = c.scalar_text(purpose_node, f"the purpose of {where}", _HINTS["purpose"])
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
        p.questions.append(_QuestionSpec(purpose, purpose_node, _PromptSpec(pid, id_node, text)))


def _check_cross(c: _Checker, p: _Parsed, top: dict[str, tuple[Node, Node]]) -> None:
    """References between sections: what a question asks about, prompt ids. (The rules on what a
    flow says and declares — R1 to R19 — are the linter's: `consent_ivr.lint`.)"""
    asked: dict[str, Node] = {}
    purposes_known = "purposes" in top and isinstance(top["purposes"][1], MappingNode)
    for q in p.questions:
        if q.purpose is None or q.purpose_node is None or not purposes_known:
            continue
        if q.purpose not in p.purposes:
            consent = [k for k, (v, _n) in p.purposes.items() if v and v.basis is Basis.CONSENT]
            guess = _did_you_mean(q.purpose, p.purposes)
            c.error(
                q.purpose_node,
                f"question asks about purpose '{q.purpose}', which is not defined in purposes",
                f"did you mean '{guess}'?"
                if guess
                else f"expected one of the consent purposes: {_one_of(consent) or '(none)'}",
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
    for spec in _prompt_specs(p):
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


def _render_placeholders(c: _Checker, p: _Parsed) -> None:
    """Speak `{accept}`, `{decline}`, `{full_notice}`, `{repeat}` as the configured keys, so a
    text cannot name another key than the one that does what it says (R1)."""
    keys = p.keys
    for t in c.texts:
        for lang, text in list(t.texts.items()):
            if "{" not in text and "}" not in text:
                continue
            problems: list[str] = []

            def sub(m: re.Match[str], problems: list[str] = problems) -> str:
                whole, name = m.group(0), m.group(1)
                if whole in ("{{", "}}"):
                    return whole[0]
                if name is None:
                    problems.append(f"a lone '{whole}' (write '{whole * 2}' for a brace)")
                    return whole
                name = name.strip()
                if name not in PLACEHOLDERS:
                    guess = _did_you_mean(name, PLACEHOLDERS)
                    hint = f" (did you mean {{{guess}}}?)" if guess else ""
                    problems.append(f"unknown placeholder {{{name}}}{hint}")
                    return whole
                if keys is None:
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


def _place_prompts(c: _Checker, p: _Parsed) -> None:
    for spec in _prompt_specs(p):
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


def _prompt_specs(p: _Parsed) -> list[_PromptSpec]:
    return (
        p.notice
        + p.full_notice
        + [q.prompt for q in p.questions]
        + p.noinput
        + p.nomatch
        + [p.close[k] for k in CLOSE_KINDS if k in p.close]
    )


@dataclass
class _Audio:
    audio: dict[str, str] = field(default_factory=dict)
    sha: dict[str, str] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    file: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    dirs: dict[str, tuple[int, int]] = field(default_factory=dict)


def _check_audio(c: _Checker, p: _Parsed, sounds_root: Path, build_hint: str) -> dict[str, _Audio]:
    """Every prompt text has an 8 kHz mono 16-bit WAV whose manifest entry matches the text."""
    out: dict[str, _Audio] = {}
    if p.flow_id is None or p.flow_id_node is None or c.langs is None:
        return out
    fix = f"run `consent-ivr sounds build {build_hint}`"
    mpath = manifest_path(sounds_root, p.flow_id)
    manifest: dict[str, Any] | None = None
    manifest_reported = False
    try:
        loaded = json.loads(mpath.read_bytes())
        if isinstance(loaded, dict):
            manifest = loaded
        else:
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        manifest_reported = True
        c.error(
            p.flow_id_node,
            f"audio manifest {mpath} is unreadable ({exc})",
            f"expected JSON; {fix}",
            "R13",
        )
    folders: dict[str, DirIdent] = {}
    unreadable: set[str] = set()
    before = len(c.diags)
    missing = total = 0
    for spec in _prompt_specs(p):
        if spec.id is None or spec.text is None:
            continue
        total += len(spec.text.texts)
        info = out.setdefault(spec.id, _Audio())
        for lang, text in spec.text.texts.items():
            node = spec.text.nodes[lang]
            wav = audio_path(sounds_root, lang, p.flow_id, spec.id)
            info.audio[lang] = os.path.abspath(wav)
            try:
                with open(wav, "rb") as fh:  # the identity of exactly the bytes hashed
                    st = os.fstat(fh.fileno())
                    data = fh.read()
                info.file[lang] = file_ident(st)
            except FileNotFoundError:
                missing += 1
                c.error(
                    node,
                    f"missing audio {wav} for the '{lang}' text of prompt '{spec.id}'",
                    f"expected an 8 kHz mono 16-bit PCM WAV file; {fix}",
                    "R13",
                )
                continue
            except OSError as exc:
                c.error(
                    node,
                    f"cannot read audio {wav} ({exc.strerror or exc})",
                    f"expected a readable file; {fix}",
                    "R13",
                )
                continue
            try:
                winfo = read_wav_info(wav)
            except WavError as exc:
                c.error(
                    node,
                    f"audio {wav} is not usable: {exc}",
                    f"expected an 8 kHz mono 16-bit PCM WAV file; {fix}",
                    "R13",
                )
                continue
            if not is_telephony_format(winfo):
                c.error(
                    node,
                    f"audio {wav} is {winfo.describe()}",
                    f"expected 8000 Hz, 1 channel, 16-bit PCM (telephone audio); {fix}",
                    "R13",
                )
                continue
            folder = str(wav.parent)
            if folder in unreadable:  # reported once, at its first prompt
                continue
            try:
                if folder not in folders:  # before the listing: a later change then shows
                    folders[folder] = dir_ident(os.stat(folder))
                problem = folder_problem(folder, spec.id)
            except OSError as exc:
                unreadable.add(folder)
                c.error(
                    node,
                    f"cannot list the audio folder {folder} ({exc.strerror or exc})",
                    "expected a folder this user can read, so that no other format of a"
                    " prompt can hide in it",
                    "R13",
                )
                continue
            if problem is not None:
                expected = f"expected only the WAV files of the prompts; remove {problem[1]}"
                c.error(node, problem[0], expected, "R13")
                continue
            info.dirs[lang] = folders[folder]
            info.sha[lang] = hashlib.sha256(data).hexdigest()
            if manifest is None:
                if not manifest_reported:
                    manifest_reported = True
                    c.error(
                        p.flow_id_node,
                        f"no audio manifest {mpath}, so the audio cannot be matched to the texts",
                        f"expected the manifest written by sounds build; {fix}",
                        "R13",
                    )
                continue
            entry = manifest.get(f"{lang}/{spec.id}")
            if not isinstance(entry, dict) or "text_sha256" not in entry:
                c.error(
                    node,
                    f"audio {wav} has no entry in the manifest {mpath}",
                    f"expected audio built from this text; {fix}",
                    "R13",
                )
            elif entry["text_sha256"] != text_sha256(text):
                c.error(node, f"audio {wav} no longer matches its text", fix, "R13")
            elif entry.get("audio_sha256") != info.sha[lang]:
                c.error(
                    node,
                    f"audio {wav} is not the audio made or approved for this text (its bytes"
                    " differ from the manifest's audio_sha256)",
                    f"{fix}, or `consent-ivr sounds approve {build_hint} {spec.id}` for a"
                    " recording made from this text",
                    "R13",
                )
            else:  # audio verified for this text: its length is the prompt's length
                info.samples[lang] = winfo.frames
    if total and missing == total:  # never built: one finding, not one per prompt
        del c.diags[before:]
        c.error(
            p.flow_id_node,
            f"no audio for flow {p.flow_id}: none of its {total} prompt texts has a WAV in"
            f" {sounds_root}/<language>/{p.flow_id}/",
            f"expected the audio made from the texts; {fix}",
            "R13",
        )
    return out


def _build(p: _Parsed, c: _Checker, audio: dict[str, _Audio], source: str, sha: str) -> Flow:
    """Assemble the `Flow`; only called when no error was reported, so every part is present."""
    langs = c.langs
    assert langs is not None and p.flow_id is not None and p.version is not None
    assert p.controller is not None and p.policy_url is not None and p.keys is not None
    assert p.caps is not None and p.timeout_ms is not None and p.notice_version is not None

    def prompt(spec: _PromptSpec) -> Prompt:
        assert spec.id is not None and spec.text is not None
        a = audio.get(spec.id, _Audio())
        return Prompt(
            id=spec.id,
            text=dict(spec.text.texts),
            audio={lang: a.audio.get(lang, "") for lang in langs},
            audio_sha256={lang: a.sha.get(lang, "") for lang in langs},
            samples={lang: a.samples.get(lang, 0) for lang in langs},
            covers=spec.covers,
            audio_file={lang: a.file[lang] for lang in langs if lang in a.file},
            audio_dir={lang: a.dirs[lang] for lang in langs if lang in a.dirs},
        )

    purposes = []
    for purpose, _node in p.purposes.values():
        assert purpose is not None
        purposes.append(purpose)
    questions = []
    for q in p.questions:
        assert q.purpose is not None
        questions.append(Question(q.purpose, prompt(q.prompt)))
    flow = Flow(
        kind=p.kind,
        id=p.flow_id,
        version=p.version,
        notice_version=p.notice_version,
        languages=langs,
        controller=p.controller,
        policy_url=p.policy_url,
        purposes=tuple(purposes),
        notice=tuple(prompt(s) for s in p.notice),
        full_notice=tuple(prompt(s) for s in p.full_notice),
        choice=Choice(
            keys=p.keys,
            timeout_ms=p.timeout_ms,
            caps=p.caps,
            noinput=tuple(prompt(s) for s in p.noinput),
            nomatch=tuple(prompt(s) for s in p.nomatch),
            accept_during_notice=p.accept_during_notice,
        ),
        questions=tuple(questions),
        close={k: prompt(s) for k, s in p.close.items()},
        source_path=source,
        source_sha256=sha,
        notice_sha256={},
    )
    flow.notice_sha256.update({lang: notice_sha256(flow, lang) for lang in langs})
    return flow


def _load(
    path: str | os.PathLike[str], sounds_root: Path | None, check_audio: bool
) -> tuple[Flow | None, list[Diagnostic], SourceMap]:
    """The flow, every diagnostic and the source map. The flow is built whenever the document is
    well-formed, even if its audio is wrong (R13 errors): the linter reads it; loaders refuse it."""
    label = os.fspath(path)
    c = _Checker(label)
    try:
        data = Path(label).read_bytes()
    except FileNotFoundError:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"no flow file {label}", "expected a path to a flow .yaml file"
                )
            ],
            c.smap,
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"cannot read {label} ({reason})", "expected a readable flow file"
                )
            ],
            c.smap,
        )
    try:
        root = yaml.compose(data, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(exc.problem or "not valid YAML").split())
        context = ""
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            cm = exc.context_mark
            context = f" ({exc.context} that starts at line {cm.line + 1}, column {cm.column + 1})"
        elif exc.context:
            context = f" ({exc.context})"
        return (
            None,
            [
                Diagnostic(
                    label,
                    line,
                    col,
                    f"YAML syntax error: {what}{context}",
                    "expected valid YAML (check indentation, colons and quotes)",
                )
            ],
            c.smap,
        )
    except yaml.YAMLError as exc:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, f"YAML error: {' '.join(str(exc).split())}", "expected UTF-8 YAML"
                )
            ],
            c.smap,
        )
    if root is None:
        return (
            None,
            [
                Diagnostic(
                    label, 1, 1, "the flow file is empty", "expected flow, version, languages, ..."
                )
            ],
            c.smap,
        )
    p = _check_document(c, root)
    schema_ok = not any(d.is_error for d in c.diags)
    audio: dict[str, _Audio] = {}
    if check_audio:
        root_dir = sounds_root if sounds_root is not None else paths.sounds_dir()
        audio = _check_audio(c, p, root_dir, label)
    diags = sorted(c.diags, key=lambda d: (d.line, d.col))
    if not schema_ok:
        return None, diags, c.smap
    flow = _build(p, c, audio, label, hashlib.sha256(data).hexdigest())
    if not check_audio:
        root_dir = sounds_root if sounds_root is not None else paths.sounds_dir()
        flow = _with_audio_paths(flow, root_dir)
    return flow, diags, c.smap


def _with_audio_paths(flow: Flow, sounds_root: Path) -> Flow:
    """Without audio checks, still tell the engine where each file would be."""
    for pr in flow.all_prompts():
        for lang in flow.languages:
            pr.audio[lang] = os.path.abspath(audio_path(sounds_root, lang, flow.id, pr.id))
    return flow


class Loaded(Record):
    """What `load_source` found: the flow (None unless the document is well-formed; it may still
    have audio errors), every diagnostic by position, and where each flow part is in the file."""

    flow: Flow | None
    diagnostics: list[Diagnostic]
    source_map: SourceMap

    @property
    def ok(self) -> bool:
        return self.flow is not None and not any(d.is_error for d in self.diagnostics)


def load_source(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> Loaded:
    """Read and check a flow file as far as it goes, for the linter. Never raises for bad input."""
    try:
        flow, diags, smap = _load(path, sounds_root, check_audio)
    except Exception as exc:  # any surprise becomes a diagnostic, never a traceback
        diags = [
            Diagnostic(
                os.fspath(path),
                1,
                1,
                f"internal error while loading the flow: {type(exc).__name__}: {exc}",
                "expected a loadable flow; please report this",
            )
        ]
        flow, smap = None, SourceMap()
    return Loaded(flow, diags, smap)


def load_flow_with_warnings(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> tuple[Flow, list[Diagnostic]]:
    """Load and check a flow's schema and audio (not the content rules: `consent_ivr.lint`);
    return it with its warnings, or raise `FlowError` listing every diagnostic (errors and
    warnings, by position). Never raises anything else for bad input."""
    loaded = load_source(path, sounds_root=sounds_root, check_audio=check_audio)
    if not loaded.ok or loaded.flow is None:
        raise FlowError(loaded.diagnostics)
    return loaded.flow, loaded.diagnostics


def load_flow(
    path: str | os.PathLike[str], *, sounds_root: Path | None = None, check_audio: bool = True
) -> Flow:
    """Load and validate a flow; raise `FlowError` with every diagnostic if any error is found."""
    return load_flow_with_warnings(path, sounds_root=sounds_root, check_audio=check_audio)[0]


def resolve_flow_path(name_or_path: str, flows_dir: Path | None = None) -> Path:
    """`call-tracking` -> `<flows_dir>/call-tracking.yaml`; anything with `/` or ending in
    .yaml/.yml is a path as given. A missing file raises `FlowError` naming what was looked for."""
    if "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise FlowError(
                [
                    Diagnostic(
                        name_or_path,
                        1,
                        1,
                        f"no flow file {name_or_path}",
                        "expected an existing .yaml file",
                    )
                ]
            )
        return path
    folder = flows_dir if flows_dir is not None else paths.flows_dir()
    path = folder / f"{name_or_path}.yaml"
    if path.is_file():
        return path
    try:
        known = sorted(f.stem for f in folder.glob("*.yaml"))
    except OSError:
        known = []
    guess = _did_you_mean(name_or_path, known) if known else None
    if guess:
        expected = f"did you mean '{guess}'?"
    elif known:
        expected = f"expected one of: {', '.join(known)}"
    else:
        expected = f"expected a flow file in {folder}"
    raise FlowError(
        [
            Diagnostic(
                name_or_path, 1, 1, f"no flow named '{name_or_path}' (looked for {path})", expected
            )
        ]
    )
