"""Process AGI: `main` runs one call per process — the consent flow an AGI() argument names, or
one of the routes (the gate, the tracking step) — on `ConsentAGI` (pyst2, mended:
`consent_agi.py`), and fails closed when anything before the engine goes wrong.
"""

from __future__ import annotations

import os
import sys

from consent_ivr.transports.consent_agi import ConsentAGI  # first: pyst2 defers pprint

from consent_ivr.protocol.codec import AgiProtocolError, CommandEncodingError  # isort: skip
from consent_ivr import envfile
from consent_ivr.engine import NoEarlierDecision, recall_wait_ms
from consent_ivr.evidence.pseudonym import ConfigError, PseudonymKey
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.logs import configure as configure_logging
from consent_ivr.logs import console, get_logger
from consent_ivr.paths import store_location
from consent_ivr.protocol.session import (
    INHERIT_PREFIX,
    Command,
    error_variables,
)
from consent_ivr.transports.flowcache import load_flow_cached
from consent_ivr.transports.routes import GATE, TRACK
from consent_ivr.transports.runner import choose_language, run_call

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, MutableMapping
    from typing import Any

    from consent_ivr.engine import EarlierDecision
    from consent_ivr.flow.model import Flow
    from consent_ivr.tracking.gate import CheckGate, GateDecision


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


class BackgroundRecall:
    """A returning caller's look-up (R18) in a thread, started once the first prompt plays: the
    imports, the keyring's key files and the store's index probe all overlap the prompt.
    Calling it with the engine's `Recall.wait_ms` returns the answer, waiting at most that long
    (then ``timeout``: the full flow plays)."""

    def __init__(
        self, flow: Flow, caller: str, location: str, environ: Mapping[str, str], log: Any
    ) -> None:
        self.flow, self.caller, self.location = flow, caller, location
        self.environ, self.log = dict(environ), log
        self._found: EarlierDecision | NoEarlierDecision = NoEarlierDecision(why="store_error")
        self._done: Any = None

    def start(self) -> None:
        import threading

        self._done = threading.Event()
        threading.Thread(target=self._work, name="consent-ivr-recall", daemon=True).start()

    def _work(self) -> None:
        from consent_ivr.evidence.pseudonym import Keyring
        from consent_ivr.evidence.returning import look_up, lookup_error
        from consent_ivr.evidence.store import open_store

        opened: list[Any] = []

        def get_store() -> Any:
            opened.append(open_store(self.location, any_thread=True))
            return opened[-1]

        try:
            keyring = Keyring.from_environment(self.environ)
            self._found = look_up(get_store, keyring, self.caller, self.flow, self.log)
        except Exception as exc:  # the keyring's files: the full flow, logged
            self.log.error("returning.lookup_failed", error=lookup_error(exc))
        finally:
            import contextlib

            for store in opened:  # closing a read connection cannot change the answer
                with contextlib.suppress(Exception):
                    store.close()
            self._done.set()

    def __call__(self, wait_ms: int) -> EarlierDecision | NoEarlierDecision:
        if self._done is None:  # the first prompt was never sent
            return NoEarlierDecision(why="not_looked_up")
        wait_ms = recall_wait_ms(self.environ, wait_ms)  # no import here: the thread may hold
        # the import lock of a module this would need, and the bound must hold regardless
        if not self._done.wait(wait_ms / 1000):
            self.log.error("returning.lookup_timeout", wait_ms=wait_ms)
            return NoEarlierDecision(why="timeout")
        return self._found


def prefetch_evidence_modules(region: str | None = None, postgresql: bool = False) -> None:
    """Import what writing the evidence needs (~25 ms, and ~30 ms for phonenumbers with the
    `region`'s rules, which hash the caller's number; with a PostgreSQL store also psycopg,
    ~160 ms) in a thread while the caller listens to the first prompt, so the pause after the
    key is the decision and its synced write, not imports. A failure here changes nothing: the
    write imports (and reports) for itself."""
    import threading

    def work() -> None:
        try:
            import consent_ivr.evidence.record
            import consent_ivr.evidence.store  # noqa: F401

            if postgresql:
                import psycopg  # noqa: F401

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


def first_prompt_sent(region: str | None = None, location: str = "") -> None:
    """The consent call's first prompt is playing: collector on, evidence imports under way."""
    collect_again()
    prefetch_evidence_modules(region, postgresql=location.startswith(("postgresql:", "postgres:")))


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


def run_process_agi(argv: list[str], environ: MutableMapping[str, str]) -> int:
    """One call: AGI(consent-ivr.agi,<flow id or path>[,<language>]). Returns the exit status.

    The settings file $CONSENT_IVR_ENV_FILE names (`envfile`) is read into `environ` first; one
    that exists and cannot be read ends the call as error (a route: the gate stays closed, no
    tracking)."""
    settings_error, warnings = envfile.apply(environ)
    _configure_logging(environ)
    for warning in warnings:
        console(f"consent-ivr: {warning}")
    agi = ConsentAGI()
    if agi.eof and not agi.env:
        console("consent-ivr: no AGI environment on stdin (run me from Asterisk)")
        return 1
    env = dict(agi.env)
    route = ROUTE_HANDLERS.get(argv[1].strip()) if len(argv) > 1 else None
    if route is not None:  # a route (transports.routes), not a flow
        if settings_error:
            console(f"consent-ivr: {settings_error}")
            return 1
        collect_again()  # no prompt to wait for: these steps may run for a while (network)
        return route(agi, env, argv[2:], environ)
    log = get_logger(call=env.get("agi_uniqueid", ""), transport="agi")
    flow: Flow | None = None
    try:
        if settings_error:
            raise ConfigError(settings_error)
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
    recall = None
    if flow.returning is not None:
        recall = BackgroundRecall(
            flow, env.get("agi_callerid", ""), store_location(environ), environ, log
        )

    def prompt_sent(recall: BackgroundRecall | None = recall) -> None:
        first_prompt_sent(key.region, store_location(environ))
        if recall is not None:
            recall.start()

    agi.after_first_prompt = prompt_sent
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
            recall=recall,
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
