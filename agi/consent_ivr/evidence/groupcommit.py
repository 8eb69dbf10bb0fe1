"""Group commit for the FastAGI server: many calls, one writer thread, one fsync per batch."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from consent_ivr.evidence.chain import ChainStore
from consent_ivr.evidence.errors import EvidenceWriteError
from consent_ivr.evidence.record import Prepared, prepare
from consent_ivr.osthreads import name_this_thread


class GroupCommitWriter:
    """Many calls, one writer thread: records queued while a commit runs share the next commit.

    Each record is still on disk before its caller's `write` returns (R12), but a burst of N
    decisions costs one fsync instead of N. If a batch fails as a whole, its records are retried
    one by one so that one bad record cannot fail the others.
    """

    def __init__(
        self,
        store: ChainStore,
        max_batch: int = 256,
        *,
        gather_seconds: float = 0.002,
        busy_batch: int = 3,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        #: Under load (the last batch had at least `busy_batch` records) the writer waits up to
        #: `gather_seconds` for more records before committing, like PostgreSQL's commit_delay
        #: with commit_siblings: fewer, larger commits when decisions pile up; none when idle.
        self.gather_seconds = gather_seconds
        self.busy_batch = busy_batch
        self._last_batch = 0
        self._closed = False
        self._closing = threading.Lock()  # no record is queued behind the stop marker
        self._queue: queue.SimpleQueue[_Pending | _Open | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
        self._thread.start()
        self.batches = 0
        self.records = 0

    def new_record_id(self) -> str:
        return self.store.new_record_id()

    def open(self) -> concurrent.futures.Future[None]:
        """Connect (and migrate) the store now, in the writer's own thread, on the connection
        it will write with: a server checks its store before it takes calls. The future fails
        with the store's one-line `StoreError`."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._closing:
            if self._closed:
                future.set_exception(EvidenceWriteError("the evidence writer is closed"))
            else:
                self._queue.put(_Open(future))
        return future

    def submit(self, record: dict[str, Any]) -> asyncio.Future[None]:
        """Queue the record; the future resolves once it is committed (or with
        EvidenceWriteError). Call from the event loop's thread.

        The record is serialised here, in the caller's thread: the writer thread then needs the
        GIL only for moments (sqlite releases it while it works and syncs), so it does not make
        the event loop wait for a GIL switch interval.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        try:
            prepared = prepare(record)
        except (KeyError, TypeError, ValueError) as exc:
            future.set_exception(EvidenceWriteError(f"{type(exc).__name__}: {exc}"))
            return future
        with self._closing:
            if self._closed:  # after close() nothing would ever commit it: fail at once
                future.set_exception(EvidenceWriteError("the evidence writer is closed"))
            else:
                self._queue.put(_Pending(prepared, loop, future))
        return future

    async def write(self, record: dict[str, Any]) -> str:
        """Queue the record and wait until it is committed; raises EvidenceWriteError."""
        await self.submit(record)
        return str(record["record_id"])

    def close(self) -> None:
        """Finish every queued record, then stop the thread and close the store. A record
        submitted after this fails (EvidenceWriteError) instead of waiting forever."""
        with self._closing:  # submit checks _closed under this lock: none queues behind None
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        self.store.close()

    def _run(self) -> None:
        name_this_thread("evidence-writer")
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            if isinstance(first, _Open):
                first.run(self.store)
                continue
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if isinstance(item, _Open):
                    item.run(self.store)
                    continue
                batch.append(item)
            if not stop and self._last_batch >= self.busy_batch and self.gather_seconds > 0:
                stop = self._gather(batch)
            self._last_batch = len(batch)
            try:
                self._commit(batch)
            except Exception as exc:  # never let the writer die: its callers would wait forever
                error = EvidenceWriteError(f"evidence writer: {type(exc).__name__}: {exc}")
                _settle([(p, error) for p in batch])
        self.store.close()

    def _gather(self, batch: list[_Pending]) -> bool:
        """Wait up to `gather_seconds` for more records; True if the stop marker came."""
        deadline = time.monotonic() + self.gather_seconds
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if item is None:
                return True
            if isinstance(item, _Open):
                item.run(self.store)
                continue
            batch.append(item)
        return False

    def _commit(self, batch: list[_Pending]) -> None:
        results: list[tuple[_Pending, BaseException | None]]
        try:
            self.store.write_prepared([p.record for p in batch])
            results = [(p, None) for p in batch]
            self.batches += 1
            self.records += len(batch)
        except EvidenceWriteError as exc:
            if len(batch) == 1:
                results = [(batch[0], exc)]
            else:  # one by one: a bad record must not fail the others
                results = []
                for p in batch:
                    try:
                        self.store.write_prepared([p.record])
                    except EvidenceWriteError as single:
                        results.append((p, single))
                    else:
                        results.append((p, None))
        _settle(results)


def _settle(results: list[tuple[_Pending, BaseException | None]]) -> None:
    """Resolve the futures: one wake-up of each event loop per batch, not one per record."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Pending, BaseException | None]]] = {}
    for pending, error in results:
        by_loop.setdefault(pending.loop, []).append((pending, error))
    for loop, items in by_loop.items():

        def apply(items: list[tuple[_Pending, BaseException | None]] = items) -> None:
            for pending, error in items:
                if pending.future.done():
                    continue
                if error is None:
                    pending.future.set_result(None)
                else:
                    pending.future.set_exception(error)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(apply)


@dataclass
class _Pending:
    record: Prepared
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


@dataclass
class _Open:
    """A request to connect the store now (in the writer's thread)."""

    future: concurrent.futures.Future[None]

    def run(self, store: ChainStore) -> None:
        try:
            store.open()
        except BaseException as exc:  # StoreError, or a bug: the waiting caller gets it
            self.future.set_exception(exc)
        else:
            self.future.set_result(None)
