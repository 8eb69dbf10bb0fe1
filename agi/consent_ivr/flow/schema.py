"""The schema walker: read a composed YAML node tree as the values a flow file may hold.

`Checker` walks nodes (mappings with known keys, single values, lists, whole numbers, texts per
language), records a `Diagnostic` for every deviation and keeps going, so an author sees every
problem in one run; `Parsed` is what the section checks (`sections`, `purposes`, `choice`) collect
with it, each prompt as a `PromptSpec` that keeps its nodes for positions.

Rules of the flow checks: every message is `what is wrong; what was expected` in plain words for
flow authors; nothing may raise on bad input (any surprise becomes a diagnostic).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consent_ivr.flow.diagnostics import Diagnostic, SourceMap
from consent_ivr.flow.model import CLOSE_KINDS, Caps, Controller, Keys, Purpose

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
TAG_BOOL = "tag:yaml.org,2002:bool"

_DIGITS = re.compile(r"[0-9]+")
#: A purpose or prompt id (a prompt id names its audio file).
WORD_ID = re.compile(r"[a-z][a-z0-9_]*")

#: The answer timeout of a flow whose choice names none.
DEFAULT_TIMEOUT_MS = 6_000

# What to write for a missing key, shown after "expected".
HINTS = {
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


def pos(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG_NULL


def _short(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(node: Node) -> str:
    if isinstance(node, ScalarNode):
        if node.tag == _TAG_NULL:
            return "empty"
        if node.tag in (_TAG_INT, _TAG_FLOAT):
            return f"the number {node.value}"
        if node.tag == TAG_BOOL:
            return f"the yes/no value {node.value}"
        return f"the text '{_short(node.value)}'"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a mapping"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def suggestion(word: str, known: Iterable[str], otherwise: str) -> str:
    """What to say of an unknown `word`: the closest of `known`, else all of them (in their
    given order), else `otherwise` (nothing is known)."""
    choices = list(known)
    guess = did_you_mean(word, choices)
    if guess:
        return f"did you mean '{guess}'?"
    return f"expected one of: {', '.join(choices)}" if choices else otherwise


def one_of(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices))


@dataclass
class Text:
    """A say/description value: text per language and the node of each (for positions)."""

    node: Node
    where: str
    texts: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    #: languages whose text names a key placeholder that cannot be spoken: choice.keys has an
    #: error, so the text the audio would be made from does not exist (R13 does not compare it)
    unbuilt: set[str] = field(default_factory=set)


@dataclass
class PromptSpec:
    id: str | None
    id_node: Node
    text: Text | None
    covers: frozenset[str] = frozenset()
    covers_node: Node | None = None
    tag_nodes: dict[str, Node] = field(default_factory=dict)


@dataclass
class QuestionSpec:
    purpose: str | None
    purpose_node: Node | None
    prompt: PromptSpec


class Checker:
    """Walks one composed flow document and collects diagnostics."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.smap = SourceMap()
        self.diags: list[Diagnostic] = []
        self.langs: tuple[str, ...] | None = None
        self.lang_nodes: dict[str, Node] = {}
        self.texts: list[Text] = []

    # -- reporting ---------------------------------------------------------------------------

    def error(self, node: Node, message: str, expected: str, rule: str = "") -> None:
        line, col = pos(node)
        self.diags.append(Diagnostic(self.path, line, col, message, expected, "error", rule))

    def place(self, name: str, node: Node | None) -> None:
        """Remember where flow part `name` stands in the file (for the linter's findings)."""
        if node is not None:
            self.smap.set(name, *pos(node))

    def warning(self, node: Node, message: str, expected: str, rule: str = "") -> None:
        line, col = pos(node)
        self.diags.append(Diagnostic(self.path, line, col, message, expected, "warning", rule))

    def wrong_type(self, node: Node, where: str, expected: str) -> None:
        self.error(node, f"{where} is {describe(node)}", f"expected {expected}")

    # -- generic shapes ----------------------------------------------------------------------

    def entries(self, node: Node, where: str) -> dict[str, tuple[Node, Node]] | None:
        """The entries of a mapping by key text; reports duplicate and non-text keys."""
        if not isinstance(node, MappingNode):
            self.wrong_type(node, where, "a mapping (key: value lines)")
            return None
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or is_null(key_node):
                self.error(key_node, f"a key in {where} is {describe(key_node)}", "expected a name")
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
                guess = did_you_mean(key, fields)
                expected = (
                    f"did you mean '{guess}'?" if guess else f"expected one of: {one_of(fields)}"
                )
                self.error(key_node, f"unknown key '{key}' in {where}", expected)
        for key, required in fields.items():
            if required and key not in found:
                self.error(node, f"missing '{key}' in {where}", f"expected {key}: {HINTS[key]}")
        return found

    def scalar_text(self, node: Node, where: str, expected: str) -> str | None:
        """A non-empty single value, read as the author wrote it (`Yes` stays `Yes`)."""
        if not isinstance(node, ScalarNode) or is_null(node):
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

    def text(self, node: Node, where: str) -> Text | None:
        """A spoken/described text: `{lang: text}` for exactly the flow's languages."""
        langs = self.langs
        if isinstance(node, ScalarNode) and not is_null(node):
            if langs is not None and len(langs) == 1:
                if not node.value.strip():
                    self.error(node, f"{where} is empty", "expected spoken words")
                    return None
                t = Text(node, where, {langs[0]: node.value.strip()}, {langs[0]: node})
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
        t = Text(node, where)
        for lang, (key_node, value_node) in found.items():
            if langs is not None and lang not in langs:
                guess = did_you_mean(lang, langs)
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
class ReturningSpec:
    """The `returning:` block as read; a part is None when it was missing or wrong."""

    node: Node
    max_age_days: int | None = None
    remember: tuple[str, ...] | None = None
    reminders: dict[str, PromptSpec] = field(default_factory=dict)
    allow_recording: bool = False


@dataclass
class Parsed:
    """What the section checks collected; a part is None when it was missing or wrong."""

    flow_id: str | None = None
    flow_id_node: Node | None = None
    version: int | None = None
    notice_version: str | None = None
    kind: str = "consent"
    controller: Controller | None = None
    policy_url: str | None = None
    purposes: dict[str, tuple[Purpose | None, Node]] = field(default_factory=dict)
    purpose_texts: dict[str, Text] = field(default_factory=dict)
    notice: list[PromptSpec] = field(default_factory=list)
    full_notice: list[PromptSpec] = field(default_factory=list)
    keys: Keys | None = None
    key_nodes: dict[str, Node] = field(default_factory=dict)
    timeout_ms: int | None = DEFAULT_TIMEOUT_MS
    caps: Caps | None = None
    accept_during_notice: bool = False
    noinput: list[PromptSpec] = field(default_factory=list)
    nomatch: list[PromptSpec] = field(default_factory=list)
    questions: list[QuestionSpec] = field(default_factory=list)
    close: dict[str, PromptSpec] = field(default_factory=dict)
    #: ``sounds: formats:`` in `FORMATS` order (the WAV first); only the WAV when not given
    formats: tuple[str, ...] = ("wav",)
    returning: ReturningSpec | None = None


def prompt_specs(p: Parsed) -> list[PromptSpec]:
    """Every prompt of the flow, in the order of the file's sections."""
    return (
        p.notice
        + p.full_notice
        + [q.prompt for q in p.questions]
        + p.noinput
        + p.nomatch
        + [p.close[k] for k in CLOSE_KINDS if k in p.close]
        + (list(p.returning.reminders.values()) if p.returning else [])
    )
