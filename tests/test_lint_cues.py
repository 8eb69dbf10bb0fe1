"""The cue tables: each loads, each reads its own example sentences right, a malformed table is
refused with its file and entry named, and a language without a table is said to be unchecked."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr.lint.cues import (
    CUES_DIR,
    CueError,
    available,
    base_language,
    cues_for,
    load_table,
)
from consent_ivr.lint.text import Reading

CASES = [
    (lang, sentence, expected)
    for lang in available()
    for sentence, expected in (cues_for(lang).examples.items() if cues_for(lang) else [])
]


def test_the_documented_languages_have_tables() -> None:
    assert {"de", "en", "fr", "es", "it", "nl"} <= set(available())
    assert base_language("de_AT") == "de" and cues_for("de_at") is cues_for("de")
    assert cues_for("xx") is None


@pytest.mark.parametrize(("lang", "sentence", "expected"), CASES)
def test_each_table_reads_its_example_sentences(
    lang: str, sentence: str, expected: dict[str, str]
) -> None:
    reading = Reading(sentence, cues_for(lang), input_prompt=True, withdrawal=False)
    got = {m.key: m.role for m in reading.mentions}
    assert {k: got.get(k) for k in expected} == expected, got


def test_every_table_has_examples_for_agreeing_and_declining() -> None:
    for lang in available():
        roles = {r for e in cues_for(lang).examples.values() for r in e.values()}  # type: ignore[union-attr]
        assert {"accept", "decline"} <= roles, lang


def test_withdrawal_flows_read_withdraw_and_cancel_as_the_two_keys() -> None:
    for lang, text in (
        ("de", "Widerrufen: Taste 1. Abbrechen: Taste 2."),
        ("en", "To withdraw, press 1. To cancel, press 2."),
    ):
        reading = Reading(text, cues_for(lang), input_prompt=True, withdrawal=True)
        assert [(m.key, m.role) for m in reading.mentions] == [("1", "accept"), ("2", "decline")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("key_words: [press, no]\n", "'key_words' has False, not a word"),
        ("roles: {accept: [agree]}\n", "'roles' lacks decline"),
        ("roles: {acept: [agree]}\n", "unknown entries in 'roles': acept"),
        ("number_words: {one: '12'}\n", "'number_words' must map words to one key character"),
        ("EN\ndetriment: ['...']\n", "'detriment': not a cue phrase"),
        ("- just a list\n", "expected a mapping of cue lists"),
    ],
)
def test_a_malformed_table_names_its_file_and_entry(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "xx.yaml"
    english = (Path(CUES_DIR) / "en.yaml").read_text(encoding="utf-8").split("\ndetriment:")[0]
    path.write_text(content.replace("EN\n", english + "\n"), encoding="utf-8")
    with pytest.raises(CueError) as info:
        load_table(str(path), "xx")
    assert str(info.value).startswith(str(path)) and message in str(info.value)
