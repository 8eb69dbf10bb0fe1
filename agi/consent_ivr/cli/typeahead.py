"""Keys typed before a live call is ready (`simulate --interactive`): neither echoed nor used.

Between the command starting and the live call's screen taking the terminal lie the imports,
the flow's load and check (its proof) and the AGI script's start: a second or two. A key typed
then would be echoed raw by the terminal and, once read, pressed at the call's first moment.
So the terminal's echo (and line editing) goes off as early as the command can say so —
`hold_early`, from the package's ``__init__`` before the command's modules are imported — or at
the latest when the command runs (`held`); the keys wait in the terminal's input queue and
`discard` takes them just before the call starts (the screen says what it dropped). The
terminal's own settings are restored when the command ends (and at exit, whatever happens).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import sys
import termios
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

#: The terminal's settings before they were changed here: (fd, attributes), or None.
_saved: tuple[int, list[Any]] | None = None


def hold_early(argv: Sequence[str]) -> None:
    """Stop echoing at once when the command line asks for a live call on a terminal."""
    if "--interactive" in argv[1:] and "simulate" in argv[1:]:
        _hold(sys.stdin)


def _hold(stream: TextIO) -> bool:
    """Echo and line editing off on `stream`'s terminal; False when it is none or already held."""
    global _saved
    if _saved is not None:
        return False
    try:
        if not stream.isatty():
            return False
        fd = stream.fileno()
        attrs = termios.tcgetattr(fd)
        quiet = list(attrs)
        quiet[3] &= ~(termios.ECHO | termios.ICANON)  # lflag
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except (OSError, ValueError, termios.error):  # no usable terminal: nothing to hold
        return False
    _saved = (fd, attrs)
    atexit.register(_release)
    return True


def _release() -> None:
    global _saved
    if _saved is not None:
        fd, attrs = _saved
        _saved = None
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, attrs)


@contextlib.contextmanager
def held(stream: TextIO | None = None) -> Iterator[None]:
    """Keys typed meanwhile are not echoed; the terminal's settings are restored after."""
    _hold(stream if stream is not None else sys.stdin)
    try:
        yield
    finally:
        _release()


def discard(stream: TextIO) -> str:
    """Take and return what was typed on the terminal and not read yet: keys typed before the
    call runs are not DTMF of it (they would all arrive at once at its first moment)."""
    if not stream.isatty():
        return ""
    fd = stream.fileno()
    taken = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 1024)
        if not chunk:
            break
        taken += chunk
    return taken.decode("utf-8", "replace")
