"""Split one AGI command line into words exactly as Asterisk's ``parse_args`` does.

This is a byte-for-byte port of ``parse_args`` in res/res_agi.c (AGI-PROTOCOL.md §2.2):

* space and TAB separate words unless quoted or escaped; runs of blanks count as one separator;
* ``"`` toggles quoting and is removed; a ``"`` that follows a blank starts a new word, so ``""``
  gives an empty word; a ``"`` inside a word only toggles quoting (``ab"c d"e`` -> ``abc de``);
* ``\\`` escapes the next byte (inside or outside quotes) and is dropped: ``\\n`` is ``n``;
* an unclosed quote runs to the end of the line;
* at most 127 words: bytes that would start a 128th word are dropped;
* the C string ends at the first NUL byte.

The caller removes the single trailing ``\\n`` before calling :func:`parse_args`; a ``\\r`` is an
ordinary byte and stays part of its word (``NOOP\\r`` is not ``NOOP``).
"""

from __future__ import annotations

#: ``MAX_ARGS`` in res_agi.c; one slot is the NULL terminator, so 127 words fit.
MAX_ARGS = 128
MAX_WORDS = MAX_ARGS - 1

_QUOTE = ord('"')
_BACKSLASH = ord("\\")
_BLANKS = frozenset((ord(" "), ord("\t")))


def parse_args(line: bytes) -> list[bytes]:
    """Return the words of ``line`` (without its trailing newline) as Asterisk tokenizes them."""
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    words: list[bytearray] = []
    quoted = False
    escaped = False
    whitespace = True
    for byte in line:
        if byte == _QUOTE and not escaped:
            quoted = not quoted
            # Opening a quote straight after a blank starts a new (possibly empty) word.
            # The C code does not check MAX_ARGS on this path (it would overflow argv);
            # the port drops the word instead, like the other truncation path.
            if quoted and whitespace and len(words) < MAX_WORDS:
                words.append(bytearray())
                whitespace = False
            escaped = False
            continue
        if byte in _BLANKS and not quoted and not escaped:
            whitespace = True
            continue
        if byte == _BACKSLASH and not escaped:
            escaped = True
            continue
        # "normal:" in the C code: a literal byte.
        if whitespace:
            if len(words) >= MAX_WORDS:
                # "Too many arguments, truncating": the byte is dropped, escaped stays as it was.
                continue
            words.append(bytearray())
            whitespace = False
        words[-1].append(byte)
        escaped = False
    return [bytes(word) for word in words]


def quote_arg(value: bytes) -> bytes:
    """Encode ``value`` so that :func:`parse_args` gives it back as one word (§2.2 safe encoding).

    LF and NUL cannot be carried by an AGI line; they raise ``ValueError``.
    """
    if b"\n" in value or b"\0" in value:
        raise ValueError("an AGI argument cannot contain LF or NUL")
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
