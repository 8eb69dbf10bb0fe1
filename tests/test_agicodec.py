"""The AGI codec: quoting round-trips through Asterisk's tokenizer; the response grammar of §3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_ivr.agicodec import (
    AgiEnvironment,
    AgiProtocolError,
    CommandEncodingError,
    ResponseReader,
    format_command,
    parse_200,
    quote,
)
from consent_ivr.harness.tokenizer import parse_args

sendable = st.text(
    alphabet=st.characters(blacklist_characters="\n\x00", blacklist_categories=("Cs",)),
    max_size=200,
)


@given(sendable)
def test_any_sendable_value_round_trips_through_asterisks_tokenizer(value: str) -> None:
    line = format_command("SET", "VARIABLE", args=("NAME", value))
    words = parse_args(line[:-1])
    assert words == [b"SET", b"VARIABLE", b"NAME", value.encode("utf-8")]


@pytest.mark.parametrize("bad", ["a\nb", "nul\x00", "lone surrogate \ud800"])
def test_values_that_cannot_be_sent_are_refused_not_split(bad: str) -> None:
    with pytest.raises(CommandEncodingError):
        quote(bad)


def test_empty_argument_is_a_pair_of_quotes() -> None:
    assert format_command("STREAM", "FILE", args=("hello", "")) == b'STREAM FILE "hello" ""\n'


def feed_all(lines: list[str]):
    r = ResponseReader()
    out = [r.feed(line) for line in lines]
    return r, out


def test_result_with_data_runs_to_the_last_parenthesis() -> None:
    resp = parse_200("200 result=1 (a (b) c)")
    assert resp.result == "1" and resp.data == "a (b) c"
    assert parse_200("200 result=1 ()").data == ""
    assert parse_200("200 result=0").data is None


def test_get_data_empty_result_and_timeout_flag() -> None:
    assert parse_200("200 result=").result == ""
    resp = parse_200("200 result= (timeout)")
    assert resp.result == "" and resp.data == "timeout"
    assert parse_200("200 result=12 (timeout)").result == "12"


def test_endpos_and_negative_results() -> None:
    resp = parse_200("200 result=-1 endpos=28160")
    assert resp.result_int() == -1 and resp.endpos == 28160


def test_hangup_line_sets_a_flag_and_the_response_follows() -> None:
    r, out = feed_all(["HANGUP\n", "200 result=0\n"])
    assert out[0] is None and r.hangup_seen and out[1].result == "0"


def test_interim_100_is_skipped() -> None:
    _, out = feed_all(["100 result=0 Trying...\n", "200 result=0 Gosub complete\n"])
    assert out[0] is None and out[1].code == 200


def test_both_520_forms() -> None:
    _, out = feed_all(
        [
            "520-Invalid command syntax.  Proper usage follows:\n",
            "usage text\n",
            "520 End of proper usage.\n",
        ]
    )
    assert out[:2] == [None, None] and out[2].code == 520 and len(out[2].lines) == 3
    _, out = feed_all(["520 Invalid command syntax.  Proper usage not available.\n"])
    assert out[0].code == 520


def test_511_is_dead() -> None:
    _, out = feed_all(["511 Command Not Permitted on a dead channel or intercept routine\n"])
    assert out[0].dead


@pytest.mark.parametrize("line", ["garbage\n", "2000 result=1\n", "\n", "999 what\n"])
def test_unparseable_lines_are_protocol_errors(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        ResponseReader().feed(line)


def test_environment_keeps_values_exactly() -> None:
    env = AgiEnvironment()
    for line in ["agi_arg_1:  two spaces \n", "agi_arg_2: a: b\n", "agi_accountcode: \n"]:
        assert env.feed(line) is False
    assert env.feed("\n") is True
    assert env.args == [" two spaces ", "a: b"]
    assert env.get("agi_accountcode") == ""
