"""The FastAGI server's lifecycle: start, admission, the calls in flight, reload, drain, watchers.

* start: the evidence writer opens the store before the server listens; a store it cannot use is
  a `StoreError` from `FastAgiServer.start` (``serve`` exits 2 with its one line);
* admission: peers outside ``--allow`` are closed before anything is read; beyond ``max_calls``
  (and while draining) a peer gets ``failure`` (``AGISTATUS=FAILURE``) and is counted;
* each connection: the environment block must arrive within ``env_timeout`` and lines are at most
  ``max_line`` bytes; then the script path selects a route (`routes`) or a flow, whose consent
  call `CallPump` runs; an answer past its command's deadline is noticed by the answer watch
  (every `ANSWER_WATCH_INTERVAL`), which cancels the call: it ends as ``error``, with its record;
* flows are reloaded on SIGHUP or when a file changes (`FlowRegistry`); a flow that fails
  validation is rejected (logged) and its previous version keeps serving; every call keeps the
  `Flow` object it started with, so it finishes on its version; an `AudioWatch` (inotify) spares
  the calls the `stat`s after each play in a folder it proves unchanged (R13);
* watchers: the flows, late answers, the GA4 outbox (``ga4_flush``) and the chain's head in the
  log (``head_log_interval``);
* SIGTERM drains: stop accepting, let calls finish for ``grace`` seconds, then cancel the rest,
  which still write their evidence (``error`` for undecided purposes) before the writer closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import gc
import os
import signal
import sys
import threading
from typing import Any

from consent_ivr.engine import WAIT_VARIABLE, EarlierDecision, NoEarlierDecision, recall_wait_ms
from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.groupcommit import GroupCommitWriter
from consent_ivr.evidence.pseudonym import Keyring, PseudonymKey, warm_up
from consent_ivr.evidence.returning import look_up, lookup_error
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.flow.audiowatch import AudioWatch
from consent_ivr.flow.model import Flow
from consent_ivr.logs import get_logger
from consent_ivr.protocol.codec import AgiProtocolError
from consent_ivr.tracking.step import FlushReport, Ga4Sender, TrackingConfig
from consent_ivr.transports.fastagi.call import CallPump, CallSlot
from consent_ivr.transports.fastagi.config import FD_RESERVE, ServerConfig, allowed, raise_fd_limit
from consent_ivr.transports.fastagi.flows import FlowRegistry
from consent_ivr.transports.fastagi.reader import ReadConnection
from consent_ivr.transports.fastagi.routes import FastAgiRoutes
from consent_ivr.transports.fastagi.stream import AgiStream, read_environment, start_agi_server
from consent_ivr.transports.metrics import Metrics

#: How often the server looks for answers past their deadline (a late answer is noticed within
#: this much; one pass over the calls in flight costs microseconds, a timer per command more).
ANSWER_WATCH_INTERVAL = 0.25


class FastAgiServer:
    """One FastAGI server: its socket, calls in flight, flows, evidence writer and watchers."""

    def __init__(
        self, config: ServerConfig, key: PseudonymKey, keyring: Keyring | None = None
    ) -> None:
        self.config = config
        self.key = key
        #: every key a returning caller's records may be under (R18: the look-up)
        self.keyring = keyring if keyring is not None else Keyring(key)
        self._recall_reader = ReadConnection(config.store_path, "recall")
        self.log = get_logger(component="fastagi")
        self.flows = FlowRegistry(config.flows_dir, self.log, config.store_path)
        self.metrics = Metrics()
        self.evidence: GroupCommitWriter | None = None
        #: The consent calls' pump, once the evidence writer is open (`start`).
        self.pump: CallPump | None = None
        self._server: asyncio.Server | None = None
        self._calls: dict[asyncio.Task[None], CallSlot] = {}
        self._stopping = asyncio.Event()
        self._draining = False
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
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
        self.routes = FastAgiRoutes(
            flows=self.flows,
            key=key,
            metrics=self.metrics,
            log=self.log,
            call_timeout=config.call_timeout,
            store_path=config.store_path,
            tracking_config=self._tracking_config,
        )

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
        self.pump = CallPump(
            self.evidence,
            self.key,
            self.metrics,
            self.log,
            self.config.call_timeout,
            recaller=self.recall,
            recall_wait_ms=recall_wait_ms(os.environ) if WAIT_VARIABLE in os.environ else None,
        )
        self.flows.audio = AudioWatch.open(self.log)  # None: every play is stat'ed
        self.flows.reload()
        warm_up(self.key.region)  # phonenumbers' import (~30 ms) now, not in the first call
        self._server = await start_agi_server(
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
        if self.flows.audio is not None:  # no call is left to ask it
            self.flows.audio.close()
        await self.routes.close()
        await self._recall_reader.close()
        await asyncio.get_running_loop().run_in_executor(
            self._flush_executor, self._close_flush_store
        )
        self._flush_executor.shutdown(wait=True)
        self.metrics.stop()
        self.log.info("server.stopped")

    async def recall(self, flow: Flow, env: dict[str, str]) -> EarlierDecision | NoEarlierDecision:
        """A returning caller's look-up (R18) on the look-ups' own read connection and thread,
        so that a slow gate check never delays it; never raises (`look_up`)."""
        caller = env.get("agi_callerid", "")
        log = self.log.bind(call=env.get("agi_uniqueid", ""), flow=flow.label)
        try:
            return await self._recall_reader.run_lazily(
                lambda connect: look_up(connect, self.keyring, caller, flow, log)
            )
        except Exception as exc:  # e.g. the executor is shut down: ask, never grant
            log.error("returning.lookup_failed", error=lookup_error(exc))  # digits masked
            return NoEarlierDecision(why="store_error")

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
        try:
            head = await self.routes.reader.run(lambda store: store.head())
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
            else:  # files unchanged, an audio watch in doubt: watched and verified afresh
                self.flows.apply_watches(await asyncio.to_thread(self.flows.rewatch_dirty))

    # ------------------------------------------------------------------------- calls
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not allowed(peer, self.config.allow):
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
        self._calls[task] = slot = CallSlot(task)
        self.metrics.in_flight.inc()
        try:
            await self._call(AgiStream(reader, writer), slot)
        except Exception as exc:  # one broken call must never take the server down
            self.log.error("call.internal_error", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.metrics.in_flight.dec()
            del self._calls[task]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _call(self, stream: AgiStream, slot: CallSlot) -> None:
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
        route = self.routes.handlers.get(path.strip("/"))
        if route is not None:  # a route (transports.routes), not a flow
            await route(stream, env, query)
            return
        flow = self.flows.get(path.strip("/"))
        if flow is None:
            await self.routes.unknown_flow(stream, env, path)
            return
        assert self.pump is not None  # calls are accepted only once started
        await self.pump.run(stream, env, flow, query, slot, self.flows.audio_watch(flow))

    async def _watch_answers(self) -> None:
        """Cancel each call whose awaited answer is past its deadline: it ends as ``error``
        with its record (`CallPump.pump`), and its slot is free long before --call-timeout."""
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


async def serve(
    config: ServerConfig, key: PseudonymKey, ready: Any = None, keyring: Keyring | None = None
) -> int:
    """Run until SIGTERM/SIGINT, then drain. `ready(address)` is called once listening;
    `keyring` (default: `key` alone) is what returning callers are looked up under."""
    # The evidence writer thread needs the GIL only briefly; a 1 ms switch interval (default
    # 5 ms) keeps it from waiting behind the event loop, which bounds decision latency.
    sys.setswitchinterval(0.001)
    server = FastAgiServer(config, key, keyring)
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
