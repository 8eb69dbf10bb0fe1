"""The port of Asterisk's parse_args: AGI-PROTOCOL.md §2.2 examples and proc-quoting-quoting.log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

_AGI_DIR = Path(__file__).resolve().parents[1] / "agi"
if str(_AGI_DIR) not in sys.path:
    sys.path.insert(0, str(_AGI_DIR))

from consent_ivr.harness.tokenizer import MAX_WORDS, parse_args, quote_arg  # noqa: E402


@pytest.mark.parametrize(
    ("line", "words"),
    [
        # §2.2 examples
        (b"SET VARIABLE n v", [b"SET", b"VARIABLE", b"n", b"v"]),
        (b'ab"c d"e', [b"abc de"]),
        (b'STREAM FILE hello ""', [b"STREAM", b"FILE", b"hello", b""]),
        (b'\\"', [b'"']),
        (b"\\\\", [b"\\"]),
        (b"a\\ b", [b"a b"]),
        (b"\\n", [b"n"]),
        (
            b'SET VARIABLE V "say \\"hi\\" C:\\\\dir"',
            [b"SET", b"VARIABLE", b"V", b'say "hi" C:\\dir'],
        ),
        (b'SET VARIABLE "V" "say "hi" C:\\dir"', [b"SET", b"VARIABLE", b"V", b"say hi C:dir"]),
        # proc-quoting-quoting.log, as Asterisk 22.10.1 stored the values
        (b"SET VARIABLE Q1 a\\ b", [b"SET", b"VARIABLE", b"Q1", b"a b"]),
        (b'SET VARIABLE Q2 "a b" c', [b"SET", b"VARIABLE", b"Q2", b"a b", b"c"]),
        (b"SET VARIABLE Q3 'single quoted'", [b"SET", b"VARIABLE", b"Q3", b"'single", b"quoted'"]),
        (
            b'SET VARIABLE Q4 "unterminated value',
            [b"SET", b"VARIABLE", b"Q4", b"unterminated value"],
        ),
        (b'SET VARIABLE Q5 "tab\there"', [b"SET", b"VARIABLE", b"Q5", b"tab\there"]),
        (b'SET VARIABLE Q5b "tab\\there"', [b"SET", b"VARIABLE", b"Q5b", b"tabthere"]),
        (b'SET VARIABLE Q6 "back\\\\slash"', [b"SET", b"VARIABLE", b"Q6", b"back\\slash"]),
        (b"SET VARIABLE Q7 ${CALLERID(num)}", [b"SET", b"VARIABLE", b"Q7", b"${CALLERID(num)}"]),
        (b'SET VARIABLE "Q8" "quoted name"', [b"SET", b"VARIABLE", b"Q8", b"quoted name"]),
        (b'SET VARIABLE Q9 mid"quo"te', [b"SET", b"VARIABLE", b"Q9", b"midquote"]),
        (b'SET VARIABLE Q10 "x"y', [b"SET", b"VARIABLE", b"Q10", b"xy"]),
        (b"SET VARIABLE Q11 caf\xc3\xa9", [b"SET", b"VARIABLE", b"Q11", b"caf\xc3\xa9"]),
        (b'EXEC Set "Q13=${CALLERID(num)}"', [b"EXEC", b"Set", b"Q13=${CALLERID(num)}"]),
        (b'EXEC "Set" "Q15=x y"', [b"EXEC", b"Set", b"Q15=x y"]),
        (b'STREAM FILE "hello" ""', [b"STREAM", b"FILE", b"hello", b""]),
        # blanks: runs collapse, TAB separates, leading/trailing blanks vanish
        (b"  NOOP   spaced  ", [b"NOOP", b"spaced"]),
        (b"a\t\tb", [b"a", b"b"]),
        (b"", []),
        (b"   ", []),
        # a backslash alone at the end gives nothing; an escaped quote does not toggle quoting
        (b"a \\", [b"a"]),
        (b'a\\"b c', [b'a"b', b"c"]),
        # "" in the middle of a word is just two toggles
        (b'ab""cd', [b"abcd"]),
        (b'"" ""', [b"", b""]),
    ],
)
def test_parse_args_matches_asterisk(line: bytes, words: list[bytes]) -> None:
    assert parse_args(line) == words


def test_carriage_return_stays_part_of_the_word() -> None:
    assert parse_args(b"NOOP\r") == [b"NOOP\r"]
    assert parse_args(b"SET VARIABLE CR1 value\r") == [b"SET", b"VARIABLE", b"CR1", b"value\r"]
    assert parse_args(b'SET VARIABLE CR2 "quoted"\r') == [b"SET", b"VARIABLE", b"CR2", b"quoted\r"]
    assert parse_args(b'STREAM FILE hello ""\r') == [b"STREAM", b"FILE", b"hello", b"\r"]


def test_at_most_127_words_and_the_rest_is_dropped() -> None:
    line = b" ".join(b"w%d" % i for i in range(200))
    words = parse_args(line)
    assert len(words) == MAX_WORDS == 127
    assert words[-1] == b"w126"


def test_word_limit_also_drops_a_quoted_128th_word() -> None:
    line = b" ".join([b"x"] * 127) + b' "quoted tail" more'
    assert parse_args(line) == [b"x"] * 127


def test_the_127th_word_may_still_grow() -> None:
    line = b" ".join([b"x"] * 126) + b" ab\\ cd"
    words = parse_args(line)
    assert len(words) == 127
    assert words[-1] == b"ab cd"


def test_nul_ends_the_line_like_a_c_string() -> None:
    assert parse_args(b"NOOP\0 ignored") == [b"NOOP"]


@given(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\0" not in b))
def test_quote_arg_round_trips_any_value(value: bytes) -> None:
    assert parse_args(b"SET VARIABLE X " + quote_arg(value)) == [b"SET", b"VARIABLE", b"X", value]


def test_quote_arg_refuses_lf_and_nul() -> None:
    with pytest.raises(ValueError):
        quote_arg(b"a\nb")
    with pytest.raises(ValueError):
        quote_arg(b"a\0b")
