"""The AGI words the simulated Asterisk reads and writes, as res_agi.c has them.

The fixed reply lines (510, 511, 520 and FastAGI's ``HANGUP`` notice), the length limit of a
command line, the result codes a command handler returns, the AGISTATUS values, what the core
hands its runner (bytes to write, or a :class:`Control` marker), and how a command's argument
words are read: as text (UTF-8, undecodable bytes kept) or as a number the way C's
``sscanf``/``atoi`` read it.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

#: The read buffer of ``run_agi`` (AGI_BUF_LEN); fgets returns at most 8191 bytes per line.
AGI_LINE_MAX = 8191

RESULT_SUCCESS = 0
RESULT_SHOWUSAGE = 1
RESULT_FAILURE = 2

DEAD_511 = b"511 Command Not Permitted on a dead channel or intercept routine\n"
UNKNOWN_510 = b"510 Invalid or unknown command\n"
USAGE_NOT_AVAILABLE = b"520 Invalid command syntax.  Proper usage not available.\n"
HANGUP_LINE = b"HANGUP\n"

AgiStatus = Literal["SUCCESS", "FAILURE", "HANGUP"]


class Control(enum.Enum):
    """Non-byte outputs of the core."""

    #: Process AGI: send SIGHUP to the script now (after writing the bytes before it).
    SIGHUP = "SIGHUP"
    #: Asterisk ends the session (AGIEXITONHANGUP or a ``failure`` line): close pipes/socket.
    CLOSE = "CLOSE"


Output = bytes | Control


def dec(data: bytes) -> str:
    """An argument word as text (undecodable bytes kept as surrogates)."""
    return data.decode("utf-8", "surrogateescape")


def enc(text: str) -> bytes:
    """Text back to the bytes it came from (see :func:`dec`)."""
    return text.encode("utf-8", "surrogateescape")


_SCAN_INT = re.compile(rb"^[ \t\n\v\f\r]*([+-]?\d+)")
_SCAN_FLOAT = re.compile(rb"^[ \t\n\v\f\r]*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def scan_int(word: bytes) -> int | None:
    """``sscanf(word, "%d")``: leading blanks, sign, digits; trailing junk ignored; else None."""
    match = _SCAN_INT.match(word)
    return int(match.group(1)) if match else None


def atoi(word: bytes) -> int:
    """C ``atoi``: like :func:`scan_int` but 0 when nothing parses."""
    value = scan_int(word)
    return 0 if value is None else value


def scan_float(word: bytes) -> float | None:
    """``sscanf(word, "%lf")`` for plain decimal numbers."""
    match = _SCAN_FLOAT.match(word)
    return float(match.group(1)) if match else None
