"""The AGI wire codec, sans I/O: format command lines and parse Asterisk's response lines.

Every rule here comes from AGI-PROTOCOL.md (Asterisk's res_agi.c):

* quoting (§2.2): every argument is wrapped in double quotes with ``\\`` and ``"`` escaped, so any
  value without LF/NUL round-trips through Asterisk's ``parse_args`` exactly; LF and NUL cannot be
  sent and are refused here rather than silently splitting a command;
* responses (§3): ``200 result=<int|digits> [(data)] [key=value ...]``; data runs from the first
  ``(`` to the *last* ``)``; ``200 result=`` (GET DATA, ``#`` first) has an empty result;
* ``HANGUP`` (§4) is an out-of-band line that can precede any response: it sets a flag and the
  parser keeps reading for the real response;
* ``100 result=0 Trying...`` (GOSUB) is interim: keep reading;
* ``520-`` starts a multi-line usage block that ends at the line starting with ``520 ``; the
  single-line ``520 ...Proper usage not available.`` ends at once;
* ``511`` means the channel is dead (a hang-up-class error), ``510`` an unknown command;
* EOF means hang-up.

The `ResponseReader` is fed one line at a time and says when a complete response is there; the
process-AGI driver (pyst2) and the FastAGI driver feed it from their own streams.
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

_RESULT_RE = re.compile(r"^result=(?P<result>-?\d*)(?P<rest>.*)$", re.DOTALL)
_KV_RE = re.compile(r"(\w+)=(\S*)")


class AgiProtocolError(Exception):
    """Asterisk said something that is not a valid AGI response."""


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
        """The result as an integer; an empty result (GET DATA) is an error here."""
        if self.result is None or self.result in ("", "-"):
            raise AgiProtocolError(f"response has no integer result: {self.lines[0]!r}")
        return int(self.result)

    @property
    def endpos(self) -> int | None:
        v = self.extra.get("endpos")
        if not v or not (v.isdigit() or (v[0] == "-" and v[1:].isdigit())) or not v.isascii():
            return None
        return int(v)


_NO_EXTRA: Mapping[str, str] = MappingProxyType({})


def parse_200(line: str) -> Response:
    """Parse a ``200 ...`` line (§3)."""
    body = line[4:] if line.startswith("200 ") else ""
    m = _RESULT_RE.match(body)
    if not m:
        raise AgiProtocolError(f"200 response without result=: {line!r}")
    result = m.group("result")
    rest = m.group("rest")
    data: str | None = None
    tail = rest
    stripped = rest.lstrip(" ")
    if stripped.startswith("("):
        close = stripped.rfind(")")
        if close < 0:
            raise AgiProtocolError(f"unbalanced data in response: {line!r}")
        data = stripped[1:close]
        tail = stripped[close + 1 :]
    pairs = _KV_RE.findall(tail)
    extra = MappingProxyType(dict(pairs)) if pairs else _NO_EXTRA
    return Response(200, result, data, extra, (line,))


#: `parse_200` for lines without a data part (``result=0 endpos=57176``): the same few lines come
#: back all the time, and a `Response` is immutable (`extra` is a read-only mapping). Lines with
#: data (GET VARIABLE values) are never kept.
_parse_200_cached = functools.lru_cache(maxsize=2048)(parse_200)


class ResponseReader:
    """Feed response lines one at a time; `feed` returns a `Response` once one is complete.

    A bare ``HANGUP`` line sets `hangup_seen` and is otherwise skipped. Lines may be given with or
    without their trailing LF; a CR is *not* removed (Asterisk never sends one).
    """

    def __init__(self) -> None:
        self.hangup_seen = False
        self._usage: list[str] | None = None

    @property
    def in_usage_block(self) -> bool:
        return self._usage is not None

    def feed(self, raw: str) -> Response | None:
        line = raw[:-1] if raw.endswith("\n") else raw
        if line.startswith("200 ") and self._usage is None:  # the usual case, first
            return parse_200(line) if "(" in line else _parse_200_cached(line)
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
        if len(line) < 3 or not code_text.isdigit() or (len(line) > 3 and line[3] != " "):
            raise AgiProtocolError(f"not an AGI response line: {line!r}")
        code = int(code_text)
        if code == 100:
            return None
        if code == 200:
            return parse_200(line) if "(" in line else _parse_200_cached(line)
        if code in (510, 511, 520, 503):
            return Response(code, None, None, _NO_EXTRA, (line,))
        raise AgiProtocolError(f"unexpected AGI response code {code}: {line!r}")


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
