"""pyst2's AGI class, mended: `ConsentAGI` keeps pyst2's API and replaces the parts of its wire
handling that AGI-PROTOCOL.md §8 shows to be wrong with calls into our codec:

* ``__init__`` no longer writes the environment to stderr (Asterisk's console) and installs the
  SIGHUP handler only in the main thread (pyst2 raises elsewhere);
* the environment keeps values byte for byte (pyst2 strips them);
* ``_quote`` escapes ``\\`` and ``"`` (pyst2 corrupts them), so pyst2's own ``set_variable`` etc.
  round-trip any value;
* ``get_result`` treats a ``HANGUP`` line as an out-of-band flag, skips ``100 Trying``, reads both
  520 forms, maps ``511`` and EOF to hang-ups, and returns ``result=-1`` as data instead of raising;
* ``test_hangup`` no longer refuses every command after SIGHUP: dead-mode commands (SET VARIABLE,
  VERBOSE, ...) must still run so the evidence and the variables are written after a hang-up;
* an answer must be complete within its command's deadline (`Command.answer_within`): stdin is
  read from its descriptor with ``select`` (not through Python's buffered reader, whose
  ``readline`` would wait for a line feed for ever), so a peer that dribbles or stalls ends the
  call as ``error`` with its record, and finishing up after that takes at most
  `FINISH_GRACE_S`.

It runs before the first prompt of every process-AGI call, so it imports what it needs only
(``TYPE_CHECKING`` for annotations); `tests/test_pyst2_wrapper.py` proves each mend on the wire.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from consent_ivr.transports.pyst2 import (
    AGI,
    AGIHangup,
    AGIInvalidCommand,
    AGISIGPIPEHangup,
    AGIUsageError,
)

from consent_ivr.protocol.codec import (  # isort: skip - after pyst2, which defers its pprint import
    AgiEnvironment,
    AgiProtocolError,
    CommandEncodingError,
    ResponseReader,
    describe_line,
    quote,
)
from consent_ivr.protocol.session import FINISH_GRACE_S, AnswerTimeout, Command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any, BinaryIO

    from consent_ivr.protocol.codec import Response


class AGIDeadChannel(AGIHangup):  # type: ignore[misc]
    """511: the command is not permitted on a dead channel."""


class ConsentAGI(AGI):  # type: ignore[misc]
    """pyst2's AGI class, with its wire handling replaced by the consent-ivr codec."""

    def __init__(
        self,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        *,
        trap_sighup: bool = True,
    ) -> None:
        # AGI.__init__ is deliberately not called: it installs SIGHUP unconditionally and
        # prints the environment (with the caller's number) to stderr.
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.stdout = stdout if stdout is not None else sys.stdout.buffer
        self.stderr = _NullText()
        self._got_sighup = False
        self.reader = ResponseReader()
        self.last_response: Response | None = None
        self.eof = False
        #: stdin's descriptor, read directly so that a read can have a deadline; None for a
        #: stream without one (an in-process test wire), read with its own readline.
        self._fd = _descriptor(self.stdin)
        self._pending = b""  # bytes read past the last complete line
        #: Once an answer was late: when finishing up must end (every later read is cut there).
        self._give_up_at: float | None = None
        if trap_sighup:
            install_sighup_handler(self._handle_sighup)
        self.environment = AgiEnvironment()
        self.env: dict[str, str] = self.environment.values
        #: Called once, right after the first STREAM FILE is written (see `exchange`).
        self.after_first_prompt: Callable[[], None] | None = None
        self._get_agi_env()

    # ------------------------------------------------------------------ pyst2 overrides
    def _handle_sighup(self, signum: int, frame: FrameType | None) -> None:
        self._got_sighup = True

    def _get_agi_env(self) -> None:
        deadline = time.monotonic() + ENV_TIMEOUT_S
        while True:
            try:
                raw = self._readline(deadline)
            except AnswerTimeout:  # Asterisk writes the block at once: nobody is there
                raw = b""
            if not raw.endswith(b"\n"):  # EOF, possibly after a partial line
                self.eof = True
                return
            if self.environment.feed(raw.decode("utf-8", errors="replace")):
                return

    def _readline(self, deadline: float | None) -> bytes:
        """One line with its LF; at EOF what came before it (b"" if nothing). Raises
        `AnswerTimeout` when `deadline` (time.monotonic) passes before the line is complete."""
        fd = self._fd
        if fd is None:
            line: bytes = self.stdin.readline()
            return line
        data = self._pending
        while True:
            end = data.find(b"\n") + 1
            if end:
                self._pending = data[end:]
                return data[:end]
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    self._pending = data  # a late rest still belongs to this line
                    raise AnswerTimeout("no complete line in time")
            chunk = os.read(fd, 65536)
            if not chunk:
                self._pending = b""
                return data
            data += chunk

    def _quote(self, string: Any) -> str:
        return quote(string if isinstance(string, (str, int)) else str(string))

    def test_hangup(self) -> None:
        """Never refuse a command: after a hang-up Asterisk runs dead-mode commands or says 511."""

    def send_command(self, command: str, *args: Any) -> None:
        line = " ".join([command.strip(), *(str(a) for a in args)]).strip()
        if "\n" in line or "\x00" in line:
            raise CommandEncodingError("an AGI command cannot contain a line feed or NUL byte")
        try:
            data = line.encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            raise CommandEncodingError("an AGI command must be valid UTF-8 text") from None
        self.reader.expect(line.split(None, 2))
        self.stdout.write(data)
        self.stdout.flush()

    def read_response(self, deadline: float | None = None) -> Response | None:
        """Read one complete response; None at EOF. With a `deadline` (time.monotonic) it
        raises `AnswerTimeout` if the response is not complete by then."""
        while True:
            raw = self._readline(deadline)
            if not raw.endswith(b"\n"):  # EOF, possibly after a partial line: a hang-up
                self.eof = True
                return None
            resp = self.reader.feed(raw.decode("utf-8", errors="replace"))
            if resp is not None:
                self.last_response = resp
                return resp

    def get_result(self, stdin: Any = None) -> dict[str, tuple[str, str]]:
        """pyst2-compatible result dict, built by the codec; `result=-1` is data, not an error."""
        resp = self.read_response()
        if resp is None:
            raise AGISIGPIPEHangup("Asterisk closed the AGI connection")
        if resp.dead:
            raise AGIDeadChannel(resp.lines[0])
        if resp.code == 510:
            raise AGIInvalidCommand(resp.lines[0])
        if resp.code == 520:  # pyst2's contract: the usage text (the consent call never logs it)
            raise AGIUsageError("\n".join(resp.lines) + "\n")
        if resp.code != 200:
            raise AgiProtocolError(f"unexpected answer: {describe_line(resp.lines[0])}")
        result: dict[str, tuple[str, str]] = {"result": (resp.result or "", resp.data or "")}
        for k, v in resp.extra.items():
            result[k] = (v, "")
        return result

    def execute(self, command: str, *args: Any) -> dict[str, tuple[str, str]]:
        try:
            self.send_command(command, *args)
        except (BrokenPipeError, ConnectionResetError):
            raise AGISIGPIPEHangup("Received SIGPIPE") from None
        return self.get_result()

    # ----------------------------------------------------------------- our primitives
    @property
    def hangup_seen(self) -> bool:
        return self._got_sighup or self.reader.hangup_seen or self.eof

    def exchange(self, command: Command) -> Response | None:
        """Send one command (arguments quoted by the codec) and return its response; None = EOF."""
        try:
            self.send_command(" ".join(command.words), *(self._quote(a) for a in command.args))
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True
            return None
        if self.after_first_prompt is not None and command.words == ("STREAM", "FILE"):
            hook, self.after_first_prompt = self.after_first_prompt, None
            try:  # noqa: SIM105 - contextlib is not imported on this path
                hook()  # runs while Asterisk plays the prompt and we wait for its answer
            except Exception:  # an optimisation must never cost the call (e.g. no threads)
                pass
        return self.answer_to(command)

    def answer_to(self, command: Command) -> Response | None:
        """The response to `command`, just sent; None at EOF. Raises `AnswerTimeout` past the
        command's deadline, and once one answer was late, past the grace for finishing up."""
        deadline = time.monotonic() + command.answer_within
        if self._give_up_at is not None:
            deadline = min(deadline, self._give_up_at)
        try:
            return self.read_response(deadline)
        except AnswerTimeout:
            if self._give_up_at is None:
                self._give_up_at = time.monotonic() + FINISH_GRACE_S
            raise command.late() from None


#: How long Asterisk may take to send the environment block (it writes it at once, at start).
ENV_TIMEOUT_S = 5.0


def _descriptor(stream: Any) -> int | None:
    """The file descriptor under a binary stream, or None (e.g. an in-memory test wire)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return fd if isinstance(fd, int) else None


class _NullText:
    """Where pyst2 methods that we did not override would print: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def install_sighup_handler(handler: Any) -> bool:
    """Trap SIGHUP (Asterisk's hang-up notice) if we can: main thread, platform with SIGHUP."""
    if not hasattr(signal, "SIGHUP"):
        return False
    try:
        signal.signal(signal.SIGHUP, handler)
    except ValueError:  # not the main thread (pyst2 itself would raise here)
        return False
    return True
