"""The per-language cue words the content rules read texts with, loaded from `cues/<lang>.yaml`.

A cue table is data: one YAML file per language (``de.yaml``, ``en.yaml``, …) next to this module.
To teach the linter a language, copy ``en.yaml`` to ``<code>.yaml`` and translate every list;
`tests/test_lint_cues.py` checks each table's shape and that its words read the example sentences
of its own ``examples:`` block correctly. A flow language without a table is still checked where
names suffice (controller, recipients, countries, the policy host, key digits); the rules that need
cue words say that they were skipped for it.

Phrase syntax (every list of phrases): words separated by spaces, matched case-insensitively on
whole words; ``word*`` matches any word starting with ``word``, ``*word`` any word ending with it
(German compounds: ``*straße``), ``*word*`` any word containing it; ``...`` lets up to four other
words stand between its neighbours (German separable verbs: ``stimm* ... zu``); ``<postcode>`` is
any number of 4 or 5 digits.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from consent_ivr.flow.model import COVER_ITEMS
from consent_ivr.lint.words import normalise, words

CUES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cues")

#: The fact cues a table must have: every cover item the words show by cue words (the others are
#: checked by names: controller, recipients, countries, the policy host), plus the ways to
#: withdraw that R17 tells apart.
FACTS: tuple[str, ...] = (
    *sorted(COVER_ITEMS - {"controller", "recipients", "third_country", "policy_pointer"}),
    "phone",
    "other_channel",
)
ROLES = ("accept", "decline", "full_notice", "repeat", "withdraw", "confirm", "cancel")
KINDS = ("linkage", "ads", "personalization", "profiling", "recording")
_GAP = 4


class CueError(ValueError):
    """A cue table is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class Phrase:
    """A cue phrase, compiled: each element is a word, a prefix (``word*``) or a gap."""

    text: str
    parts: tuple[tuple[str, str], ...]  # ("word"|"prefix"|"gap", value)

    @classmethod
    def parse(cls, text: str) -> Phrase:
        parts: list[tuple[str, str]] = []
        for raw in text.split():
            if raw == "...":
                parts.append(("gap", ""))
                continue
            if raw == "<postcode>":
                parts.append(("postcode", ""))
                continue
            head, tail = raw.startswith("*"), raw.endswith("*") and len(raw) > 1
            core = words(raw.strip("*"))
            if not core:
                raise ValueError(f"not a cue phrase: {text!r}")
            if head and tail:
                kind = "infix"
            elif head:
                kind = "suffix"
            elif tail:
                kind = "prefix"
            else:
                kind = "word"
            if len(core) > 1 and kind != "word":  # "e-mail*": the pattern applies to the last word
                parts += [("word", w) for w in core[:-1]]
                core = core[-1:]
            parts += [(kind, w) for w in core]
        if not parts or parts[0][0] == "gap" or parts[-1][0] == "gap":
            raise ValueError(f"not a cue phrase: {text!r}")
        return cls(text, tuple(parts))

    def find(self, words: list[str]) -> list[tuple[int, int]]:
        """(start, end) of every place the phrase occurs in `words`."""
        out = []
        for start in range(len(words)):
            end = self._match(words, start, 0)
            if end is not None:
                out.append((start, end))
        return out

    def _match(self, words: list[str], at: int, part: int) -> int | None:
        if part == len(self.parts):
            return at
        kind, value = self.parts[part]
        if kind == "gap":
            for skip in range(_GAP + 1):
                end = self._match(words, at + skip, part + 1)
                if end is not None:
                    return end
            return None
        if at >= len(words):
            return None
        word = words[at]
        if (
            word == value
            or (kind == "prefix" and word.startswith(value))
            or (kind == "suffix" and word.endswith(value))
            or (kind == "infix" and value in word)
            or (kind == "postcode" and word.isdigit() and 4 <= len(word) <= 5)
        ):
            return self._match(words, at + 1, part + 1)
        return None


@dataclass(frozen=True)
class Cues:
    """One language's cue table (see the module docstring and `cues/en.yaml`)."""

    language: str
    key_words: frozenset[str]
    number_words: dict[str, str]
    fillers: frozenset[str]
    negations: frozenset[str]
    clause_words: frozenset[str]
    abbreviations: frozenset[str]
    url_joiners: frozenset[str]
    legal_forms: frozenset[str]
    roles: dict[str, tuple[Phrase, ...]]
    decline_effort: tuple[Phrase, ...]
    facts: dict[str, tuple[Phrase, ...]]
    detriment: tuple[Phrase, ...]
    hang_up_to_object: tuple[Phrase, ...]
    recording: tuple[Phrase, ...]
    kinds: dict[str, tuple[Phrase, ...]]
    countries: dict[str, tuple[str, ...]]
    examples: dict[str, Any]


def available() -> list[str]:
    """The languages that have a cue table."""
    try:
        names = os.listdir(CUES_DIR)
    except OSError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".yaml") and not n.startswith("."))


def base_language(lang: str) -> str:
    """``de_at`` -> ``de``: tables are per language, not per region."""
    return re.split(r"[_-]", lang.lower(), maxsplit=1)[0]


def cues_for(lang: str) -> Cues | None:
    """The cue table for a flow language (by its base language), or None if there is none."""
    return _table(base_language(lang))


@functools.cache
def _table(base: str) -> Cues | None:
    path = os.path.join(CUES_DIR, f"{base}.yaml")
    if not os.path.isfile(path):
        return None
    return load_table(path, base)


def load_table(path: str, language: str) -> Cues:
    """Load and check one cue table; raises `CueError` naming the file and the bad entry."""
    try:
        with open(path, "rb") as fh:
            data = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError) as exc:
        raise CueError(f"{path}: cannot read the cue table ({exc})") from exc
    if not isinstance(data, dict):
        raise CueError(f"{path}: expected a mapping of cue lists")

    def words_of(key: str) -> frozenset[str]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise CueError(f"{path}: '{key}' must be a list of words")
        for v in value:
            if not isinstance(v, str):
                raise CueError(f"{path}: '{key}' has {v!r}, not a word (quote yes/no/on/off/null)")
        return frozenset(normalise(v) for v in value)

    def phrases(value: Any, where: str) -> tuple[Phrase, ...]:
        if not isinstance(value, list):
            raise CueError(f"{path}: '{where}' must be a list of phrases")
        for v in value:
            if not isinstance(v, str):
                raise CueError(
                    f"{path}: '{where}' has {v!r}, not a phrase (quote yes/no/on/off/null)"
                )
        try:
            return tuple(Phrase.parse(v) for v in value)
        except ValueError as exc:
            raise CueError(f"{path}: '{where}': {exc}") from exc

    def section(
        key: str, names: tuple[str, ...], *, required: bool
    ) -> dict[str, tuple[Phrase, ...]]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise CueError(f"{path}: '{key}' must be a mapping")
        unknown = set(value) - set(names)
        if unknown:
            raise CueError(f"{path}: unknown entries in '{key}': {', '.join(sorted(unknown))}")
        missing = [n for n in names if n not in value]
        if required and missing:
            raise CueError(f"{path}: '{key}' lacks {', '.join(missing)}")
        return {name: phrases(v, f"{key}.{name}") for name, v in value.items()}

    numbers = data.get("number_words", {})
    if not isinstance(numbers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) == 1 for k, v in numbers.items()
    ):
        raise CueError(f"{path}: 'number_words' must map words to one key character")
    countries = data.get("countries", {})
    if not isinstance(countries, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in countries.values()
    ):
        raise CueError(f"{path}: 'countries' must map a country to a list of names")
    examples = data.get("examples", {})
    if not isinstance(examples, dict):
        raise CueError(f"{path}: 'examples' must be a mapping")
    return Cues(
        language=language,
        key_words=words_of("key_words"),
        number_words={normalise(k): v for k, v in numbers.items()},
        fillers=words_of("fillers"),
        negations=words_of("negations"),
        clause_words=words_of("clause_words"),
        abbreviations=words_of("abbreviations"),
        url_joiners=words_of("url_joiners"),
        legal_forms=words_of("legal_forms"),
        roles=section("roles", ROLES, required=True),
        decline_effort=phrases(data.get("decline_effort", []), "decline_effort"),
        facts=section("facts", FACTS, required=True),
        detriment=phrases(data.get("detriment", []), "detriment"),
        hang_up_to_object=phrases(data.get("hang_up_to_object", []), "hang_up_to_object"),
        recording=phrases(data.get("recording", []), "recording"),
        kinds=section("kinds", KINDS, required=True),
        countries={normalise(str(k)): tuple(v) for k, v in countries.items()},
        examples=examples,
    )
