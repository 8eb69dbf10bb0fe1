"""A FastAGI server's tracking steps on a few threads that keep their store connections."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.logs import Logger
from consent_ivr.tracking.config import TrackingConfig
from consent_ivr.tracking.entry import TrackingResult, run_tracking


class TrackWorkers:
    """A server's tracking steps: a few threads, each keeping its own store connection.

    A hangup handler runs for every call, so opening (and migrating-checking) a connection per
    step would cost the server as much as the step itself. Each thread opens its connection on
    first use and keeps it; a step that ends in ``error`` drops it (the next one reconnects, e.g.
    after a database restart). Several threads, so that one slow GA4 delivery does not hold up
    the other calls' steps; the chain appends themselves serialise in the store.
    """

    def __init__(self, threads: int = 4) -> None:
        self._executor = ThreadPoolExecutor(threads, "tracking")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stores: list[ChainStore] = []
        self.opened = 0  # connections opened so far (tests, metrics)

    async def run(
        self,
        env: Mapping[str, str],
        values: dict[str, str | None],
        key: PseudonymKey,
        config: TrackingConfig,
        log: Logger | None = None,
    ) -> TrackingResult:
        # Shielded: a caller cancelled (call deadline, server stop) must not cancel a step that
        # is still queued, or its tracking entry would be lost; close() waits for every step.
        step = self._executor.submit(self._step, env, values, key, config, log)
        return await asyncio.shield(asyncio.wrap_future(step))

    def _step(
        self,
        env: Mapping[str, str],
        values: dict[str, str | None],
        key: PseudonymKey,
        config: TrackingConfig,
        log: Logger | None,
    ) -> TrackingResult:
        store: ChainStore | None = getattr(self._local, "store", None)
        if store is not None and getattr(self._local, "url", None) != config.store:
            self._drop(store)
            store = None
        if store is None:
            try:
                store = open_store(config.store, any_thread=True)
            except StoreError:  # run_tracking opens it again and reports the error its way
                return run_tracking(env, values, key, config, log=log)
            with self._lock:
                self._stores.append(store)
                self.opened += 1
            self._local.store, self._local.url = store, config.store
        result = run_tracking(env, values, key, config, store=store, log=log)
        if result.status == "error":
            self._drop(store)
        return result

    def _drop(self, store: ChainStore) -> None:
        self._local.store = None
        with self._lock:
            if store in self._stores:
                self._stores.remove(store)
        store.close()

    def close(self) -> None:
        """Wait for running steps, then close every connection."""
        self._executor.shutdown(wait=True)
        with self._lock:
            stores, self._stores = self._stores, []
        for store in stores:
            store.close()
