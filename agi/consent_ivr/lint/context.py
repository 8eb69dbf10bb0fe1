"""What every content rule reads: the flow, where its parts are, each text read once, each prompt's
duration, and whether a `covers` claim is true in a language.

A rule is a function ``rule(ctx) -> Iterator[Diagnostic]``; it never touches the disk or the store
itself — what it needs from outside the flow (the other flows of its folder, the store's versions)
is handed in here by `consent_ivr.lint.check`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from consent_ivr.flow.diagnostics import Diagnostic, SourceMap
from consent_ivr.flow.model import Flow, Prompt
from consent_ivr.lint.cues import Cues, available, cues_for
from consent_ivr.lint.text import Reading, host_letters
from consent_ivr.lint.words import normalise, words

if TYPE_CHECKING:
    from consent_ivr.flow.diagnostics import Severity

#: Speech rate used when a prompt has no audio yet (or audio made for another text): characters
#: per second, the median over the example flow's espeak-ng prompts at 170 words per minute
#: (German 16.0, English 16.1; short prompts speak fewer, so an estimate errs on the short side).
CHARS_PER_SECOND = 16.0
SAMPLES_PER_SECOND = 8000

#: Prompt roles, by where a prompt is in the flow.
NOTICE, FULL, QUESTION, NOINPUT, NOMATCH, CLOSE = (
    "notice",
    "full_notice",
    "question",
    "noinput",
    "nomatch",
    "close",
)
INPUT_ROLES = frozenset({QUESTION, NOINPUT, NOMATCH})


@dataclass(frozen=True)
class StoredVersion:
    """A flow version the evidence store has recorded decisions for (R18)."""

    source_sha256: str
    notice_version: str
    texts: dict[str, dict[str, str]]  # language -> prompt id -> text
    declaration: dict[str, Any] | None  # purposes as declared; None: stored before it was kept
    first_seen: str


class Context:
    """One flow under the linter's eye (see the module docstring)."""

    def __init__(
        self,
        flow: Flow,
        source_map: SourceMap,
        *,
        audio_checked: bool = True,
        folder_flows: Callable[[], list[Flow]] | None = None,
        stored_versions: list[StoredVersion] | None = None,
    ) -> None:
        self.flow = flow
        self.smap = source_map
        self.path = flow.source_path
        self.audio_checked = audio_checked
        self._folder_flows = folder_flows
        self.stored_versions = stored_versions
        self._readings: dict[tuple[str, str], Reading] = {}
        self._support: dict[tuple[str, str, str], bool | None] = {}
        roles: dict[str, str] = {}
        for p in flow.notice:
            roles[p.id] = NOTICE
        for p in flow.full_notice:
            roles[p.id] = FULL
        for q in flow.questions:
            roles[q.prompt.id] = QUESTION
        for p in flow.choice.noinput:
            roles[p.id] = NOINPUT
        for p in flow.choice.nomatch:
            roles[p.id] = NOMATCH
        for p in flow.close.values():
            roles[p.id] = CLOSE
        self.roles = roles

    # -------------------------------------------------------------------------- findings
    def finding(
        self, rule: str, where: str, message: str, fix: str, severity: Severity = "error"
    ) -> Diagnostic:
        line, col = self.smap.at(where)
        return Diagnostic(self.path, line, col, message, fix, severity, rule)

    # --------------------------------------------------------------------------- reading
    @staticmethod
    def cues(lang: str) -> Cues | None:
        return cues_for(lang)

    def reading(self, prompt: Prompt, lang: str) -> Reading:
        key = (prompt.id, lang)
        found = self._readings.get(key)
        if found is None:
            found = Reading(
                prompt.text[lang],
                cues_for(lang),
                input_prompt=self.roles.get(prompt.id) in INPUT_ROLES,
                withdrawal=self.flow.is_withdrawal,
            )
            self._readings[key] = found
        return found

    def prompts(self, *roles: str) -> list[Prompt]:
        """The flow's prompts with these roles, in flow order."""
        return [p for p in self.flow.all_prompts() if self.roles.get(p.id) in roles]

    def seconds(self, prompt: Prompt, lang: str) -> float:
        """How long the prompt plays: from its audio, or estimated from its text."""
        samples = prompt.samples.get(lang, 0)
        if samples > 0:
            return samples / SAMPLES_PER_SECOND
        return len(prompt.text[lang]) / CHARS_PER_SECOND

    def estimated(self, prompt: Prompt, lang: str) -> bool:
        return prompt.samples.get(lang, 0) <= 0

    # ------------------------------------------------------------------------- the flow
    @cached_property
    def consent_recipients(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for p in self.flow.consent_purposes:
            for r in p.recipients:
                seen.setdefault(r, None)
        return tuple(seen)

    @cached_property
    def consent_countries(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for p in self.flow.consent_purposes:
            for c in p.third_countries:
                seen.setdefault(c, None)
        return tuple(seen)

    def folder_flows(self) -> list[Flow]:
        """The other flows of the flow's folder that load (for R17); [] when not looked up."""
        return self._folder_flows() if self._folder_flows is not None else []

    @property
    def looks_at_folder(self) -> bool:
        return self._folder_flows is not None

    # ---------------------------------------------------------------------- names, facts
    def names_controller(self, reading: Reading) -> bool:
        name = self.flow.controller.name
        return reading.names(name) or reading.names(core_name(name, reading.cues))

    def names_country(self, reading: Reading, country: str) -> bool:
        return any(reading.names(n) for n in country_names(country, reading.cues))

    def supports(self, prompt: Prompt, item: str, lang: str) -> bool | None:
        """Whether `prompt`'s `lang` text says what covers item `item` claims; None when it
        cannot be told (no cue words for the language, nothing declared to look for)."""
        key = (prompt.id, item, lang)
        if key not in self._support:
            self._support[key] = self._supports(prompt, item, lang)
        return self._support[key]

    def _supports(self, prompt: Prompt, item: str, lang: str) -> bool | None:
        r = self.reading(prompt, lang)
        if item == "controller":
            return self.names_controller(r)
        if item == "recipients":
            names = self.consent_recipients or self.all_recipients or self.all_processors
            if not names:
                return None
            return any(r.names(n) for n in names)
        if item == "third_country":
            countries = self.consent_countries or self.all_countries
            if not countries:
                return None
            return any(self.names_country(r, c) for c in countries)
        if item == "policy_pointer":
            spelled = r.spells_host(host_letters(self.flow.policy_url))
            key = self.flow.choice.keys.full_notice
            if key is None or self.flow.is_withdrawal:
                return spelled
            return spelled and any(m.key == key for m in r.mentions)
        return r.fact(item)

    @cached_property
    def all_recipients(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for p in self.flow.purposes for r in p.recipients))

    @cached_property
    def all_processors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for p in self.flow.purposes for r in p.processors))

    @cached_property
    def all_countries(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for p in self.flow.purposes for c in p.third_countries))

    def covered(self, prompts: Iterable[Prompt], item: str, lang: str) -> bool:
        """Whether some prompt claims `item` and its `lang` text supports it (or cannot be
        checked: the missing cue table is reported once, by R9)."""
        return any(item in p.covers and self.supports(p, item, lang) is not False for p in prompts)


def core_name(name: str, cues: Cues | None, *, as_written: bool = False) -> str:
    """A company name without its legal form and a leading article: what a caller must hear
    (normalised, for matching; `as_written`, in the name's own spelling, for messages)."""
    parts = words(name)
    start, end = _core_span(parts, cues)
    shown = words(name, as_written=True) if as_written else parts
    return " ".join(shown[start:end])


def legal_form(name: str, cues: Cues | None) -> str:
    """The legal form a company name ends with ("gmbh", "ltd"; normalised), or ""."""
    parts = words(name)
    _start, end = _core_span(parts, cues)
    return " ".join(parts[end:])


def same_controller(a: str, b: str) -> bool:
    """Whether two declared controller names name the same controller (R17: a withdrawal flow
    serves the consent flows of its own controller). Compared normalised — case, spacing and
    punctuation, German transliteration (ä/ae, ö/oe, ü/ue, ß/ss) and a leading article do not
    count — and the legal form may be left out on either side ("Bäckerei Sonnenschein" is
    "Baeckerei Sonnenschein GmbH"); two different legal forms are two controllers ("Muster GmbH"
    is not "Muster AG")."""
    if core_name(a, None) != core_name(b, None):
        return False
    form_a, form_b = legal_form(a, None), legal_form(b, None)
    return not (form_a and form_b) or form_a == form_b


def _core_span(parts: list[str], cues: Cues | None) -> tuple[int, int]:
    forms = (cues.legal_forms if cues else frozenset()) | _LEGAL_FORMS
    start, end = 0, len(parts)
    while end - start > 1 and parts[end - 1] in forms:
        end -= 1
    while end - start > 1 and parts[start] in _ARTICLES:
        start += 1
    return start, end


_LEGAL_FORMS = frozenset(
    normalise(form)
    for form in [
        "gmbh",
        "mbh",
        "ag",
        "ug",
        "kg",
        "ohg",
        "gbr",
        "kgaa",
        "se",
        "ev",
        "eg",
        "co",
        "ltd",
        "limited",
        "plc",
        "inc",
        "llc",
        "llp",
        "corp",
        "sa",
        "sas",
        "sarl",
        "bv",
        "nv",
        "spa",
        "srl",
        "ab",
        "oy",
        "as",
        "haftungsbeschränkt",
        "e",
        "v",
    ]
)
_ARTICLES = frozenset(["the", "die", "der", "das", "la", "le", "les", "el", "il", "de", "het"])


def country_names(country: str, cues: Cues | None) -> tuple[str, ...]:
    """The names a text may use for a declared third country (the declared name included): the
    country is recognised in any table (a flow may declare "United States" and its German text
    say "Vereinigte Staaten"), and every table's names for it count."""
    names = [country]
    key = " ".join(words(country))
    tables = [cues_for(lang) for lang in available()]
    if cues is not None:
        tables.append(cues)
    canonical_keys = {
        canonical
        for table in tables
        if table is not None
        for canonical, synonyms in table.countries.items()
        if key == canonical or key in {" ".join(words(s)) for s in synonyms}
    }
    for table in tables:
        if table is None:
            continue
        for canonical in canonical_keys:
            names += [canonical, *table.countries.get(canonical, ())]
    return tuple(dict.fromkeys(names))
