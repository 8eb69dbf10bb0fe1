"""The FastAGI server: one asyncio connection is one consent call, on the same engine and codec.

``AGI(agi://host:4573/<flow>[?lang=en])`` — the path after the host selects the flow
(``agi_network_script``); ``?lang=`` or the first ``agi_arg_N`` naming a served language overrides
the channel language. Each call runs the `driver.CallRunner` (engine + session) with an asyncio
exchange; the evidence goes through one `GroupCommitWriter` (durable before ``granted``, one
fsync per batch). Around that:

* admission: peers outside ``--allow`` are closed before anything is read; beyond ``max_calls``
  (and while draining) a peer gets ``failure`` (``AGISTATUS=FAILURE``) and is counted;
* start: the evidence writer opens the store before the server listens; a store it cannot
  use is a `StoreError` from `FastAgiServer.start` (``serve`` exits 2 with its one line);
* limits: the environment block must arrive within ``env_timeout``; lines are at most
  ``max_line`` bytes; each answer within its command's deadline (`Command.answer_within`,
  checked every ``ANSWER_WATCH_INTERVAL``) and a call within ``call_timeout`` (else it ends as
  ``error``, with its record);
* an unknown flow sets ``CONSENT_STATUS=error`` and answers ``failure``;
* flows are reloaded on SIGHUP or when a file changes; a flow that fails validation is rejected
  (logged) and its previous version keeps serving; every call keeps the `Flow` object it started
  with, so it finishes on its version;
* SIGTERM drains: stop accepting, let calls finish for ``grace`` seconds, then cancel the rest,
  which still write their evidence (``error`` for undecided purposes) before the writer closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import ipaddress
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from consent_ivr.evidence.errors import EvidenceWriteError, StoreError
from consent_ivr.evidence.groupcommit import GroupCommitWriter
from consent_ivr.evidence.pseudonym import PseudonymKey, warm_up
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.flow.audiofiles import PathStamp, audio_intact, path_stamp
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.model import Flow
from consent_ivr.lint.check import load_checked
from consent_ivr.logs import get_logger, masked
from consent_ivr.protocol.codec import (
    AgiEnvironment,
    AgiProtocolError,
    Response,
    ResponseReader,
    format_command,
)
from consent_ivr.protocol.session import (
    FINISH_GRACE_S,
    INHERIT_PREFIX,
    Command,
    Finished,
    Op,
    WriteEvidence,
    error_variables,
)
from consent_ivr.tracking.gate import check_gate, read_commands, result_variables, valid_purpose
from consent_ivr.tracking.step import (
    TRACK_ROUTE,
    FlushReport,
    Ga4Sender,
    TrackingConfig,
    TrackWorkers,
    track_async,
)
from consent_ivr.transports.metrics import Metrics
from consent_ivr.transports.runner import EXCHANGE_ERRORS, CallRunner, choose_language

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ServerConfig:
    flows_dir: Path
    store_path: str | os.PathLike[str]  # a path or a store URL (see store.open_store)
    host: str = "127.0.0.1"
    port: int = 4573
    max_calls: int = 2000
    allow: tuple[IpNetwork, ...] = ()
    env_timeout: float = 5.0
    call_timeout: float = 900.0
    max_line: int = 8192
    grace: float = 30.0
    reload_interval: float = 2.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    backlog: int = 1024
    #: Retry due GA4 outbox items every this many seconds (None: leave it to
    #: `consent-ivr track --flush --loop`). Leases make several servers on one store safe.
    ga4_flush: float | None = None
    #: Log the evidence chain's head (seq, hash) this often when it moved, and at shutdown: logs
    #: shipped off the host are anchors for `consent-ivr evidence verify --anchor` (0: off).
    head_log_interval: float = 3600.0


#: File descriptors the server needs besides one per call: listening and metrics sockets, the
#: store and its WAL, the writer's, gate's, tracking and flush connections, the log.
FD_RESERVE = 100


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE (often 1024 under systemd) towards the hard limit so that
    `needed` descriptors fit; returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed if soft == resource.RLIM_INFINITY else soft
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: After a stop, how long a call waits for its pending evidence write before giving up on it
#: (reported as an error on the channel, never as written; the record stays queued and the
#: writer commits it before the server exits, so the decision is not lost).
STOP_WRITE_WAIT = 30.0


def parse_allow(text: str) -> tuple[IpNetwork, ...]:
    """`10.0.0.5,192.168.1.0/24` -> networks; raises ValueError with the bad entry."""
    nets: list[IpNetwork] = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                nets.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"--allow: {part!r} is not an IP address or CIDR") from None
    return tuple(nets)


def _stat_all(paths: list[Path]) -> Stamp:
    return tuple(s for s in map(path_stamp, paths) if s is not None)  # a file gone: left out


#: What a reload compares: (path, mtime ns, size, inode) of every file the flows depend on.
Stamp = tuple[PathStamp, ...]


@dataclasses.dataclass(frozen=True)
class LoadedFlows:
    """A flow table loaded off the event loop, ready to be swapped in."""

    stamp: Stamp
    by_file: dict[Path, Flow]
    flows: dict[str, Flow]
    errors: list[str]


class FlowRegistry:
    """Every valid flow of a folder by id; reloads swap the whole table at once."""

    def __init__(
        self, flows_dir: Path, log: Any, store_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.flows_dir = flows_dir
        self.log = log
        #: the evidence store the linter asks which versions it already holds (R18)
        self.store_path = store_path
        self._flows: dict[str, Flow] = {}
        self._by_file: dict[Path, Flow] = {}
        self._stamp: Stamp = ()

    def get(self, flow_id: str) -> Flow | None:
        return self._flows.get(flow_id)

    @property
    def flows(self) -> dict[str, Flow]:
        return dict(self._flows)

    def _files(self) -> list[Path]:
        return sorted(self.flows_dir.glob("*.yaml")) + sorted(self.flows_dir.glob("*.yml"))

    def _current_stamp(self) -> Stamp:
        """(path, mtime ns, size, inode) of every flow file, sound manifest, audio folder of a
        flow (`<sounds>/<lang>/<flow id>`, one per manifest) and file in it: a rebuilt prompt,
        or another format of one added next to it, reloads the flows (R13)."""
        from consent_ivr.paths import sounds_dir

        root = sounds_dir()
        manifests = sorted(root.glob("*.manifest.json"))
        paths: list[Path] = [*self._files(), *manifests]
        folders = {
            folder
            for manifest in manifests
            for folder in root.glob(f"*/{manifest.name.removesuffix('.manifest.json')}")
        }
        # and the folders of the flows in use, even if their manifest is gone
        folders.update(
            Path(os.path.dirname(path))
            for flow in self._flows.values()
            for prompt in flow.all_prompts()
            for path in prompt.audio.values()
            if path
        )
        for folder in sorted(folders):
            paths.append(folder)
            with contextlib.suppress(OSError):
                paths += sorted(folder.iterdir())  # a sub-folder's own files: via its mtime
        return _stat_all(paths)

    def changed(self) -> bool:
        return self._current_stamp() != self._stamp

    def load(self) -> LoadedFlows:
        """Load and validate every flow file; a file that fails keeps its previous version.
        Any thread: it only reads the current table, which `apply` replaces on the loop."""
        stamp = self._current_stamp()  # before loading: a change while loading reloads again
        errors: list[str] = []
        by_file: dict[Path, Flow] = {}
        opened: list[Any] = []

        def versions() -> Any:  # opened on first use, in this thread, closed below
            if not opened and self.store_path is not None:
                opened.append(open_store(os.fspath(self.store_path)))
            return opened[0] if opened else None

        try:
            for path in self._files():
                self._load_one(path, by_file, errors, versions)
        finally:
            for store in opened:
                with contextlib.suppress(Exception):
                    store.close()
        flows: dict[str, Flow] = {}
        for path, flow in by_file.items():
            if flow.id in flows:
                errors.append(f"{path}: flow id {flow.id} is defined twice; the first file wins")
                self.log.error("flows.duplicate_id", file=str(path), flow=flow.id)
                continue
            flows[flow.id] = flow
        return LoadedFlows(stamp, by_file, flows, errors)

    def _load_one(
        self, path: Path, by_file: dict[Path, Flow], errors: list[str], versions: Any
    ) -> None:
        """Load one file with every lint rule and the proof (`load_checked`); a file that fails
        keeps its previous version while that version's audio is intact."""
        try:
            by_file[path] = load_checked(path, store=versions, run_proof=True)[0]
        except FlowError as exc:
            errors.append(str(exc))
            old = self._by_file.get(path)
            # the old version keeps serving only while its audio is still what it hashed:
            # otherwise its calls would play other audio than their evidence names
            broken = audio_intact(old) if old is not None else None
            self.log.error(
                "flows.rejected",
                file=str(path),
                error=str(exc),
                keeps=old.label if old and not broken else None,
                dropped=f"{old.label}: {broken}" if old and broken else None,
            )
            if old is not None and not broken:
                by_file[path] = old

    def apply(self, loaded: LoadedFlows) -> list[str]:
        """Swap in a loaded table (one assignment: a call sees the old table or the new one)."""
        self._stamp = loaded.stamp
        self._by_file = loaded.by_file
        self._flows = loaded.flows
        self.log.info("flows.loaded", flows=sorted(f.label for f in loaded.flows.values()))
        return loaded.errors

    def reload(self) -> list[str]:
        """Load and swap in one step (start-up, before any call). Returns the errors."""
        return self.apply(self.load())


class AgiStream:
    """One FastAGI connection: send a command, read its response through the codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = ResponseReader()
        self.eof = False
        self.last_response = time.perf_counter()

    @property
    def hangup_seen(self) -> bool:
        return self.codec.hangup_seen or self.eof

    async def readline(self) -> bytes:
        """One whole line, or b"" at EOF (a partial line before EOF is EOF too: the peer went
        away mid-write, and half an answer must never be read as one)."""
        try:
            raw = await self.reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            raise AgiProtocolError("line longer than the maximum line length") from None
        return raw if raw.endswith(b"\n") else b""

    async def exchange(self, command: Command) -> Response | None:
        # No drain(): one short line, and lock-step means the next write waits for an answer.
        self.writer.write(format_command(*command.words, args=command.args))
        self.codec.expect(command.words)
        while True:
            raw = await self.readline()
            if not raw:  # EOF: a hang-up
                self.eof = True
                return None
            resp = self.codec.feed(raw.decode("utf-8", errors="replace"))
            if resp is not None:
                self.last_response = time.perf_counter()
                return resp

    async def exchange_within(self, command: Command) -> Response | None:
        """`exchange` with the command's answer deadline (for the steps outside a call's pump:
        gate, tracking, the error variables); raises `AnswerTimeout` (an `AgiProtocolError`)."""
        try:
            async with asyncio.timeout(command.answer_within):
                return await self.exchange(command)
        except TimeoutError:
            raise command.late() from None


async def read_environment(stream: AgiStream) -> dict[str, str] | None:
    """The environment block, or None if the peer closed before its end."""
    env = AgiEnvironment()
    try:  # the whole block at once (it arrives in one segment); line by line if it is huge
        block = await stream.reader.readuntil(b"\n\n")
    except asyncio.IncompleteReadError:  # the peer closed before the block ended
        return None
    except asyncio.LimitOverrunError:
        block = b""
    if block:
        for line in block.decode("utf-8", errors="replace").split("\n")[:-1]:
            if env.feed(line):
                return env.values
    while True:
        raw = await stream.readline()
        if not raw:
            return None
        if env.feed(raw.decode("utf-8", errors="replace")):
            return env.values


@dataclass
class _Progress:
    """The operation a call is performing, for when a deadline or a stop interrupts it."""

    op: Op
    #: The call's deadline (loop time): --call-timeout, or the grace to finish after a stop.
    deadline: float
    #: While an answer is awaited: its deadline (loop time), for the server's answer watch.
    answer_due: float | None = None
    #: Set by the answer watch when it cancels the call for a late answer.
    late: bool = False
    #: Finishing up after an interruption: bounded by `deadline` alone.
    finishing: bool = False


@dataclass
class _Call:
    task: asyncio.Task[None]
    flow: str = ""
    started: float = field(default_factory=time.monotonic)
    progress: _Progress | None = None


#: How often the server looks for answers past their deadline (a late answer is noticed within
#: this much; one pass over the calls in flight costs microseconds, a timer per command more).
ANSWER_WATCH_INTERVAL = 0.25


class FastAgiServer:
    def __init__(self, config: ServerConfig, key: PseudonymKey) -> None:
        self.config = config
        self.key = key
        self.log = get_logger(component="fastagi")
        self.flows = FlowRegistry(config.flows_dir, self.log, config.store_path)
        self.metrics = Metrics()
        self.evidence: GroupCommitWriter | None = None
        self._server: asyncio.Server | None = None
        self._calls: dict[asyncio.Task[None], _Call] = {}
        self._stopping = asyncio.Event()
        self._draining = False
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self._gate_executor = concurrent.futures.ThreadPoolExecutor(1, "gate")
        self.track_workers = TrackWorkers()
        self._gate_reader: ChainStore | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._head_logger: asyncio.Task[None] | None = None
        self._answer_watch: asyncio.Task[None] | None = None
        self._logged_head: tuple[int, str] | None = None
        self._flush_executor = concurrent.futures.ThreadPoolExecutor(1, "ga4-flush")
        self._flush_store: ChainStore | None = None  # used and closed only in the flush thread
        self._flush_stop = threading.Event()
        self.address: tuple[str, int] | None = None
        #: The tracking step's settings (None: from the environment, store = this server's).
        self.tracking: TrackingConfig | None = None

    # ----------------------------------------------------------------------- lifecycle
    async def start(self) -> tuple[str, int]:
        needed = self.config.max_calls + FD_RESERVE
        limit = raise_fd_limit(needed)
        if limit < needed:  # beyond it, accept() fails and Asterisk sees AGISTATUS=FAILURE
            self.log.warning(
                "server.fd_limit",
                max_calls=self.config.max_calls,
                needed=needed,
                limit=limit,
                hint="raise LimitNOFILE (systemd) or ulimit -n, or lower --max-calls",
            )
        store = open_store(os.fspath(self.config.store_path), background_checkpoints=True)
        self.evidence = GroupCommitWriter(store)
        try:  # before any call: a store that cannot be opened stops the start (StoreError)
            await asyncio.wrap_future(self.evidence.open())
        except BaseException:
            writer, self.evidence = self.evidence, None
            await asyncio.to_thread(writer.close)
            raise
        self.flows.reload()
        warm_up(self.key.region)  # phonenumbers' import (~30 ms) now, not in the first call
        self._server = await asyncio.start_server(
            self._accept,
            self.config.host,
            self.config.port,
            limit=self.config.max_line,
            backlog=self.config.backlog,
        )
        sock = self._server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        if self.config.metrics_port is not None:
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
        self._answer_watch = asyncio.create_task(self._watch_answers())
        if self.config.reload_interval > 0:
            self._watcher = asyncio.create_task(self._watch_flows())
        if self.config.ga4_flush:
            self._flusher = asyncio.create_task(self._ga4_flush_loop(self.config.ga4_flush))
        if self.config.head_log_interval > 0:
            self._head_logger = asyncio.create_task(
                self._head_log_loop(self.config.head_log_interval)
            )
        self.log.info("server.listening", host=self.address[0], port=self.address[1])
        return self.address

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_flows)

    def request_stop(self) -> None:
        self._stopping.set()

    async def reload(self) -> list[str]:
        """Reload the flows: validation and audio checks (about 5 ms a flow) run in a worker
        thread and only the swap runs on the loop, so calls in flight never wait for a reload.
        Reloads run one at a time. Returns the errors of rejected files."""
        async with self._reload_lock:
            loaded = await asyncio.to_thread(self.flows.load)
            return self.flows.apply(loaded)

    def reload_flows(self) -> None:
        """SIGHUP: start a reload; an unexpected failure is logged, the old flows keep serving."""
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._reloads.add(task)  # a reference, so the task is not collected mid-reload
        task.add_done_callback(self._reloads.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # never let a reload kill the watcher or go unnoticed
            self.log.error("flows.reload_failed", error=f"{type(exc).__name__}: {exc}")

    async def wait_stopped(self) -> None:
        await self._stopping.wait()
        await self.drain()

    async def drain(self) -> None:
        """Stop accepting; let calls finish for `grace` s; cancel the rest (they still record)."""
        self._draining = True
        self.log.info("server.draining", calls=len(self._calls), grace=self.config.grace)
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._reloads):
            task.cancel()
        self._flush_stop.set()  # a running flush stops after its current item
        if self._flusher is not None:
            self._flusher.cancel()
        if self._head_logger is not None:
            self._head_logger.cancel()
        tasks = list(self._calls)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=self.config.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10.0)
        if self._answer_watch is not None:
            self._answer_watch.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        if self.evidence is not None:
            await asyncio.to_thread(self.evidence.close)  # waits for its queue to empty
        if self.config.head_log_interval > 0:
            await self._log_head()  # every record is in: the head this run leaves behind
        reader = self._gate_reader
        if reader is not None:
            await asyncio.get_running_loop().run_in_executor(self._gate_executor, reader.close)
        self._gate_executor.shutdown(wait=True)
        await asyncio.to_thread(self.track_workers.close)
        await asyncio.get_running_loop().run_in_executor(
            self._flush_executor, self._close_flush_store
        )
        self._flush_executor.shutdown(wait=True)
        self.metrics.stop()
        self.log.info("server.stopped")

    @property
    def calls_in_flight(self) -> int:
        return len(self._calls)

    def _tracking_config(self) -> TrackingConfig:
        """The tracking step's settings: from the environment, with this server's store."""
        if self.tracking is None:
            self.tracking = dataclasses.replace(
                TrackingConfig.from_environment(), store=os.fspath(self.config.store_path)
            )
        return self.tracking

    async def _head_log_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._log_head()

    async def _log_head(self) -> None:
        """Log `evidence.head` if the chain moved since the last one; a store error is logged
        and tried again next time (the gate's read connection, in the gate's thread)."""
        loop = asyncio.get_running_loop()
        try:
            head = await loop.run_in_executor(
                self._gate_executor, lambda: self._gate_store().head()
            )
        except StoreError as exc:
            self.log.error("evidence.head_failed", error=str(exc))
            return
        if head != self._logged_head and head[0] > 0:
            self._logged_head = head
            self.log.info("evidence.head", seq=head[0], hash=head[1])

    async def _ga4_flush_loop(self, interval: float) -> None:
        """Retry due GA4 outbox items (gate re-checked per item) until the server stops. Never
        dies: any error is logged (again only when it changes) and the next round tries again."""
        loop = asyncio.get_running_loop()
        last_error = ""
        while not self._flush_stop.is_set():
            await asyncio.sleep(interval)
            error = ""
            try:
                config = self._tracking_config()
                if config.ga4.missing:
                    error = f"ga4.not_configured: set {', '.join(config.ga4.missing)}"
                else:
                    report = await loop.run_in_executor(
                        self._flush_executor, self._flush_once, config
                    )
                    if any(vars(report).values()):
                        self.log.info("ga4.flushed", **vars(report))
            except Exception as exc:  # a bad setting, a store outage: try again next round
                error = f"{type(exc).__name__}: {exc}"
            if error and error != last_error:
                self.log.error("ga4.flush_error", error=error)
            last_error = error

    def _flush_once(self, config: TrackingConfig) -> FlushReport:
        """One flush, in the flush thread, on a connection that thread keeps (dropped on error,
        closed here once the server stops)."""
        try:
            if self._flush_store is None:
                self._flush_store = open_store(config.store, any_thread=True)
            sender = Ga4Sender(self._flush_store, config.ga4)
            return sender.flush(should_stop=self._flush_stop.is_set)
        except Exception:
            self._close_flush_store()
            raise
        finally:
            if self._flush_stop.is_set():
                self._close_flush_store()

    def _close_flush_store(self) -> None:
        """In the flush thread only."""
        store, self._flush_store = self._flush_store, None
        if store is not None:
            store.close()

    async def _watch_flows(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            if await asyncio.to_thread(self.flows.changed):
                await self._reload_logged()

    # ------------------------------------------------------------------------- calls
    def _allowed(self, peer: Any) -> bool:
        if not self.config.allow:
            return True
        try:
            ip = ipaddress.ip_address(peer[0])
        except (TypeError, ValueError, IndexError):
            return False
        return any(ip in net for net in self.config.allow)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not self._allowed(peer):
            self.metrics.refused("not_allowed")
            self.log.warning(
                "peer.refused", reason="not_allowed", peer=str(peer[0]) if peer else ""
            )
            writer.close()
            return
        if self._draining or len(self._calls) >= self.config.max_calls:
            reason = "draining" if self._draining else "capacity"
            self.metrics.refused(reason)
            self.log.warning("peer.refused", reason=reason, calls=len(self._calls))
            with contextlib.suppress(OSError):
                writer.write(b"failure\n")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._calls[task] = _Call(task)
        self.metrics.in_flight.inc()
        try:
            await self._call(AgiStream(reader, writer))
        except Exception as exc:  # one broken call must never take the server down
            self.log.error("call.internal_error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.metrics.in_flight.dec()
            del self._calls[task]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _call(self, stream: AgiStream) -> None:
        try:
            async with asyncio.timeout(self.config.env_timeout):  # no extra task, unlike wait_for
                env = await read_environment(stream)
        except TimeoutError:
            self.metrics.refused("silent")
            self.log.warning("peer.refused", reason="silent")
            return
        except AgiProtocolError:
            self.metrics.refused("line_too_long")
            return
        if env is None:
            self.metrics.refused("closed_early")
            return
        script = env.get("agi_network_script", "")
        path, _, query = script.partition("?")
        if path.strip("/") == "gate":
            await self._gate(stream, env, query)
            return
        if path.strip("/") == TRACK_ROUTE:  # the hangup handler's tracking step, not a flow
            await self._track(stream, env)
            return
        flow = self.flows.get(path.strip("/"))
        if flow is None:
            await self._unknown_flow(stream, env, path)
            return
        langs = parse_qs(query).get("lang", [])
        override = next(
            (a for a in [*langs, *AgiEnvironment(env).args] if flow.match_language(a)), None
        )
        runner = CallRunner(flow, choose_language(flow, env, override), env, self.key, "fastagi")
        self._calls[asyncio.current_task()].flow = flow.label  # type: ignore[index]
        stream.last_response = time.perf_counter()  # turnaround counts from the environment
        try:
            result = await self._pump(runner, stream, runner.start())
        except Exception as exc:  # a bug: the dialplan must continue, and never with consent
            self.log.error("call.internal_error", error=f"{type(exc).__name__}: {exc}")
            self.metrics.decided("error", "error")
            await self._set_error(stream, flow)
            return
        self.metrics.decided(result.status, (result.record or {}).get("reason", "error"))

    async def _track(self, stream: AgiStream, env: dict[str, str]) -> None:
        """AGI(agi://host:4573/track[,name=value...]) from a hangup handler (dead mode)."""
        log = get_logger(call=env.get("agi_uniqueid", ""), transport="fastagi", step="track")
        try:
            config = self._tracking_config()
            async with asyncio.timeout(self.config.call_timeout):
                await track_async(
                    stream.exchange_within,
                    env,
                    AgiEnvironment(env).args,
                    self.key,
                    config,
                    log,
                    workers=self.track_workers,
                )
        except (*EXCHANGE_ERRORS, TimeoutError, ValueError) as exc:
            log.error("tracking.error", error=f"{type(exc).__name__}: {exc}")

    async def _pump(self, runner: CallRunner, stream: AgiStream, op: Op) -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        progress = _Progress(op, loop.time() + self.config.call_timeout)
        entry = self._calls.get(task) if task is not None else None
        if entry is not None:  # the answer watch sees this call's awaited answer
            entry.progress = progress
        while not isinstance(op, Finished):
            try:
                async with asyncio.timeout_at(progress.deadline):  # one scope for many commands
                    op = await self._steps(runner, stream, progress)
            except (TimeoutError, asyncio.CancelledError) as exc:  # before OSError: a subclass
                op = progress.op
                assert isinstance(op, Command)  # evidence writes are shielded and never time out
                late, progress.late, progress.answer_due = progress.late, False, None
                if progress.finishing:  # already finishing up: give up on the channel
                    op = progress.op = runner.failed(op, exc)
                    continue
                progress.finishing = True
                if isinstance(exc, asyncio.CancelledError) and task is not None:
                    task.uncancel()
                if late and isinstance(exc, asyncio.CancelledError):
                    why: Exception = op.late()  # the peer loses the call, not just a command
                elif isinstance(exc, TimeoutError):
                    why = RuntimeError("call deadline exceeded")
                else:
                    why = RuntimeError("server stop")
                # A command may be in flight: Asterisk answers the next command (not this one)
                # when interrupted, so finishing up is best effort on the channel — the evidence
                # is written either way.
                op = runner.failed(op, why)
                progress.op = op
                progress.deadline = loop.time() + FINISH_GRACE_S
        return runner.finish(op)

    async def _steps(self, runner: CallRunner, stream: AgiStream, progress: _Progress) -> Finished:
        """Run operations until the call is finished; `progress.op` is the one in progress,
        `progress.answer_due` the deadline of the answer awaited (`Command.answer_within`)."""
        observe = self.metrics.turnaround.observe
        time_now = asyncio.get_running_loop().time
        op = progress.op
        while not isinstance(op, Finished):
            progress.op = op
            if isinstance(op, WriteEvidence):
                op = await self._write(runner, op)
                continue
            observe(time.perf_counter() - stream.last_response)
            if not progress.finishing:
                progress.answer_due = time_now() + op.answer_within
            try:
                resp = await stream.exchange(op)
            except EXCHANGE_ERRORS as exc:
                progress.answer_due = None
                if isinstance(exc, TimeoutError):
                    raise
                op = runner.failed(op, exc)
                continue
            progress.answer_due = None
            op = runner.answered(op, resp, stream.hangup_seen)
        return op

    async def _watch_answers(self) -> None:
        """Cancel each call whose awaited answer is past its deadline: it ends as ``error``
        with its record (`_pump`), and its slot is free long before --call-timeout."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ANSWER_WATCH_INTERVAL)
            now = loop.time()
            for call in list(self._calls.values()):
                progress = call.progress
                if progress is None or progress.late or progress.answer_due is None:
                    continue
                if progress.answer_due <= now:
                    progress.late = True
                    call.task.cancel()

    async def _write(self, runner: CallRunner, op: WriteEvidence) -> Op:
        assert self.evidence is not None
        record_id = self.evidence.new_record_id()
        record = runner.record(op, record_id)
        return runner.written(*await self._committed(self.evidence.submit(record), record_id))

    async def _committed(
        self, write: asyncio.Future[None], record_id: str
    ) -> tuple[str | None, str | None]:
        """Wait for the write's outcome: (record_id, None) once committed, else (None, error).

        The wait is shielded: a server stop (task cancellation) must not abandon a record
        half-way, so it is held back until the write has settled and then delivered again, to
        the call's next step. Only a write that settled *successfully* counts as written: a
        cancellation that arrives in the same loop turn as a failure must not hide the failure.
        """
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        stop_requested = False
        give_up_at: float | None = None  # once a stop is held back, wait this long at most
        task = asyncio.current_task()
        while not write.done():
            try:
                if give_up_at is None:
                    await asyncio.shield(write)
                elif give_up_at <= loop.time():
                    break
                else:
                    await asyncio.wait({write}, timeout=give_up_at - loop.time())
            except asyncio.CancelledError:
                if write.cancelled():
                    break
                if task is not None:  # hold the stop back until the write has settled
                    task.uncancel()
                    stop_requested = True
                    if give_up_at is None:
                        give_up_at = loop.time() + STOP_WRITE_WAIT
            except EvidenceWriteError:
                break
        if stop_requested and task is not None:
            task.cancel()  # the stop, delivered at the call's next await
        if not write.done():
            return None, "the evidence write did not finish before the call was stopped"
        if write.cancelled():
            return None, "evidence write cancelled"
        error = write.exception()
        if error is not None:
            return None, str(error) or type(error).__name__
        self.metrics.evidence_latency.observe(time.perf_counter() - t0)
        return record_id, None

    async def _gate(self, stream: AgiStream, env: dict[str, str], query: str) -> None:
        """`agi://…/gate?purpose=ga_linkage`: check channel and store, set CONSENT_GATE_<P>."""
        args = AgiEnvironment(env).args
        purpose = (parse_qs(query).get("purpose") or args[:1] or [""])[0]
        log = self.log.bind(call=env.get("agi_uniqueid", ""), route="gate")
        if not valid_purpose(purpose):
            log.warning("gate.bad_request", purpose=masked(purpose))
            stream.writer.write(b"failure\n")
            return
        log = log.bind(purpose=purpose)
        try:
            async with asyncio.timeout(self.config.call_timeout):
                values: dict[str, str | None] = {}
                for key, variable in read_commands(purpose):
                    command = Command(("GET", "VARIABLE"), (variable,))
                    resp = await stream.exchange_within(command)
                    ok = resp is not None and resp.ok and resp.result == "1"
                    values[key] = resp.data if ok and resp is not None else None
                flow = self.flows.get((values["flow"] or "").split("@", 1)[0])
                current = set(flow.notice_sha256.values()) if flow else set()
                decision = await asyncio.get_running_loop().run_in_executor(
                    self._gate_executor,
                    lambda: check_gate(
                        self._gate_store(),
                        purpose=purpose,
                        channel_value=values["value"],
                        record_id=values["record_id"],
                        current_notice_sha256=current,
                    ),
                )
                for name, value in result_variables(purpose, decision):
                    await stream.exchange_within(
                        Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))
                    )
        except (*EXCHANGE_ERRORS, TimeoutError) as exc:
            log.warning("gate.failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.metrics.gate_checks.labels(purpose=purpose, gate=decision.value).inc()
        log.info("gate.checked", gate=decision.value, reason=decision.reason)

    def _gate_store(self) -> ChainStore:
        """A read connection of the gate's own, used only in the gate's executor thread."""
        if self._gate_reader is None:
            self._gate_reader = open_store(os.fspath(self.config.store_path))
        return self._gate_reader

    async def _unknown_flow(self, stream: AgiStream, env: dict[str, str], path: str) -> None:
        self.metrics.refused("unknown_flow")
        self.log.warning("call.unknown_flow", call=env.get("agi_uniqueid", ""), script=masked(path))
        if not await self._set_error(stream, None):
            return
        stream.writer.write(b"failure\n")
        with contextlib.suppress(OSError):
            await stream.writer.drain()

    async def _set_error(self, stream: AgiStream, flow: Flow | None) -> bool:
        """Best effort, without an engine: set the error outcome (every purpose variable too,
        when the flow is known). False if the channel is gone or does not answer in time."""
        for name, value in error_variables(flow):
            command = Command(("SET", "VARIABLE"), (INHERIT_PREFIX + name, value))
            try:
                if await stream.exchange_within(command) is None:
                    return False
            except EXCHANGE_ERRORS:
                return False
        return True


async def serve(config: ServerConfig, key: PseudonymKey, ready: Any = None) -> int:
    """Run until SIGTERM/SIGINT, then drain. `ready(address)` is called once listening."""
    # The evidence writer thread needs the GIL only briefly; a 1 ms switch interval (default
    # 5 ms) keeps it from waiting behind the event loop, which bounds decision latency.
    sys.setswitchinterval(0.001)
    server = FastAgiServer(config, key)
    address = await server.start()
    # Long-lived start-up objects (flows, modules) leave the collector's view, and young
    # collections run less often: fewer and shorter GC pauses on the event loop.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    server.install_signal_handlers()
    if ready is not None:
        ready(address)
    await server.wait_stopped()
    return 0
