"""Words of a spoken text: normalisation and tokens, shared by the cue tables and the reading."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_TOKEN = re.compile(
    r"(?P<num>[0-9]+)"
    r"|(?P<key>[*#])"
    r"|(?P<word>[^\W\d_]+(?:'[^\W\d_]+)?)"
    r"|(?P<punct>[.!?;:,()\u2013\u2014/-])"
)
_SENTENCE_END = frozenset(".!?;")
#: French and Italian elisions split off a word: l'information -> l' information
_ELISION = re.compile(r"^([^\W\d_]{1,2}')([^\W\d_]{2,})$")


@dataclass(frozen=True)
class Token:
    text: str  # normalised (case-folded)
    kind: str  # word | num | key | punct
    index: int  # position in the token list
    ends_sentence: bool = False  # a sentence mark followed by a space or the end


#: German umlauts as written without them (casefold already makes ß "ss"): "Baeckerei" and
#: "Bäckerei" are one name, as a caller hears them and as web addresses spell them.
_TRANSLITERATE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})


def normalise(text: str) -> str:
    """The form every word is compared in, text and cue table alike: NFKC, case-folded, the
    typographic apostrophe made plain, and German transliterated (ä→ae, ö→oe, ü→ue, ß→ss), so
    either spelling matches the other wherever names or cue words are matched."""
    folded = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    return folded.translate(_TRANSLITERATE)


def tokenize(text: str, *, as_written: bool = False) -> list[Token]:
    """The tokens of `text` (normalised; `as_written`: in the text's own case and spelling, the
    same tokens). A `.` ends a sentence only before a space or the end, and not after a single
    letter (``z. B.``, ``e. g.``): ``example.com`` stays one sentence."""
    written = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    norm = written if as_written else normalise(text)
    out: list[Token] = []
    for m in _TOKEN.finditer(norm):
        kind = m.lastgroup or "punct"
        value = m.group()
        if kind == "num" and len(value) == 1:
            kind = "key"
        if kind == "word" and (el := _ELISION.match(value)):
            out.append(Token(el.group(1), "word", len(out)))
            value = el.group(2)
        ends = False
        if kind == "punct" and value in _SENTENCE_END:
            after = norm[m.end() : m.end() + 1]
            prev = out[-1].text if out else ""
            single_letter = len(prev) == 1 and prev.isalpha()
            ends = (not after or after.isspace() or after in "\"')»") and not (
                value == "." and single_letter
            )
        out.append(Token(value, kind, len(out), ends))
    return out


def words(text: str, *, as_written: bool = False) -> list[str]:
    """The words and numbers of `text`, without punctuation: for matching names (normalised;
    `as_written` for showing them)."""
    return [t.text for t in tokenize(text, as_written=as_written) if t.kind != "punct"]
