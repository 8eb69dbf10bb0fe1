"""Process AGI on pyst2: `ConsentAGI` mends pyst2's defects, `main` runs one call per process.

pyst2's `asterisk.agi.AGI` is the user's chosen AGI library. `ConsentAGI` is that class with the
parts that AGI-PROTOCOL.md §8 shows to be wrong replaced by calls into our codec:

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
from consent_ivr.evidence.pseudonym import ConfigError, PseudonymKey
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.logs import configure as configure_logging
from consent_ivr.logs import console, get_logger
from consent_ivr.paths import store_location
from consent_ivr.protocol.session import (
    FINISH_GRACE_S,
    INHERIT_PREFIX,
    AnswerTimeout,
    Command,
    error_variables,
)
from consent_ivr.transports.flowcache import load_flow_cached
from consent_ivr.transports.routes import GATE, TRACK
from consent_ivr.transports.runner import choose_language, run_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import FrameType
    from typing import Any, BinaryIO

    from consent_ivr.flow.model import Flow
    from consent_ivr.protocol.codec import Response
    from consent_ivr.tracking.gate import CheckGate, GateDecision


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


#: The characters of a flow id in AGI(consent-ivr.agi,<flow id>).
_FLOW_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class FlowArgumentError(ConfigError):
    """The AGI() flow argument names no flow file inside the flows folder."""


def _flow_path(arg: str) -> str:
    """The real path of the flow file an AGI() argument names, inside the flows folder.

    The argument is a flow id (``[a-z0-9-]+``: ``<flows>/<id>.yaml``) or a path ending in
    ``.yaml`` (absolute, or relative to the flows folder); either must resolve (symlinks
    followed) to a file inside the flows folder. Anything else raises `FlowArgumentError`
    without opening the file, so a dialplan typo or an injected ``../../etc/passwd`` never
    makes a file outside the flows folder be read as a flow and quoted on the console."""
    from consent_ivr.paths import flows_path, is_flow_file

    folder = os.path.realpath(flows_path())
    shown = repr(arg[:80]) + ("..." if len(arg) > 80 else "")
    if arg and set(arg) <= _FLOW_ID_CHARS:
        candidate = os.path.join(folder, f"{arg}.yaml")
        if not os.path.lexists(candidate):
            from consent_ivr.flow.loader import resolve_flow_path

            try:
                resolve_flow_path(arg)  # no such flow: its message names the known ids
            except FlowError as exc:
                first = exc.diagnostics[0]
                raise FlowArgumentError(f"{first.message}; {first.expected}") from None
    elif (
        arg.endswith(".yaml")
        and is_flow_file(arg)
        and "\0" not in arg
        and ".." not in arg.split(os.sep)
    ):
        candidate = os.path.join(folder, arg)  # an absolute arg stays as it is
    else:
        raise FlowArgumentError(
            f"flow argument {shown} refused: expected a flow id (lowercase letters, digits, '-')"
            f" or a .yaml file inside the flows folder {folder} (not a flow test file)"
        )
    real = os.path.realpath(candidate)
    if not real.startswith(folder + os.sep):
        raise FlowArgumentError(
            f"flow argument {shown} refused: it leads outside the flows folder {folder}"
        )
    return real


def _flow_error_summary(exc: FlowError) -> str:
    """One line for the console and the log: where the first problem is, never its text (a
    diagnostic may quote the file, e.g. its unknown keys)."""
    errors = exc.errors or exc.diagnostics
    if not errors:
        return "the flow could not be loaded"
    first = errors[0]
    return (
        f"flow file {first.path} is not a valid flow: {len(errors)} error(s), the first at line"
        f" {first.line}, column {first.col}; run `consent-ivr validate {first.path}` for details"
    )


class _LazyStore:
    """The evidence store (path or URL), opened (and imported) only when the decision is written."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._store: Any = None

    def _get(self) -> Any:
        if self._store is None:
            from consent_ivr.evidence.store import open_store

            self._store = open_store(self.path)
        return self._store

    def new_record_id(self) -> str:
        return str(self._get().new_record_id())

    def write(self, record: dict[str, Any]) -> str:
        return str(self._get().write(record))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def prefetch_evidence_modules(region: str | None = None) -> None:
    """Import what writing the evidence needs (~25 ms, and ~30 ms for phonenumbers with the
    `region`'s rules, which hash the caller's number) in a thread while the caller listens to
    the first prompt, so the pause after the key is the decision and its synced write, not
    imports. A failure here changes nothing: the write imports (and reports) for itself."""
    import threading

    def work() -> None:
        try:
            import consent_ivr.evidence.record
            import consent_ivr.evidence.store  # noqa: F401

            if region is not None:
                from consent_ivr.evidence.pseudonym import warm_up

                warm_up(region)
        except Exception:  # the write path imports again and reports any error
            pass

    threading.Thread(target=work, name="consent-ivr-prefetch", daemon=True).start()


def collect_again() -> None:
    """Turn the garbage collector back on: the launcher keeps it off only for the start-up."""
    import gc

    gc.enable()


def first_prompt_sent(region: str | None = None) -> None:
    """The consent call's first prompt is playing: collector on, evidence imports under way."""
    collect_again()
    prefetch_evidence_modules(region)


def fail_closed(agi: ConsentAGI, flow: Flow | None) -> None:
    """Set the error outcome without an engine (start-up failed); errors here are ignored."""
    for name, value in error_variables(flow):
        try:
            if agi.exchange(Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))) is None:
                return
        except (AgiProtocolError, OSError):
            return


def _configure_logging(environ: Mapping[str, str]) -> None:
    """Log to $CONSENT_IVR_LOG (JSON lines); without it only errors reach stderr."""
    path = environ.get("CONSENT_IVR_LOG")
    level = environ.get("CONSENT_IVR_LOG_LEVEL", "info")
    if path:
        try:
            stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        except OSError as exc:
            console(f"consent-ivr: cannot open log file {path}: {exc.strerror}")
        else:
            configure_logging(stream, json=True, level=level)
            return
    configure_logging(sys.stderr, json=True, level="error")


def run_process_agi(argv: list[str], environ: Mapping[str, str]) -> int:
    """One call: AGI(consent-ivr.agi,<flow id or path>[,<language>]). Returns the exit status."""
    _configure_logging(environ)
    agi = ConsentAGI()
    if agi.eof and not agi.env:
        console("consent-ivr: no AGI environment on stdin (run me from Asterisk)")
        return 1
    env = dict(agi.env)
    route = ROUTE_HANDLERS.get(argv[1].strip()) if len(argv) > 1 else None
    if route is not None:  # a route (transports.routes), not a flow
        collect_again()  # no prompt to wait for: these steps may run for a while (network)
        return route(agi, env, argv[2:], environ)
    log = get_logger(call=env.get("agi_uniqueid", ""), transport="agi")
    flow: Flow | None = None
    try:
        if len(argv) < 2 or not argv[1].strip():
            raise ConfigError("no flow given: use AGI(consent-ivr.agi,<flow id or path>[,<lang>])")
        flow = load_flow_cached(_flow_path(argv[1].strip()))
        key = PseudonymKey.from_environment(dict(environ))
    except (ConfigError, FlowError) as exc:
        message = _flow_error_summary(exc) if isinstance(exc, FlowError) else str(exc)
        console(f"consent-ivr: {message}")
        log.error("call.config_error", error=message)
        fail_closed(agi, flow)
        return 1
    store = _LazyStore(store_location(environ))
    agi.after_first_prompt = lambda: first_prompt_sent(key.region)
    override = argv[2].strip() if len(argv) > 2 else None
    try:
        run_call(
            flow=flow,
            language=choose_language(flow, env, override),
            env=env,
            key=key,
            store=store,
            exchange=agi.exchange,
            hangup_seen=lambda: agi.hangup_seen,
            transport="agi",
        )
    except Exception as exc:  # the dialplan must continue, and never with consent
        console(f"consent-ivr: internal error: {type(exc).__name__}: {exc}")
        log.error("call.internal_error", error=f"{type(exc).__name__}: {exc}")
        fail_closed(agi, flow)
        return 1
    finally:
        store.close()
    return 0


def run_gate_agi(
    agi: ConsentAGI, env: dict[str, str], args: list[str], environ: Mapping[str, str]
) -> int:
    """AGI(consent-ivr.agi,gate,<purpose>): check channel and store, set CONSENT_GATE_<P>."""
    try:
        return _run_gate(agi, env, args, environ)
    except Exception as exc:  # the gate stays closed (unset); the dialplan continues
        console(f"consent-ivr: gate: {type(exc).__name__}: {exc}")
        return 1


def _run_gate(
    agi: ConsentAGI, env: dict[str, str], args: list[str], environ: Mapping[str, str]
) -> int:
    """Drive the gate step (`tracking.gate.GateStep`) over this process's channel."""
    from consent_ivr.tracking.gate import CheckGate, GateChecked, GateStep, valid_purpose

    log = get_logger(call=env.get("agi_uniqueid", ""), transport="agi")
    purpose = args[0].strip() if args else ""
    if not valid_purpose(purpose):
        console("consent-ivr: use AGI(consent-ivr.agi,gate,<purpose>)")
        return 1
    step = GateStep(purpose)
    op = step.start()
    while not isinstance(op, GateChecked):
        if isinstance(op, CheckGate):
            op = step.on_decision(_gate_decision(op, environ))
        else:
            op = step.on_response(agi.exchange(op))
    decision = op.decision
    log.info("gate.checked", purpose=purpose, gate=decision.value, reason=decision.reason)
    return 0


def _gate_decision(check: CheckGate, environ: Mapping[str, str]) -> GateDecision:
    """The gate step's check, here: the notices of the flow file the channel names (none if it
    cannot be loaded), and the store opened for this one check."""
    import contextlib

    from consent_ivr.evidence.store import open_store

    current: set[str] = set()
    if check.flow_id:
        with contextlib.suppress(FlowError, ConfigError):
            current = set(load_flow_cached(_flow_path(check.flow_id)).notice_sha256.values())
    store = open_store(store_location(environ))
    try:
        return check.decide(store, current)
    finally:
        with contextlib.suppress(Exception):
            store.close()


def run_track_agi(
    agi: ConsentAGI, env: dict[str, str], args: list[str], environ: Mapping[str, str]
) -> int:
    """AGI(consent-ivr.agi,track[,name=value...]) from a hangup handler (dead mode)."""
    import contextlib

    from consent_ivr.tracking.step import TrackingConfig, track_sync

    log = get_logger(call=env.get("agi_uniqueid", ""), transport="agi", step="track")
    try:
        key = PseudonymKey.from_environment(dict(environ))
        config = TrackingConfig.from_environment(environ)
    except (ConfigError, ValueError) as exc:
        console(f"consent-ivr track: {exc}")
        log.error("tracking.config_error", error=str(exc))
        with contextlib.suppress(AgiProtocolError, OSError):
            agi.exchange(Command(("SET", "VARIABLE"), ("TRACKING_STATUS", "error")))
        return 1
    try:
        track_sync(agi.exchange, env, args, key, config, log)
    except (AgiProtocolError, CommandEncodingError, OSError) as exc:
        log.error("tracking.agi_error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


#: Process AGI's handler of each route (`transports.routes.ROUTES`): (agi, env, the arguments
#: after the route, os.environ) -> exit status.
ROUTE_HANDLERS: dict[
    str, Callable[[ConsentAGI, dict[str, str], list[str], Mapping[str, str]], int]
] = {GATE: run_gate_agi, TRACK: run_track_agi}


def main(argv: list[str] | None = None) -> int:
    """Entry point of agi/consent-ivr.agi."""
    return run_process_agi(sys.argv if argv is None else argv, os.environ)
