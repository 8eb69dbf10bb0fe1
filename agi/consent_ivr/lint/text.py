"""Reading a prompt text the way the content rules need it: words, sentences, keys and what each
key is said to do, and which facts the words state.

Theory of operation
-------------------
A text is normalised (NFKC, case-folded) and cut into tokens: words, single key characters
(``0``–``9``, ``*``, ``#``), longer numbers, and punctuation. Sentences end at ``. ! ? ;`` (not
after a known abbreviation, not inside ``example.com``); clauses end at commas and at the
language's clause words (``oder``, ``or``, …).

A **key mention** is a single key character — or a number word right after a key word, such as
"press one" — in a sentence that also has a key word (``Taste``, ``press``) or, in a prompt that
takes input, a role word. Each mention is **bound** to a role (accept, decline, full notice,
repeat; withdraw/cancel in a withdrawal flow) by the role words of its own clause (the nearest
one), or else by a neighbouring clause that has role words but no key of its own: "If you agree,
press 1" binds forwards, "Press 1 if you agree" backwards, in the order they are spoken. A
negation just before an agreeing word (``nicht einverstanden``, ``do not agree``) makes it a
declining one. A mention with no role word anywhere near stays unbound (``only 1 or 2``).

Facts are found by cue phrases (`consent_ivr.lint.cues`) and by names: the controller's name
without its legal form, recipients, countries with their synonyms, and the policy URL's host
spelled out ("muster minus telefon punkt example").

All of this is heuristic reading of natural language: the rules that use it are *checks*, and
say so; the cue tables are data that can be extended per language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from consent_ivr.lint.cues import Cues, Phrase
from consent_ivr.lint.words import Token, normalise, tokenize, words


@dataclass(frozen=True)
class Mention:
    """A key named in a text: `key` is the key character, `role` what the words say it does
    (None when they say nothing), `sentence` the index of its sentence."""

    key: str
    role: str | None
    sentence: int


@dataclass
class _Clause:
    tokens: list[Token]
    mentions: list[tuple[int, str]] = field(default_factory=list)  # (token index, key)
    roles: list[tuple[int, str]] = field(default_factory=list)  # (token index, role)


class Reading:
    """What one text says, in one language, read with that language's cues (or none)."""

    def __init__(self, text: str, cues: Cues | None, *, input_prompt: bool, withdrawal: bool):
        self.text = text
        self.cues = cues
        self.tokens = tokenize(text)
        self.input_prompt = input_prompt
        self.role_names: dict[str, tuple[str, ...]] = (
            {"accept": ("withdraw", "confirm"), "decline": ("cancel",)}
            if withdrawal
            else {"accept": ("accept",), "decline": ("decline",)}
        )

    # ------------------------------------------------------------------------ structure
    @cached_property
    def sentences(self) -> list[list[Token]]:
        """The sentences, each a list of tokens without its final mark."""
        out: list[list[Token]] = [[]]
        abbreviations = self.cues.abbreviations if self.cues else frozenset()
        for i, t in enumerate(self.tokens):
            if t.ends_sentence:
                prev = self.tokens[i - 1].text if i else ""
                if t.text == "." and prev in abbreviations:
                    continue
                if out[-1]:
                    out.append([])
                continue
            out[-1].append(t)
        return [s for s in out if s]

    @cached_property
    def _sentence_words(self) -> list[list[str]]:
        return [[t.text for t in s if t.kind != "punct"] for s in self.sentences]

    def _clauses(self, sentence: list[Token], marked: set[int]) -> list[_Clause]:
        """The clauses of a sentence: cut at commas and clause words, and before a key word
        when the clause already names a key ("Press 1 to agree press 2 to decline")."""
        breaks = self.cues.clause_words if self.cues else frozenset()
        key_words = self.cues.key_words if self.cues else _DEFAULT_KEY_WORDS
        clauses: list[_Clause] = [_Clause([])]
        has_key = False
        for t in sentence:
            is_break = t.kind == "punct" and t.text in _CLAUSE_MARKS
            if is_break or (t.kind == "word" and t.text in breaks):
                if clauses[-1].tokens:
                    clauses.append(_Clause([]))
                has_key = False
                continue
            if has_key and t.kind == "word" and _matches_any(t.text, key_words):
                clauses.append(_Clause([]))
                has_key = False
            clauses[-1].tokens.append(t)
            has_key = has_key or t.index in marked
        return [c for c in clauses if c.tokens]

    # ---------------------------------------------------------------------------- roles
    def _role_hits(self, tokens: list[Token]) -> list[tuple[int, str]]:
        """(token index, role) for each role phrase in `tokens`; the longest phrase wins where
        phrases overlap, decline over accept on a tie; a negated agreeing word declines."""
        if self.cues is None:
            return []
        toks = [t for t in tokens if t.kind != "punct"]
        texts = [t.text for t in toks]
        hits: list[tuple[int, int, int, str]] = []  # (start, end, priority, role)
        for role, names in (
            ("decline", self.role_names["decline"]),
            ("accept", self.role_names["accept"]),
            ("full_notice", ("full_notice",)),
            ("repeat", ("repeat",)),
        ):
            for name in names:
                for phrase in self.cues.roles.get(name, ()):
                    for start, end in phrase.find(texts):
                        hits.append((start, end, 1 if role == "decline" else 0, role))
        hits.sort(key=lambda h: (-(h[1] - h[0]), -h[2], h[0]))
        taken: list[tuple[int, int]] = []
        out: list[tuple[int, str]] = []
        for start, end, _prio, role in hits:
            if any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            if role == "accept" and self._negated(texts, start):
                role = "decline"
            out.append((toks[start].index, role))
        return sorted(out)

    def _negated(self, texts: list[str], start: int) -> bool:
        assert self.cues is not None
        window = texts[max(0, start - NEGATION_WINDOW) : start]
        return any(w in self.cues.negations or w.endswith("n't") for w in window)

    # ------------------------------------------------------------------------- mentions
    def _mention_tokens(self, sentence: list[Token]) -> set[int]:
        """Token indexes of the key mentions in one sentence: a digit in a sentence with a key
        word (or, in a prompt that takes input, a role word); a number word right after a key
        word ("press one", "Taste eins"); in a sentence with a key word, one that cannot be an
        article ("or two for no"); in a sentence with a key or role word, one after an article
        ("mit der Eins", "with the nine") — never "nach sechs Monaten"."""
        texts = [t.text for t in sentence]
        key_words = self.cues.key_words if self.cues else _DEFAULT_KEY_WORDS
        has_key_word = any(_matches_any(w, key_words) for w in texts)
        has_role = bool(self._role_hits(sentence))
        out: set[int] = set()
        for i, t in enumerate(sentence):
            if t.kind == "key":
                if has_key_word or (self.input_prompt and has_role):
                    out.add(t.index)
            elif self.cues is not None and t.text in self.cues.number_words:
                after_filler = i > 0 and texts[i - 1] in self.cues.fillers
                if (has_key_word and (t.text not in _ARTICLE_LIKE or after_filler)) or (
                    has_role and after_filler
                ):
                    out.add(t.index)
                    continue
                for gap, w in enumerate(reversed(texts[max(0, i - 4) : i])):
                    if _matches_any(w, key_words):
                        out.add(t.index)
                        break
                    if w not in self.cues.fillers or gap >= 3:
                        break
        return out

    @cached_property
    def mentions(self) -> list[Mention]:
        """Every key mention with its bound role, in the order spoken."""
        return self._announcements[0]

    @cached_property
    def _announcements(self) -> tuple[list[Mention], frozenset[int]]:
        """The key mentions, and the token indexes of the clauses that announce the full-notice
        key ("Full information: press 9"): a key press, but not a way to withdraw."""
        found: list[Mention] = []
        full_notice: set[int] = set()
        for s_i, sentence in enumerate(self.sentences):
            marked = self._mention_tokens(sentence)
            if not marked:
                continue
            clauses = self._clauses(sentence, marked)
            for clause in clauses:
                clause.roles = self._role_hits(clause.tokens)
                clause.mentions = [
                    (t.index, self._key_of(t)) for t in clause.tokens if t.index in marked
                ]
            bound = _bind(clauses)
            for c_i, clause in enumerate(clauses):
                for (_idx, key), role in zip(clause.mentions, bound[c_i], strict=True):
                    found.append(Mention(key, role, s_i))
                if bound[c_i] and all(role == "full_notice" for role in bound[c_i]):
                    full_notice.update(t.index for t in clause.tokens)
        return found, frozenset(full_notice)

    def _key_of(self, token: Token) -> str:
        if token.kind == "key":
            return token.text
        assert self.cues is not None
        return self.cues.number_words[token.text]

    @cached_property
    def key_sentences(self) -> frozenset[int]:
        """Indexes of the sentences that name a key (the key announcements)."""
        return frozenset(m.sentence for m in self.mentions)

    @cached_property
    def effort_sentences(self) -> frozenset[int]:
        """Sentences that ask for waiting, hanging up or more than one key press."""
        if self.cues is None:
            return frozenset()
        return frozenset(
            i
            for i, ws in enumerate(self._sentence_words)
            if any(p.find(ws) for p in self.cues.decline_effort)
        )

    @cached_property
    def hang_up_sentences(self) -> frozenset[int]:
        """Sentences that tell the caller to hang up or end the call."""
        if self.cues is None:
            return frozenset()
        return frozenset(
            i
            for i, ws in enumerate(self._sentence_words)
            if any(p.find(ws) for p in self.cues.hang_up_to_object)
        )

    @cached_property
    def speaks_of_recording(self) -> bool:
        return self.cues is not None and self.says(self.cues.recording)

    @cached_property
    def declines_by_effort(self) -> bool:
        """A sentence offers declining by waiting, extra key presses, or hanging up (unless the
        text speaks of recording: "hang up if you object" to a recording is R19's)."""
        effort = set(self.effort_sentences)
        if not self.speaks_of_recording:
            effort |= self.hang_up_sentences
        for i in sorted(effort):
            roles = {r for _idx, r in self._role_hits(self.sentences[i])}
            if "decline" in roles:
                return True
            if any(m.sentence == i and m.role == "decline" for m in self.mentions):
                return True
        return False

    # ---------------------------------------------------------------------------- facts
    def negated_sentences(self) -> frozenset[int]:
        """Sentences with a negation word: they say what will not happen."""
        if self.cues is None:
            return frozenset()
        negations = self.cues.negations
        return frozenset(
            i
            for i, ws in enumerate(self._sentence_words)
            if any(w in negations or w.endswith("n't") for w in ws)
        )

    def says_affirmed(self, phrases: tuple[Phrase, ...]) -> bool:
        """Whether any of `phrases` occurs in a sentence without a negation word."""
        skip = self.negated_sentences()
        return any(
            p.find(ws)
            for i, ws in enumerate(self._sentence_words)
            if i not in skip
            for p in phrases
        )

    def says(self, phrases: tuple[Phrase, ...], *, outside_keys: bool = False) -> bool:
        """Whether any of `phrases` occurs in a sentence of the text (only in sentences that
        announce no key, with `outside_keys`)."""
        skip = self.key_sentences if outside_keys else frozenset()
        return any(
            p.find(ws)
            for i, ws in enumerate(self._sentence_words)
            if i not in skip
            for p in phrases
        )

    def fact(self, name: str, *, outside_keys: bool = False) -> bool | None:
        """Whether the text states fact `name` by its cue phrases; None: no cues for it."""
        if self.cues is None or name not in self.cues.facts:
            return None
        return self.says(self.cues.facts[name], outside_keys=outside_keys)

    def withdrawal_ways(self) -> tuple[bool, bool] | None:
        """(by phone, by post, e-mail or the web): the ways to withdraw that the sentences about
        withdrawal name (R17), not the rest of the text. Those are each sentence with a
        withdrawal cue, and the sentence after one that names no way of its own ("Changed your
        mind? Just call this number again."); a clause announcing the full-notice key ("Full
        information: press 9") is a key press, not a way to withdraw. None: no cues for it."""
        cues = self.cues
        if cues is None or not {"withdrawal", "phone", "other_channel"} <= set(cues.facts):
            return None
        skip = self._announcements[1]

        def finds(sentence: list[Token], fact: str) -> bool:
            # the sentence's words in runs between the skipped clauses, so that no phrase
            # spans a cut
            runs: list[list[str]] = [[]]
            for t in sentence:
                if t.index in skip:
                    if runs[-1]:
                        runs.append([])
                elif t.kind != "punct":
                    runs[-1].append(t.text)
            return any(p.find(run) for run in runs for p in cues.facts[fact])

        phone = other = False
        follow = False  # the previous sentence spoke of withdrawal and named no way
        for sentence in self.sentences:
            about = finds(sentence, "withdrawal")
            if not (about or follow):
                continue
            by_phone, by_other = finds(sentence, "phone"), finds(sentence, "other_channel")
            phone, other = phone or by_phone, other or by_other
            follow = about and not (by_phone or by_other)
        return phone, other

    def names(self, name: str, *, outside_keys: bool = False) -> bool:
        """Whether the name (its words, in order) occurs in a sentence of the text."""
        target = words(name)
        if not target:
            return False
        n = len(target)
        skip = self.key_sentences if outside_keys else frozenset()
        return any(
            ws[i : i + n] == target
            for s, ws in enumerate(self._sentence_words)
            if s not in skip
            for i in range(len(ws) - n + 1)
        )

    def spells_host(self, letters: str, *, outside_keys: bool = False) -> bool:
        """Whether the text spells out a host: its letters and digits, in order, with only
        joiner words (dot, minus, slash, ...) between them."""
        joiners = self.cues.url_joiners if self.cues else frozenset()
        skip = self.key_sentences if outside_keys else frozenset()
        spoken = "".join(
            w
            for s, ws in enumerate(self._sentence_words)
            if s not in skip
            for w in ws
            if w not in joiners
        )
        return bool(letters) and letters in spoken


#: A negation this many words before an agreeing word makes it a declining one ("If you would
#: not like to give your consent").
NEGATION_WINDOW = 5
#: Number words that are also articles or pronouns ("one decision", "ein Anruf"): keys only
#: after a key word or a filler such as "the", "die".
_ARTICLE_LIKE = frozenset({"one", "eins", "ein", "eine", "un", "une", "uno", "una", "een", "één"})
_CLAUSE_MARKS = frozenset(",()\u2013\u2014")
_DEFAULT_KEY_WORDS = frozenset({"press", "key", "taste", "touche", "tecla", "tasto", "toets"})


def _bind(clauses: list[_Clause]) -> list[list[str | None]]:
    """The role of each mention of each clause: its own clause's nearest role word, else the
    role of a neighbouring clause without keys, in the order spoken (cue then key binds
    forwards: "If you agree, press 1"; key then cue backwards: "Press 1, if you agree")."""
    bound: list[list[str | None]] = [[None] * len(c.mentions) for c in clauses]
    pending_cue: str | None = None
    waiting: list[int] = []  # clauses whose mentions wait for a following cue clause
    for c_i, clause in enumerate(clauses):
        if clause.mentions and clause.roles:
            for m_i, (idx, _key) in enumerate(clause.mentions):
                bound[c_i][m_i] = _nearest(clause.roles, idx)
            pending_cue, waiting = None, []
        elif clause.mentions:
            if pending_cue is not None:
                bound[c_i] = [pending_cue] * len(clause.mentions)
                pending_cue = None
            else:
                waiting.append(c_i)
        elif clause.roles:
            if waiting:
                cue = clause.roles[0][1]
                for w in waiting:
                    bound[w] = [cue] * len(clauses[w].mentions)
                waiting = []
            else:
                pending_cue = clause.roles[-1][1]
    return bound


def _nearest(roles: list[tuple[int, str]], index: int) -> str:
    """The role word nearest to token `index` (the earlier one on a tie)."""
    return min(roles, key=lambda r: (abs(r[0] - index), r[0] > index))[1]


def _matches_any(word: str, vocabulary: frozenset[str]) -> bool:
    if word in vocabulary:
        return True
    return any(v.endswith("*") and word.startswith(v[:-1]) for v in vocabulary)


def host_letters(url: str) -> str:
    """The letters and digits of a URL's host, without scheme and `www.`: what must be spoken."""
    text = normalise(url.strip())
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    host = re.split(r"[/?#]", text, maxsplit=1)[0]
    host = host.removeprefix("www.")
    return "".join(ch for ch in host if ch.isalnum())
