"""Durable, append-only, hash-chained evidence on SQLite or PostgreSQL (one interface).

`open_store(url)` takes a plain path or ``sqlite:///abs/path`` (an SQLite file: WAL,
``synchronous=FULL``) or ``postgresql://…`` (psycopg 3, ``synchronous_commit=on``). Both run the
same versioned migrations (`MIGRATIONS`) and behave the same; docs/evidence.md is the reference.
This module holds `open_store` and the two concrete stores, and re-exports the public names of the
modules the store is made of (import them from here):

    errors       StoreError, EvidenceWriteError
    backends     the SQLite and PostgreSQL connections behind one interface; `redact`
    migrations   the schema and its migrations (`MIGRATIONS`, `migrate`)
    entries      the chain's entries: GENESIS, `chain_hash`, appending, `Entry`
    chain        `ChainStore`: the store's interface (writes, reads, withdrawals, purges, outbox)
    flowcontent  the flow versions kept by hash (R13)
    retention    purges (`purge_cutoff`)
    outbox       the GA4 outbox (`OutboxItem`)
    verify       verifying the chain (`VerifyResult`)

The chain (R14): every decision, withdrawal and purge — later also tracking events and erasures —
is an `entry` with a sequence number ``seq`` (1, 2, 3, … without gaps) and

    body_sha256 = SHA-256( canonical JSON of the body, UTF-8 )        (64 lowercase hex)
    hash        = SHA-256( ASCII( prev_hash + body_sha256 ) )         (hex strings concatenated)
    prev_hash   = hash of entry seq-1, or GENESIS (64 zeros) for seq 1

Canonical JSON is ``json.dumps(body, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``. A decision's body is its evidence record (kept in ``evidence.record_json``);
other bodies are kept in ``entry.body``. Writers append under a lock (SQLite ``BEGIN IMMEDIATE``,
PostgreSQL ``pg_advisory_xact_lock``), so concurrent servers never fork the chain. A retention
purge removes bodies (and pseudonyms) but keeps seq, hashes and body_sha256, and is itself an entry.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from consent_ivr.evidence.backends import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    describe_sqlite_error,
    one_line,
    redact,
)
from consent_ivr.evidence.chain import ALL_PURPOSES, ChainStore
from consent_ivr.evidence.entries import GENESIS, Entry, chain_hash
from consent_ivr.evidence.errors import EvidenceWriteError, StoreError
from consent_ivr.evidence.migrations import MIGRATIONS, migrate
from consent_ivr.evidence.outbox import OutboxItem
from consent_ivr.evidence.record import new_record_id
from consent_ivr.evidence.retention import purge_cutoff
from consent_ivr.evidence.verify import VerifyResult
from consent_ivr.osthreads import name_this_thread

__all__ = [
    "ALL_PURPOSES",
    "GENESIS",
    "MIGRATIONS",
    "ChainStore",
    "Entry",
    "EvidenceWriteError",
    "OutboxItem",
    "PostgresEvidenceStore",
    "SqliteEvidenceStore",
    "StoreError",
    "VerifyResult",
    "chain_hash",
    "migrate",
    "new_record_id",
    "open_store",
    "purge_cutoff",
    "redact",
]


class SqliteEvidenceStore(ChainStore):
    """The store in an SQLite file (WAL, synchronous=FULL: a commit is on disk)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        background_checkpoints: bool = False,
        timeout: float = 5.0,
        any_thread: bool = False,
    ) -> None:
        self.path = Path(path)
        #: any_thread: the connection may be used (one thread at a time) and closed from threads
        #: other than its creator's, e.g. a worker's store closed by the server at shutdown.
        super().__init__(str(self.path), lambda: SqliteBackend(self.path, timeout, any_thread))
        #: A server sets this: WAL checkpoints (which copy pages into the database file and sync
        #: it, tens of ms) then run in a thread of their own instead of inside a commit.
        self.background_checkpoints = background_checkpoints
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    def _describe_connect_error(self, exc: BaseException) -> str:
        return describe_sqlite_error(self.path, exc)

    def _connect(self) -> sqlite3.Connection:
        """The raw connection (tests and tools); connects and migrates on first use."""
        with self._errors() as db:
            assert isinstance(db, SqliteBackend)
            return db.conn

    def _opened(self, db: Backend) -> None:
        if self.background_checkpoints:
            db.execute("PRAGMA wal_autocheckpoint=0")
            if self._checkpointer is not None:  # a reconnect: the thread is still running
                return
            self._stop.clear()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="evidence-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _checkpoint_loop(self, interval: float = 1.0) -> None:
        name_this_thread("evidence-checkpoint")
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            while not self._stop.wait(interval):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        super().close()


class PostgresEvidenceStore(ChainStore):
    """The store in a PostgreSQL database (several servers may share it)."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        super().__init__(redact(url), lambda: PostgresBackend(url, timeout))

    def _describe_connect_error(self, exc: BaseException) -> str:
        if type(exc).__name__ == "ProgrammingError" and "invalid" in str(exc):
            return f"not a valid PostgreSQL URL {redact(self.url)}: {one_line(exc)}"
        return f"cannot use PostgreSQL at {redact(self.url)}: {one_line(exc)}"


def open_store(
    url: str | os.PathLike[str],
    *,
    background_checkpoints: bool = False,
    timeout: float = 5.0,
    any_thread: bool = False,
) -> ChainStore:
    """The store named by `url`: a path or ``sqlite:///abs/path`` (SQLite), or
    ``postgresql://user@host:port/db`` (also ``postgres://``). Raises StoreError for a URL of
    another kind. Connects on first use (or call ``.open()``). `any_thread`: see
    `SqliteEvidenceStore` (a PostgreSQL connection may be used from any thread anyway)."""
    text = os.fspath(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        if not text.strip():
            raise StoreError("the evidence store location is empty")
        return SqliteEvidenceStore(
            text,
            background_checkpoints=background_checkpoints,
            timeout=timeout,
            any_thread=any_thread,
        )
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise StoreError(f"{text}: expected sqlite:///absolute/path/to/evidence.sqlite3")
        return SqliteEvidenceStore(
            rest,
            background_checkpoints=background_checkpoints,
            timeout=timeout,
            any_thread=any_thread,
        )
    if scheme in ("postgresql", "postgres"):
        return PostgresEvidenceStore(text, timeout=timeout)
    raise StoreError(
        f"unsupported evidence store URL {redact(text)}: expected a path, sqlite:///path or "
        "postgresql://user@host/db"
    )
