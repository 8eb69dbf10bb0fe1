"""The AGI wire codec, sans I/O: format command lines and parse Asterisk's response lines.

Every rule here comes from AGI-PROTOCOL.md (Asterisk's res_agi.c):

* quoting (§2.2): every argument is wrapped in double quotes with ``\\`` and ``"`` escaped, so any
  value without LF/NUL round-trips through Asterisk's ``parse_args`` exactly; LF and NUL cannot be
  sent and are refused here rather than silently splitting a command;
* responses (§3): ``200 result=<int|digits> [(data)] [key=value ...]``; data runs from the first
  ``(`` to the *last* ``)``; ``200 result=`` (GET DATA, ``#`` first) has an empty result;
* the result is exactly what res_agi.c prints, nothing more: every command but GET DATA answers
  ``result=%d`` of a C int (CHANNEL STATUS ``%u`` of a channel state, 0-10; DATABASE ``%c`` of
  '0'/'1'), so ASCII digits with an optional ``-``, no leading zero but ``0`` itself, at most 10
  digits and within -2147483648..2147483647 (int is 32 bits wherever Asterisk runs); GET
  DATA answers ``result=%s``, the DTMF keys it collected (``0-9*A-D``, ``#`` ends input and is
  not kept, at most its 1024-byte buffer) or ``-1``. ``endpos=%ld`` is a C long (64 bits on
  Linux: at most 19 digits), ``results=%d`` an int. The result ends at a space or the end of the
  line. Anything else (``result=٤٩``, ``result=049``, ``result=49abc``, 20 digits) is an
  `AgiProtocolError`, never a number;
* ``HANGUP`` (§4) is an out-of-band line that can precede any response: it sets a flag and the
  parser keeps reading for the real response;
* ``100 result=0 Trying...`` (GOSUB) is interim: keep reading;
* ``520-`` starts a multi-line usage block that ends at the line starting with ``520 ``; the
  single-line ``520 ...Proper usage not available.`` ends at once;
* ``511`` means the channel is dead (a hang-up-class error), ``510`` an unknown command;
* EOF means hang-up.

The `ResponseReader` is fed one line at a time and says when a complete response is there; the
process-AGI driver (pyst2) and the FastAGI driver feed it from their own streams.

An error never quotes what the peer sent (a GET VARIABLE answer can hold a phone number, and an
error ends up in logs and evidence records): `describe_line` names the kind of line and its length.
"""

from __future__ import annotations

import functools
import re
from types import MappingProxyType

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

HANGUP_LINE = "HANGUP"

#: What ``%d`` / ``%u`` / ``%c`` print; ASCII only (``\d`` would match any script's digits).
_INT_RE = re.compile(r"0|-?[1-9][0-9]{0,9}")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
#: What ``%ld`` prints (endpos, sample offsets).
_LONG_RE = re.compile(r"0|-?[1-9][0-9]{0,18}")
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
#: GET DATA's ``%s``: the keys collected, or ``-1`` (hang-up, missing prompt).
_DIGITS_RE = re.compile(r"[0-9*A-D]{0,1024}|-1")
_KV_RE = re.compile(r"(?:^| )([A-Za-z_][A-Za-z0-9_]*)=([^ ]*)")
#: Extras that res_agi.c prints as a C long or int (``results`` and ``score<N>``: SPEECH).
_LONG_EXTRAS = frozenset({"endpos"})
_INT_EXTRA_RE = re.compile(r"results|score[0-9]+")
_RESULT_PREFIX = "200 result="
#: The response codes Asterisk sends (§3); a log may name these, never another line's start.
_KNOWN_CODES = frozenset({"100", "200", "503", "510", "511", "520"})


class AgiProtocolError(Exception):
    """Asterisk said something that is not a valid AGI response (the message never quotes it)."""


def describe_line(line: str) -> str:
    """What a line from the peer was, for an error, a log or a record: its kind and its length in
    bytes, never its content (a malformed answer can carry a phone number).

    >>> describe_line("200 result=1 (+49891234567")
    'a 200 line of 26 bytes'
    >>> describe_line("+49891234567")
    'a line without a response code, of 12 bytes'
    """
    size = len(line.encode("utf-8", "surrogatepass"))
    code, sep = line[:3], line[3:4]
    if not line:
        return "an empty line"
    if code in _KNOWN_CODES and sep in ("", " ", "-"):
        return f"a {code} line of {size} bytes"
    if code.isascii() and code.isdigit() and sep in ("", " ", "-"):
        return f"a line with an unknown response code, of {size} bytes"
    return f"a line without a response code, of {size} bytes"


def is_int(text: str) -> bool:
    """`text` is what res_agi.c's ``%d`` can print (its ``%u`` and ``%c`` results are small)."""
    return _INT_RE.fullmatch(text) is not None and INT_MIN <= int(text) <= INT_MAX


def is_long(text: str) -> bool:
    """`text` is what ``%ld`` can print on a 64-bit Linux."""
    return _LONG_RE.fullmatch(text) is not None and LONG_MIN <= int(text) <= LONG_MAX


class CommandEncodingError(ValueError):
    """A command argument cannot be sent on the AGI wire (it holds LF or NUL)."""


def quote(value: str | int) -> str:
    """Quote one argument so that Asterisk's tokenizer yields exactly `value`.

    >>> quote('say "hi" C:\\\\dir')
    '"say \\\\"hi\\\\" C:\\\\\\\\dir"'
    >>> quote("")
    '""'
    """
    text = str(value)
    if "\n" in text or "\x00" in text:
        raise CommandEncodingError("AGI arguments cannot contain a line feed or NUL byte")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandEncodingError("AGI arguments must be valid UTF-8 text") from None
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: Commands whose lines are cached: their arguments are prompts, digits, offsets and timeouts,
#: the same few hundred lines over and over, and never personal data (variable values can be).
_CACHED_COMMANDS = frozenset({"STREAM", "WAIT", "ANSWER", "CHANNEL"})


def format_command(*words: str, args: tuple[str | int, ...] = ()) -> bytes:
    """One command line: the command words verbatim, every argument quoted, LF-terminated."""
    if words and words[0] in _CACHED_COMMANDS:
        return _cached_command(words, tuple(args))
    return _encode_command(words, args)


def _encode_command(words: tuple[str, ...], args: tuple[str | int, ...]) -> bytes:
    prefix = _command_prefix(words)
    if not args:
        return prefix + b"\n"
    return prefix + b" " + " ".join([quote(a) for a in args]).encode("utf-8") + b"\n"


_cached_command = functools.lru_cache(maxsize=2048)(_encode_command)


@functools.lru_cache(maxsize=256)
def _command_prefix(words: tuple[str, ...]) -> bytes:
    for w in words:
        if not w or any(c in w for c in ' \t"\\\n\r\x00'):
            raise CommandEncodingError(f"invalid AGI command word {w!r}")
    return " ".join(words).encode("ascii")


class Response(Record):
    """A parsed final response.

    `code` is 200/510/511/520/503; `result` the text after ``result=`` (may be empty or ``-1``);
    `data` the parenthesised part or None; `extra` the ``key=value`` pairs after it (e.g. endpos);
    `lines` every raw line of the response (for a 520 block, the whole block).
    """

    code: int
    result: str | None
    data: str | None
    extra: Mapping[str, str]
    lines: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def dead(self) -> bool:
        """511: the command is not permitted because the channel has hung up."""
        return self.code == 511

    def result_int(self) -> int:
        """The result as an integer; an empty result (GET DATA) or any other text is an error."""
        if self.result is None or not is_int(self.result):
            raise AgiProtocolError(f"no integer result in {describe_line(self.lines[0])}")
        return int(self.result)

    @property
    def endpos(self) -> int | None:
        """The ``endpos=`` sample offset, if the response has one (checked when parsed)."""
        v = self.extra.get("endpos")
        return int(v) if v is not None and is_long(v) else None


_NO_EXTRA: Mapping[str, str] = MappingProxyType({})


def parse_200(line: str, digits: bool = False) -> Response:
    """Parse a ``200 ...`` line (§3); `digits`: it answers GET DATA (a ``%s`` of keys)."""
    if not line.startswith(_RESULT_PREFIX):
        raise AgiProtocolError(f"no result= in {describe_line(line)}")
    result, _, rest = line[len(_RESULT_PREFIX) :].partition(" ")
    if digits:
        if _DIGITS_RE.fullmatch(result) is None:
            raise AgiProtocolError(
                f"malformed result (expected GET DATA's keys) in {describe_line(line)}"
            )
    elif not is_int(result):
        raise AgiProtocolError(f"malformed result (expected a C int) in {describe_line(line)}")
    data: str | None = None
    tail = rest
    if rest.startswith("("):
        close = rest.rfind(")")
        if close < 0:
            raise AgiProtocolError(f"unbalanced data in {describe_line(line)}")
        data = rest[1:close]
        tail = rest[close + 1 :]
    pairs = _KV_RE.findall(tail)
    for key, value in pairs:
        if key in _LONG_EXTRAS:
            ok = is_long(value)
        elif _INT_EXTRA_RE.fullmatch(key):
            ok, key = is_int(value), key.rstrip("0123456789")
        else:
            continue
        if not ok:
            raise AgiProtocolError(f"malformed {key}= in {describe_line(line)}")
    extra = MappingProxyType(dict(pairs)) if pairs else _NO_EXTRA
    return Response(200, result, data, extra, (line,))


#: `parse_200` for lines without a data part (``result=0 endpos=57176``): the same few lines come
#: back all the time, and a `Response` is immutable (`extra` is a read-only mapping). Lines with
#: data (GET VARIABLE values) are never kept.
_parse_200_cached = functools.lru_cache(maxsize=2048)(parse_200)


class ResponseReader:
    """Feed response lines one at a time; `feed` returns a `Response` once one is complete.

    A bare ``HANGUP`` line sets `hangup_seen` and is otherwise skipped. Lines may be given with or
    without their trailing LF; a CR is *not* removed (Asterisk never sends one). Set `digits`
    while a GET DATA waits for its answer (its result is a string of keys, not an int).
    """

    def __init__(self) -> None:
        self.hangup_seen = False
        self.digits = False
        self._usage: list[str] | None = None

    @property
    def in_usage_block(self) -> bool:
        return self._usage is not None

    def expect(self, words: tuple[str, ...] | list[str]) -> None:
        """Say which command was just sent: GET DATA's result is a string of keys, not an int."""
        self.digits = len(words) > 1 and words[0].upper() == "GET" and words[1].upper() == "DATA"

    def feed(self, raw: str) -> Response | None:
        line = raw[:-1] if raw.endswith("\n") else raw
        if line.startswith("200 ") and self._usage is None:  # the usual case, first
            return self._parse_200(line)
        if self._usage is not None:
            self._usage.append(line)
            if line.startswith("520 "):
                lines = tuple(self._usage)
                self._usage = None
                return Response(520, None, None, _NO_EXTRA, lines)
            return None
        if line == HANGUP_LINE:
            self.hangup_seen = True
            return None
        if line.startswith("520-"):
            self._usage = [line]
            return None
        code_text = line[:3]
        if code_text not in _KNOWN_CODES or (len(line) > 3 and line[3] != " "):
            raise AgiProtocolError(f"not an AGI response: {describe_line(line)}")
        if code_text == "100":
            return None
        if code_text == "200":
            return self._parse_200(line)
        return Response(int(code_text), None, None, _NO_EXTRA, (line,))

    def _parse_200(self, line: str) -> Response:
        return parse_200(line, self.digits) if "(" in line else _parse_200_cached(line, self.digits)


class AgiEnvironment:
    """The environment block Asterisk sends first (§1.3); values are kept byte for byte."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = {} if values is None else values

    def __repr__(self) -> str:
        return f"AgiEnvironment({len(self.values)} values)"

    def feed(self, raw: str) -> bool:
        """Feed one line; returns True when the block's terminating empty line was seen."""
        line = raw[:-1] if raw.endswith("\n") else raw
        if line == "":
            return True
        key, sep, value = line.partition(": ")
        if not sep:
            key, _, value = line.partition(":")
        self.values[key] = value
        return False

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def args(self) -> list[str]:
        """agi_arg_1..N in order."""
        out: list[str] = []
        n = 1
        while f"agi_arg_{n}" in self.values:
            out.append(self.values[f"agi_arg_{n}"])
            n += 1
        return out
