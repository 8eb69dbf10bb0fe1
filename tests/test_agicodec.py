"""The AGI codec: quoting round-trips through Asterisk's tokenizer; the response grammar of §3."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_ivr.harness.tokenizer import parse_args
from consent_ivr.protocol.codec import (
    AgiEnvironment,
    AgiProtocolError,
    CommandEncodingError,
    ResponseReader,
    format_command,
    parse_200,
    quote,
)

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
    assert parse_200("200 result=", digits=True).result == ""
    resp = parse_200("200 result= (timeout)", digits=True)
    assert resp.result == "" and resp.data == "timeout"
    assert parse_200("200 result=012 (timeout)", digits=True).result == "012"
    assert parse_200("200 result=-1", digits=True).result == "-1"


@pytest.mark.parametrize("line", ["200 result=", "200 result= (timeout)", "200 result=012"])
def test_a_get_data_answer_to_any_other_command_is_a_protocol_error(line: str) -> None:
    with pytest.raises(AgiProtocolError, match="expected a C int"):
        ResponseReader().feed(line)


def test_the_reader_expects_keys_only_after_get_data() -> None:
    reader = ResponseReader()
    reader.expect(["GET", "DATA", '"enter-digits"'])
    assert reader.feed("200 result=0049*A (timeout)\n").result == "0049*A"
    reader.expect(("WAIT", "FOR", "DIGIT"))
    with pytest.raises(AgiProtocolError):
        reader.feed("200 result=0049\n")


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


# ------------------------------------------------------------------ the result grammar (§3)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # res_agi.c prints results with %d (%u, %c: small)
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1  # and endpos with %ld (64-bit Linux)


def asterisk_could_print(text: str, low: int, high: int) -> bool:
    """The oracle: `text` is what printf's %d/%ld gives for some value in [low, high]; str() of a
    Python int is exactly that (ASCII, optional '-', no leading zero, no '+', no '_')."""
    try:
        value = int(text)  # also takes '٤٩', '+49', ' 49', '4_9': str() then differs
    except ValueError:
        return False
    return str(value) == text and low <= value <= high


@given(
    st.integers(INT_MIN, INT_MAX),
    st.one_of(st.none(), st.integers(LONG_MIN, LONG_MAX)),
    st.sampled_from(["", " (timeout)", " (dtmf)", " Gosub complete"]),
)
def test_every_result_asterisk_can_print_round_trips(result: int, endpos: int | None, tail: str):
    line = f"200 result={result}{tail}" + ("" if endpos is None else f" endpos={endpos}")
    resp = ResponseReader().feed(line + "\n")
    assert resp is not None and resp.result_int() == result and resp.endpos == endpos


def assert_quotes_nothing(message: str) -> None:
    """An error names the kind of line and its length; nothing else in it came from the peer."""
    assert message.isascii(), message
    rest = re.sub(r"a (200|510|511|520|503|100) line|of \d+ bytes", "", message)
    assert not any(c.isdigit() for c in rest), message


def _results_near_the_grammar() -> st.SearchStrategy[str]:
    """Strings a fuzzer would try: numbers in any script, signs, junk after digits, long ones."""
    digits = st.characters(categories=["Nd"])
    near = st.text(alphabet=st.one_of(digits, st.sampled_from("0123456789-+_.xe*#(")), max_size=25)
    numbers = st.integers(-(10**25), 10**25).map(str)
    padded = st.tuples(st.sampled_from(["0", "00", "-0", "+", "0x"]), numbers).map("".join)
    junk = st.tuples(numbers, st.text(min_size=1, max_size=5)).map("".join)
    anything = st.text(max_size=30)
    return st.one_of(near, numbers, padded, junk, anything).map(
        lambda s: s.replace(" ", "").replace("\n", "")  # the result ends at a space or LF
    )


@given(_results_near_the_grammar(), st.sampled_from(["", " endpos=0", " (x)"]))
def test_any_other_result_is_refused_and_never_read_as_a_number(text: str, tail: str) -> None:
    line = f"200 result={text}{tail}\n"
    try:
        value = ResponseReader().feed(line).result_int()  # type: ignore[union-attr]
    except AgiProtocolError as exc:
        assert not asterisk_could_print(text, INT_MIN, INT_MAX)
        assert_quotes_nothing(str(exc))
    else:
        assert asterisk_could_print(text, INT_MIN, INT_MAX) and value == int(text)


@given(_results_near_the_grammar())
def test_an_endpos_asterisk_cannot_print_is_refused(text: str) -> None:
    line = f"200 result=0 endpos={text}\n"
    if asterisk_could_print(text, LONG_MIN, LONG_MAX):
        assert ResponseReader().feed(line).endpos == int(text)  # type: ignore[union-attr]
    else:
        with pytest.raises(AgiProtocolError, match="endpos"):
            ResponseReader().feed(line)


@given(st.text(alphabet="0123456789*ABCD", max_size=1024), st.booleans())
def test_every_get_data_answer_round_trips(keys: str, timeout: bool) -> None:
    reader = ResponseReader()
    reader.expect(("GET", "DATA"))
    resp = reader.feed(f"200 result={keys}{' (timeout)' if timeout else ''}\n")
    assert resp is not None and resp.result == keys
    assert resp.data == ("timeout" if timeout else None)


@given(_results_near_the_grammar())
def test_a_get_data_answer_that_is_not_keys_is_refused(text: str) -> None:
    reader = ResponseReader()
    reader.expect(("GET", "DATA"))
    ok = text == "-1" or (len(text) <= 1024 and all(c in "0123456789*ABCD" for c in text))
    if ok:
        assert reader.feed(f"200 result={text}\n").result == text  # type: ignore[union-attr]
    else:
        with pytest.raises(AgiProtocolError):
            reader.feed(f"200 result={text}\n")


@pytest.mark.parametrize(
    "line",
    [
        "200 result=٤٩",  # Arabic-Indic 4 9: int() reads 49, key 1
        "200 result=４９",  # fullwidth 4 9
        "200 result=49abc",
        "200 result=049",
        "200 result=-0",
        "200 result=+49",
        "200 result=49000000000000000000",  # 20 digits: OverflowError in chr() before
        "200 result=2147483648",  # one beyond a C int
        "200 result=-2147483649",
        "200 result=49\tendpos=1",
        "200 result=49(x)",
        "200 result=0 endpos=٤٩",
        "200 result=0 endpos=12abc",
        "200 result=0 endpos=99999999999999999999",
        "200 result=1 (speech) endpos=0 results=x",
    ],
)
def test_answers_asterisk_never_sends_are_protocol_errors(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        resp = ResponseReader().feed(line + "\n")
        assert resp is not None
        resp.result_int()


@pytest.mark.parametrize(
    "line", ["٢٠٠ result=49", "200result=49", "2OO result=49", "201 result=49", "200-result=49"]
)
def test_a_response_code_that_is_not_ascii_200_is_a_protocol_error(line: str) -> None:
    with pytest.raises(AgiProtocolError):
        ResponseReader().feed(line + "\n")
