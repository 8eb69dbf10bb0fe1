"""A read connection to the evidence store in a thread of its own, its work taken in batches.

The FastAGI server reads the store off its event loop: the gate's checks and the server's head
log on one `ReadConnection`, returning callers' look-ups on another (so a slow gate check never
delays a look-up). Each connection is opened on first use and used only by its own thread.

Why not a `ThreadPoolExecutor`: it hands every job over on its own — a queue put that wakes the
thread, and for every result a `call_soon_threadsafe` that wakes the event loop. At 100 calls
in flight each handover costs the loop a futex call and a GIL switch. Here a job is appended to
a deque and the thread is woken only if it sleeps; it runs everything queued, then resolves the
whole batch's futures in one callback on each event loop. Under load many calls share one
wake-up each way; an idle server sees one job per batch, as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.osthreads import name_this_thread

T = TypeVar("T")

#: (the work, its loop, its future); None is the stop marker.
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class ReaderClosed(RuntimeError):
    """Work was given to a `ReadConnection` after `close()`."""


class ReadConnection:
    """A read connection to the evidence store, opened on first use, used only in its own
    thread (named `name` + ``-reader`` for `ps -L` and the benchmarks' per-thread split)."""

    def __init__(self, store_path: str | os.PathLike[str], name: str = "gate") -> None:
        self.store_path = store_path
        self.name = name
        self._store: ChainStore | None = None
        self._jobs: collections.deque[_Job | None] = collections.deque()
        self._wake = threading.Event()
        self._idle = False  # the thread is about to wait or waits for `_wake`
        self._closed = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: batches run and jobs run (tests and curious readers)
        self.batches = 0
        self.jobs = 0

    async def run(self, work: Callable[[ChainStore], T]) -> T:
        """`work(store)` in the connection's thread."""
        return await self._submit(lambda: work(self._connection()))

    async def run_lazily(self, work: Callable[[Callable[[], ChainStore]], T]) -> T:
        """`work(connect)` in the connection's thread; `connect()` opens it only if needed."""
        return await self._submit(lambda: work(self._connection))

    async def close(self) -> None:
        """Finish the queued work, close the connection (in its thread), stop the thread."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is None:
            return
        self._jobs.append(None)
        self._wake.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)

    def _submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed:
            future.set_exception(ReaderClosed(f"the {self.name} reader is closed"))
            return future
        self._ensure_thread()
        self._jobs.append((job, loop, future))
        if self._idle:  # a busy thread finds the job without being woken (see `_loop`)
            self._wake.set()
        return future

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._loop, name=f"{self.name}-reader", daemon=True
                )
                thread.start()
                self._thread = thread

    def _connection(self) -> ChainStore:
        if self._store is None:
            self._store = open_store(os.fspath(self.store_path))
        return self._store

    def _loop(self) -> None:
        name_this_thread(f"{self.name}-reader")
        try:
            while True:
                # Idle first, then look: a job queued before `_idle` was set is seen here, one
                # queued after it sets the event (`_submit`), so none waits unnoticed.
                self._idle = True
                if not self._jobs:
                    self._wake.wait()
                self._idle = False
                self._wake.clear()  # before the drain: a job queued after it is seen next time
                if not self._drain():
                    return
        finally:
            store, self._store = self._store, None
            if store is not None:
                with contextlib.suppress(Exception):
                    store.close()

    def _drain(self) -> bool:
        """Run the jobs queued now (not those that come meanwhile: under steady load the batch
        would never end and its callers never hear), then resolve their futures, one callback
        per event loop; False once the stop marker came (the jobs before it are run)."""
        done: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, bool]]] = {}
        going = True
        for _ in range(len(self._jobs)):
            job = self._jobs.popleft()
            if job is None:
                going = False
                break
            work, loop, future = job
            try:
                outcome, ok = work(), True
            except BaseException as exc:  # the waiting call gets it, the thread goes on
                outcome, ok = exc, False
            done.setdefault(loop, []).append((future, outcome, ok))
            self.jobs += 1
        if done:
            self.batches += 1
        for loop, results in done.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, results)
        return going


def _settle(results: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, outcome, ok in results:
        if future.done():  # cancelled meanwhile (a call that hung up)
            continue
        if ok:
            future.set_result(outcome)
        else:
            future.set_exception(outcome)
