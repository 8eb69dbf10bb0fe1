"""Durable, append-only, hash-chained evidence on SQLite or PostgreSQL (one interface).

`open_store(url)` takes a plain path or ``sqlite:///abs/path`` (an SQLite file: WAL,
``synchronous=FULL``) or ``postgresql://…`` (psycopg 3, ``synchronous_commit=on``). Both run the
same versioned migrations (`MIGRATIONS`) and behave the same; docs/evidence.md is the reference.

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

import abc
import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from consent_ivr.evidence.errors import EvidenceWriteError, StoreError
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import Prepared, body_sha256, canonical_json, prepare
from consent_ivr.flow.model import Flow
from consent_ivr.flow.notice import declaration, notice_document

__all__ = [
    "GENESIS",
    "MIGRATIONS",
    "ChainStore",
    "OutboxItem",
    "PostgresEvidenceStore",
    "SqliteEvidenceStore",
    "StoreError",
    "VerifyResult",
    "chain_hash",
    "open_store",
]

GENESIS = "0" * 64
#: The purpose value of a withdrawal of every consent purpose.
ALL_PURPOSES = "*"


def chain_hash(prev_hash: str, body_hash: str) -> str:
    """hash = SHA-256 of the ASCII text prev_hash + body_sha256 (both 64 lowercase hex)."""
    return hashlib.sha256((prev_hash + body_hash).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------------- migrations
# One list for both backends. Statements are split on ";" at line ends. Dialect differences are
# the placeholders {int64_pk} and {int64} only (SQLite's INTEGER PRIMARY KEY is its 64-bit rowid;
# PostgreSQL needs BIGINT). Python steps run after a migration's SQL, in the same transaction.

#: Migration 1 is the schema of the first release, verbatim, so its files are recognised.
MIGRATION_1 = """
CREATE TABLE IF NOT EXISTS evidence (
    record_id       TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    call_uniqueid   TEXT NOT NULL,
    flow_id         TEXT NOT NULL,
    flow_version    INTEGER NOT NULL,
    flow_sha256     TEXT NOT NULL,
    notice_version  TEXT NOT NULL,
    notice_sha256   TEXT NOT NULL,
    language        TEXT NOT NULL,
    caller_pseudonym TEXT,
    caller_key_id   TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    record_json     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence_outcome (
    record_id  TEXT NOT NULL REFERENCES evidence(record_id),
    purpose    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (record_id, purpose)
);
CREATE INDEX IF NOT EXISTS evidence_caller ON evidence(caller_pseudonym);
CREATE INDEX IF NOT EXISTS evidence_call ON evidence(call_uniqueid);
"""

MIGRATION_2 = """
CREATE TABLE entry (
    seq              {int64_pk},
    kind             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    record_id        TEXT UNIQUE,
    caller_pseudonym TEXT,
    purpose          TEXT,
    body             TEXT,
    body_sha256      TEXT NOT NULL,
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL UNIQUE,
    purged_by        {int64}
);
CREATE INDEX entry_caller ON entry(caller_pseudonym, kind);
CREATE INDEX entry_kind_time ON entry(kind, created_at);
CREATE TABLE flow_content (
    source_sha256  TEXT PRIMARY KEY,
    flow_id        TEXT NOT NULL,
    flow_version   INTEGER NOT NULL,
    notice_version TEXT NOT NULL,
    source_text    TEXT,
    content_json   TEXT NOT NULL,
    first_seen     TEXT NOT NULL
);
"""


def _backfill_chain(db: _Backend) -> None:
    """Migration 2: chain the decisions already in `evidence` (files of the first release)."""
    rows = db.query("SELECT record_id, created_at, caller_pseudonym, record_json FROM evidence")
    rows.sort(key=lambda r: (r[1], r[0]))  # oldest first (SQLite rowid order is not portable)
    prev = GENESIS
    entries = []
    for seq, (record_id, created_at, pseudonym, text) in enumerate(rows, start=1):
        digest = body_sha256(canonical_json(json.loads(text)))
        h = chain_hash(prev, digest)
        entries.append(
            (seq, "decision", created_at, record_id, pseudonym, None, None, digest, prev, h)
        )
        prev = h
    db.executemany(_INSERT_ENTRY, entries)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    step: Callable[[_Backend], None] | None = None


#: The durable outbox of GA4 Measurement Protocol events (docs/tracking.md). `payload` is JSON
#: without secrets (the API secret is read from the environment at send time).
MIGRATION_3 = """
CREATE TABLE ga4_outbox (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    tracking_seq    {int64},
    record_id       TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    done_at         TEXT
);
CREATE INDEX ga4_outbox_due ON ga4_outbox(state, next_attempt_at);
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "evidence and evidence_outcome (first release)", MIGRATION_1),
    Migration(2, "hash-chained entries, flow content by hash", MIGRATION_2, _backfill_chain),
    Migration(3, "GA4 outbox (tracking step)", MIGRATION_3),
)

_INSERT_ENTRY = (
    "INSERT INTO entry (seq, kind, created_at, record_id, caller_pseudonym, purpose, body,"
    " body_sha256, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


# ------------------------------------------------------------------------------------ backends
class _Backend(abc.ABC):
    """A connection with `?` parameters, explicit transactions and a chain lock."""

    name = ""
    dialect: ClassVar[dict[str, str]] = {}
    errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Backend-specific."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Backend-specific."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Backend-specific."""

    @abc.abstractmethod
    def begin_write(self) -> None:
        """Start a transaction holding the store's write lock (the chain head cannot move)."""

    @abc.abstractmethod
    def begin_read(self) -> None:
        """Start a read-only transaction: one consistent snapshot for several queries."""

    @abc.abstractmethod
    def table_exists(self, name: str) -> bool:
        """Backend-specific."""

    def describe_error(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {_one_line(exc)}"

    @abc.abstractmethod
    def close(self) -> None:
        """Backend-specific."""

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[None]:
        self.begin_write()
        try:
            yield
        except BaseException:
            with contextlib.suppress(*self.errors):
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        self.begin_read()
        try:
            yield
        finally:
            with contextlib.suppress(*self.errors):
                self.execute("ROLLBACK")


class _SqliteBackend(_Backend):
    name = "sqlite"
    dialect: ClassVar[dict[str, str]] = {"int64_pk": "INTEGER PRIMARY KEY", "int64": "INTEGER"}
    errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path, timeout: float, any_thread: bool = False) -> None:
        self.path = path
        _make_folder(path)
        self.conn = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=not any_thread
        )
        _enter_wal(self.conn, timeout)
        self.conn.execute("PRAGMA synchronous=FULL")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)

    def begin_write(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def begin_read(self) -> None:
        self.conn.execute("BEGIN DEFERRED")  # WAL: the snapshot holds until ROLLBACK

    def table_exists(self, name: str) -> bool:
        return bool(
            self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        )

    def describe_error(self, exc: BaseException) -> str:
        return _describe_sqlite_error(self.path, exc)

    def close(self) -> None:
        self.conn.close()


class _PostgresBackend(_Backend):
    name = "postgresql"
    dialect: ClassVar[dict[str, str]] = {"int64_pk": "BIGINT PRIMARY KEY", "int64": "BIGINT"}

    def __init__(self, url: str, timeout: float) -> None:
        import psycopg

        self.errors = (psycopg.Error, OSError)
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
        self.conn.execute("SET synchronous_commit = on")
        self.conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(self._sql(sql), tuple(params)).fetchall()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def begin_write(self) -> None:
        # one lock per schema: stores in different schemas of one database do not contend
        self.execute("BEGIN")
        self.execute("SELECT pg_advisory_xact_lock(hashtext('consent-ivr:' || current_schema()))")

    def begin_read(self) -> None:
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])

    def describe_error(self, exc: BaseException) -> str:
        return f"PostgreSQL {redact(self.url)}: {_one_line(exc)}"

    def close(self) -> None:
        self.conn.close()


def _make_folder(path: Path) -> None:
    """Create the store's folder if needed; raise the OSError that names the real cause when
    the path cannot be a database file (mkdir alone says "File exists" for a file in the way,
    and SQLite only "unable to open database file")."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder must be, e.g. /dev/null/x.sqlite3
        raise NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
        ) from None
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))


def _enter_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode, waiting up to `timeout` seconds for other connections.

    Switching a new file's journal mode needs an exclusive lock, and SQLite does not call the
    busy handler for it (a connection holding a shared lock that waited could deadlock), so two
    processes opening a new store at once would otherwise see "database is locked" at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _describe_sqlite_error(path: Path, exc: BaseException) -> str:
    text = _one_line(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"{path} is not an SQLite evidence store or is corrupt ({text})"
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process ({text}); try again later"
    if isinstance(exc, OSError):
        return f"cannot open {path}: {exc.strerror or text}"
    if "unable to open" in text:
        return f"cannot open {path} ({text})"
    return f"{path}: {type(exc).__name__}: {text}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# --------------------------------------------------------------------------------- the store
@dataclass
class VerifyResult:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return (
                f"ok: {self.entries} entries, chain unbroken; head seq {self.head_seq} "
                f"hash {self.head_hash}"
            )
        return f"BROKEN at seq {self.broken_seq}: {self.reason}"


@dataclass
class Entry:
    seq: int
    kind: str
    created_at: str
    record_id: str | None
    caller_pseudonym: str | None
    purpose: str | None
    body: dict[str, Any] | None
    body_sha256: str
    prev_hash: str
    hash: str
    purged_by: int | None = None

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


_ENTRY_COLUMNS = (
    "e.seq, e.kind, e.created_at, e.record_id, e.caller_pseudonym, e.purpose,"
    " COALESCE(e.body, ev.record_json), e.body_sha256, e.prev_hash, e.hash, e.purged_by"
)
_ENTRY_FROM = "FROM entry e LEFT JOIN evidence ev ON ev.record_id = e.record_id"


@dataclass
class OutboxItem:
    """One queued GA4 event: state pending | sent | cancelled | failed."""

    id: str
    created_at: str
    tracking_seq: int | None
    record_id: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: str
    last_error: str | None
    done_at: str | None


_OUTBOX_COLUMNS = (
    "id, created_at, tracking_seq, record_id, payload, state, attempts, next_attempt_at,"
    " last_error, done_at"
)


def purge_cutoff(before: str, kind: str) -> str:
    """The UTC timestamp a purge `before` (a calendar date YYYY-MM-DD) cuts at; StoreError for
    anything else (2026-13-01 and 2026-02-30 are not dates) or a kind that has no retention."""
    import datetime

    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", before):
            raise ValueError(before)
        datetime.date.fromisoformat(before)
    except ValueError:
        raise StoreError(
            f"--before {before!r}: expected a calendar date YYYY-MM-DD (UTC), e.g. 2025-12-31"
        ) from None
    if kind not in ("decision", "tracking"):
        raise StoreError(f"cannot purge entries of kind {kind!r}")
    return before + "T00:00:00.000Z"


def _outbox_item(row: tuple[Any, ...]) -> OutboxItem:
    oid, created, seq, record_id, payload, state, attempts, due, error, done = row
    return OutboxItem(
        oid,
        created,
        int(seq) if seq is not None else None,
        record_id,
        json.loads(payload),
        state,
        int(attempts),
        due,
        error,
        done,
    )


@dataclass
class _Appended:
    seq: int
    hash: str
    body: dict[str, Any] = field(default_factory=dict)


class ChainStore:
    """The evidence store: append-only entries in one hash chain, on one backend.

    Connects lazily (on the first use), so a broken store shows up as the error of that use.
    Every method raises `StoreError` (writes: `EvidenceWriteError`) with a one-line message.
    """

    def __init__(self, label: str, connect: Callable[[], _Backend]) -> None:
        self.label = label
        self._connect_backend = connect
        self._db: _Backend | None = None
        self._known_flows: set[str] = set()
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- plumbing
    def _backend(self) -> _Backend:
        if self._db is None:
            db = self._connect_backend()
            try:
                migrate(db)
            except BaseException:
                db.close()
                raise
            self._db = db
            self._opened(db)
        return self._db

    def _opened(self, db: _Backend) -> None:
        """Hook for a backend store after connecting and migrating."""

    @contextlib.contextmanager
    def _errors(self, write: bool = False) -> Iterator[_Backend]:
        """Map driver errors to StoreError (EvidenceWriteError for writes), one line each."""
        try:
            yield self._backend()
        except StoreError:
            raise
        except Exception as exc:
            db = self._db
            if db is None:  # connecting or migrating failed
                message = self._describe_connect_error(exc)
            else:
                message = db.describe_error(exc)
                # Drop the connection (any transaction was rolled back on the way out): the
                # next use reconnects, so a kept store heals after a database restart or a
                # broken connection instead of failing every later use.
                self._db = None
                with contextlib.suppress(Exception):
                    db.close()
            if write:
                raise EvidenceWriteError(message) from exc
            raise StoreError(message) from exc

    def _describe_connect_error(self, exc: BaseException) -> str:
        return f"cannot open the evidence store {self.label}: {_one_line(exc)}"

    def open(self) -> ChainStore:
        """Connect and migrate now (instead of on first use); raises StoreError."""
        with self._errors():
            pass
        return self

    @staticmethod
    def new_record_id() -> str:
        return new_record_id()

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(*self._db.errors):
                self._db.close()
            self._db = None

    @property
    def backend(self) -> str:
        return self._backend().name

    # ---------------------------------------------------------------------------- writes
    def write(self, record: dict[str, Any]) -> str:
        """Insert the record durably and return its id; raises EvidenceWriteError."""
        self.write_many([record])
        return str(record["record_id"])

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Insert records in one transaction (one sync to disk); all or none. EvidenceWriteError."""
        try:
            prepared = [prepare(r) for r in records]
        except (KeyError, TypeError, ValueError) as exc:
            raise EvidenceWriteError(f"{type(exc).__name__}: {exc}") from exc
        self.write_prepared(prepared)

    def write_prepared(self, prepared: list[Prepared]) -> None:
        """Append rows made by `prepare` in one transaction, durable on return (database work
        only: the serialising and hashing happened in `prepare`, in the caller's thread)."""
        flows = [
            p.flow
            for p in prepared
            if p.flow is not None and p.flow.source_sha256 not in self._known_flows
        ]
        contents = {f.source_sha256: flow_content(f) for f in flows}
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            db.executemany(
                "INSERT INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [p.row for p in prepared],
            )
            db.executemany(
                "INSERT INTO evidence_outcome VALUES (?,?,?,?)",
                [o for p in prepared for o in p.outcomes],
            )
            seq, prev = _head(db)
            rows = []
            for p in prepared:
                seq += 1
                h = chain_hash(prev, p.body_sha256)
                rows.append(
                    (
                        seq,
                        "decision",
                        p.created_at,
                        p.record_id,
                        p.caller_pseudonym,
                        None,
                        None,
                        p.body_sha256,
                        prev,
                        h,
                    )
                )
                prev = h
            db.executemany(_INSERT_ENTRY, rows)
            for p in prepared:  # a confirmed phone withdrawal: same transaction as its record
                for body in p.withdrawals:
                    self._append(db, "withdrawal", body)
            _insert_flows(db, contents.values())
        self._known_flows.update(contents)

    def _append(self, db: _Backend, kind: str, body: dict[str, Any]) -> _Appended:
        """Append one non-decision entry; the caller holds the write transaction."""
        seq, prev = _head(db)
        text = canonical_json(body)
        digest = body_sha256(text)
        h = chain_hash(prev, digest)
        db.execute(
            _INSERT_ENTRY,
            (
                seq + 1,
                kind,
                body["created_at"],
                None,
                body.get("caller_pseudonym"),
                body.get("purpose"),
                text,
                digest,
                prev,
                h,
            ),
        )
        return _Appended(seq + 1, h, body)

    def remember_flow(self, flow: Flow) -> None:
        """Keep the flow's content by its source hash (R13); cheap when already stored."""
        if flow.source_sha256 in self._known_flows:
            return
        content = flow_content(flow)
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            _insert_flows(db, [content])
        self._known_flows.add(flow.source_sha256)

    def withdraw(
        self,
        pseudonyms: dict[str, str] | Iterable[tuple[str, str]],
        purpose: str | None = None,
        *,
        source: str = "cli",
    ) -> list[dict[str, Any]]:
        """Record a withdrawal (R17) for each pseudonym (key id -> pseudonym, or (key id,
        pseudonym) pairs: one key may hash several forms of a number) in one transaction;
        `purpose` None withdraws every consent purpose. Returns the entries as recorded."""
        pairs = list(pseudonyms.items() if isinstance(pseudonyms, dict) else pseudonyms)
        if not pairs:
            raise StoreError("no pseudonym to withdraw (an anonymous caller has none)")
        now = utc_now()
        out = []
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            for key_id, pseudonym in pairs:
                body = {
                    "kind": "withdrawal",
                    "created_at": now,
                    "caller_pseudonym": pseudonym,
                    "caller_key_id": key_id,
                    "purpose": purpose or ALL_PURPOSES,
                    "source": source,
                }
                a = self._append(db, "withdrawal", body)
                out.append({"seq": a.seq, "hash": a.hash, **body})
        return out

    def purge(self, before: str, *, source: str = "cli", kind: str = "decision") -> dict[str, Any]:
        """Retention: drop the bodies and pseudonyms of entries of `kind` (decisions, or
        ``tracking`` events with their own retention period) created before `before`
        (``YYYY-MM-DD``, UTC) and record the purge as an entry. Withdrawals are kept: they must
        go on closing the gate. Returns the purge entry."""
        cutoff = purge_cutoff(before, kind)
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            victims = db.query(
                "SELECT seq, record_id FROM entry WHERE kind = ? AND created_at < ?"
                " AND purged_by IS NULL ORDER BY seq",
                (kind, cutoff),
            )
            body: dict[str, Any] = {
                "kind": "purge",
                "created_at": utc_now(),
                "before": before,
                "purged_seqs": [int(r[0]) for r in victims],
                "count": len(victims),
                "source": source,
            }
            if kind != "decision":
                body["purged_kind"] = kind
                # finished outbox rows of purged events go too (pending ones are still owed)
                db.executemany(
                    "DELETE FROM ga4_outbox WHERE tracking_seq = ? AND state <> 'pending'",
                    [(int(r[0]),) for r in victims],
                )
            a = self._append(db, "purge", body)
            ids = [(r[1],) for r in victims if r[1] is not None]
            db.executemany("DELETE FROM evidence_outcome WHERE record_id = ?", ids)
            db.executemany("DELETE FROM evidence WHERE record_id = ?", ids)
            db.executemany(
                "UPDATE entry SET body = NULL, caller_pseudonym = NULL, purged_by = ?"
                " WHERE seq = ?",
                [(a.seq, int(r[0])) for r in victims],
            )
        return {"seq": a.seq, "hash": a.hash, **body}

    def purge_preview(self, before: str, *, kind: str = "decision") -> dict[str, Any]:
        """What `purge(before, kind=kind)` would remove, changing nothing: ``count``, the
        ``oldest``/``newest`` ``created_at`` among them, for decisions their count ``by_status``,
        and ``kept``: entries of other kinds created before the date, by kind."""
        cutoff = purge_cutoff(before, kind)
        with self._errors() as db, db.read_transaction():
            count, oldest, newest = db.query(
                "SELECT count(*), min(created_at), max(created_at) FROM entry"
                " WHERE kind = ? AND created_at < ? AND purged_by IS NULL",
                (kind, cutoff),
            )[0]
            by_status = (
                db.query(
                    "SELECT v.status, count(*) FROM entry e JOIN evidence v"
                    " ON v.record_id = e.record_id WHERE e.kind = 'decision'"
                    " AND e.created_at < ? AND e.purged_by IS NULL GROUP BY v.status",
                    (cutoff,),
                )
                if kind == "decision"
                else []
            )
            kept = db.query(
                "SELECT kind, count(*) FROM entry WHERE kind <> ? AND created_at < ?"
                " GROUP BY kind ORDER BY kind",
                (kind, cutoff),
            )
        return {
            "before": before,
            "kind": kind,
            "count": int(count),
            "oldest": oldest,
            "newest": newest,
            "by_status": {str(k): int(v) for k, v in by_status},
            "kept": {str(k): int(v) for k, v in kept},
        }

    def append_entry(
        self, kind: str, body: dict[str, Any], *, outbox: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Append one entry of `kind` (``tracking``, ``ga4_sent``, ...) whose body is JSON with
        ``created_at`` (and ``caller_pseudonym`` if it names a caller). With `outbox` (``id``,
        ``record_id``, ``payload``) a GA4 outbox row is queued in the same transaction."""
        if kind in ("decision", "withdrawal", "purge"):
            raise StoreError(f"entries of kind {kind!r} have their own method")
        if not body.get("created_at"):
            raise EvidenceWriteError("an entry body needs created_at")
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            a = self._append(db, kind, body)
            if outbox is not None:
                db.execute(
                    f"INSERT INTO ga4_outbox ({_OUTBOX_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        outbox["id"],
                        body["created_at"],
                        a.seq,
                        outbox.get("record_id"),
                        canonical_json(outbox["payload"]),
                        "pending",
                        0,
                        body["created_at"],
                        None,
                        None,
                    ),
                )
        return {"seq": a.seq, "hash": a.hash, **body}

    def outbox_get(self, item_id: str) -> OutboxItem | None:
        with self._errors() as db:
            rows = db.query(f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE id = ?", (item_id,))
        return _outbox_item(rows[0]) if rows else None

    def outbox_due(self, now: str, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt is due at `now` (UTC ISO), oldest first."""
        with self._errors() as db:
            rows = db.query(
                f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE state = 'pending'"
                " AND next_attempt_at <= ? ORDER BY created_at, id LIMIT ?",
                (now, limit),
            )
        return [_outbox_item(r) for r in rows]

    def outbox_claim(self, item_id: str, now: str, lease_until: str) -> OutboxItem | None:
        """Take a due pending item for one delivery attempt: its next attempt moves to
        `lease_until`, so a second sender (another server) does not send it meanwhile."""
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            rows = db.query(
                f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE id = ? AND state = 'pending'"
                " AND next_attempt_at <= ?",
                (item_id, now),
            )
            if not rows:
                return None
            db.execute(
                "UPDATE ga4_outbox SET next_attempt_at = ? WHERE id = ?", (lease_until, item_id)
            )
        return _outbox_item(rows[0])

    def outbox_retry(
        self, item_id: str, *, attempts: int, next_attempt_at: str, error: str | None
    ) -> None:
        """Leave the item pending for a later attempt."""
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            db.execute(
                "UPDATE ga4_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
                " WHERE id = ? AND state = 'pending'",
                (attempts, next_attempt_at, error, item_id),
            )

    def outbox_resolve(
        self,
        item_id: str,
        state: str,
        *,
        attempts: int,
        error: str | None,
        entry: tuple[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        """Finish a pending item (sent | cancelled | failed) and append `entry` (kind, body) to
        the chain in the same transaction. Returns the entry, or None if the item was no longer
        pending (nothing is recorded then)."""
        if state not in ("sent", "cancelled", "failed"):
            raise StoreError(f"unknown outbox state {state!r}")
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            rows = db.query(
                "SELECT 1 FROM ga4_outbox WHERE id = ? AND state = 'pending'", (item_id,)
            )
            if not rows:
                return None
            recorded: dict[str, Any] = {}
            if entry is not None:
                a = self._append(db, entry[0], entry[1])
                recorded = {"seq": a.seq, "hash": a.hash, **entry[1]}
            db.execute(
                "UPDATE ga4_outbox SET state = ?, attempts = ?, last_error = ?, done_at = ?"
                " WHERE id = ?",
                (state, attempts, error, utc_now(), item_id),
            )
        return recorded

    def entries_of_kind(self, kind: str) -> list[Entry]:
        """Every entry of `kind`, oldest first (tests and tools)."""
        with self._errors() as db:
            rows = db.query(
                f"SELECT {_ENTRY_COLUMNS} {_ENTRY_FROM} WHERE e.kind = ? ORDER BY e.seq", (kind,)
            )
        return [_entry(r) for r in rows]

    # ----------------------------------------------------------------------------- reads
    def get(self, record_id: str) -> dict[str, Any] | None:
        """The evidence record with this id (None if unknown or purged)."""
        with self._errors() as db:
            rows = db.query("SELECT record_json FROM evidence WHERE record_id = ?", (record_id,))
        if not rows:
            return None
        result: dict[str, Any] = json.loads(rows[0][0])
        return result

    def count(self) -> int:
        with self._errors() as db:
            return int(db.query("SELECT count(*) FROM evidence")[0][0])

    def entry(self, ident: str) -> Entry | None:
        """An entry by seq (digits) or by a decision's record id."""
        column = "e.seq" if ident.isdigit() else "e.record_id"
        value: Any = int(ident) if ident.isdigit() else ident
        with self._errors() as db:
            rows = db.query(f"SELECT {_ENTRY_COLUMNS} {_ENTRY_FROM} WHERE {column} = ?", (value,))
        return _entry(rows[0]) if rows else None

    def entries_for(self, pseudonyms: Iterable[str]) -> list[Entry]:
        """Every entry naming one of these pseudonyms, oldest first."""
        values = list(pseudonyms)
        if not values:
            return []
        marks = ",".join("?" * len(values))
        with self._errors() as db:
            rows = db.query(
                f"SELECT {_ENTRY_COLUMNS} {_ENTRY_FROM} WHERE e.caller_pseudonym IN ({marks})"
                " ORDER BY e.seq",
                values,
            )
        return [_entry(r) for r in rows]

    def is_withdrawn(
        self, pseudonym: str | Iterable[str], purpose: str, *, after: str = ""
    ) -> bool:
        """Whether a withdrawal of `purpose` (or of every purpose) for this pseudonym (or any of
        several, e.g. one per key) was recorded after the UTC timestamp `after`."""
        values = [pseudonym] if isinstance(pseudonym, str) else list(pseudonym)
        if not values:
            return False
        marks = ",".join("?" * len(values))
        with self._errors() as db:
            rows = db.query(
                "SELECT 1 FROM entry WHERE kind = 'withdrawal'"
                f" AND caller_pseudonym IN ({marks}) AND purpose IN (?, ?) AND created_at > ?"
                " LIMIT 1",
                [*values, purpose, ALL_PURPOSES, after],
            )
        return bool(rows)

    def flow_content(self, source_sha256: str) -> dict[str, Any] | None:
        """The stored flow version: source text and notice content per language (R13)."""
        with self._errors() as db:
            rows = db.query(
                "SELECT flow_id, flow_version, notice_version, source_text, content_json,"
                " first_seen FROM flow_content WHERE source_sha256 = ?",
                (source_sha256,),
            )
        if not rows:
            return None
        fid, version, notice_version, text, content, first_seen = rows[0]
        return {
            "source_sha256": source_sha256,
            "flow_id": fid,
            "flow_version": int(version),
            "notice_version": notice_version,
            "first_seen": first_seen,
            "source_text": text,
            **json.loads(content),
        }

    def flow_versions(self, flow_id: str, version: int) -> list[dict[str, Any]]:
        """Every stored content of flow `flow_id` at `version` (R18: there should be one):
        ``source_sha256``, ``notice_version``, ``first_seen``, ``texts`` (language -> prompt id ->
        text) and ``declaration`` (None for versions stored before it was kept)."""
        with self._errors() as db:
            rows = db.query(
                "SELECT source_sha256, notice_version, content_json, first_seen FROM flow_content"
                " WHERE flow_id = ? AND flow_version = ? ORDER BY first_seen",
                (flow_id, version),
            )
        out = []
        for sha, notice_version, content_json, first_seen in rows:
            content = json.loads(content_json)
            texts = {
                lang: {prompt_id: text for prompt_id, text, *_rest in doc.get("prompts", [])}
                for lang, doc in content.get("notices", {}).items()
            }
            out.append(
                {
                    "source_sha256": sha,
                    "notice_version": notice_version,
                    "first_seen": first_seen,
                    "texts": texts,
                    "declaration": content.get("declaration"),
                }
            )
        return out

    def schema_version(self) -> int:
        with self._errors() as db:
            return int(db.query("SELECT max(version) FROM schema_migrations")[0][0])

    def head(self) -> tuple[int, str]:
        """The chain's last (seq, hash): (0, GENESIS) when empty. Noted outside the store, it is
        an anchor for `verify(anchors=...)`."""
        with self._errors() as db:
            return _head(db)

    def stats(self) -> dict[str, Any]:
        with self._errors() as db:
            kinds = dict(db.query("SELECT kind, count(*) FROM entry GROUP BY kind"))
            statuses = dict(db.query("SELECT status, count(*) FROM evidence GROUP BY status"))
            purged = db.query("SELECT count(*) FROM entry WHERE purged_by IS NOT NULL")[0][0]
            oldest = db.query("SELECT min(created_at) FROM evidence")[0][0]
            flows = db.query("SELECT count(*) FROM flow_content")[0][0]
            seq, head = _head(db)
            version = db.query("SELECT max(version) FROM schema_migrations")[0][0]
        return {
            "backend": db.name,
            "schema_version": int(version),
            "entries": {str(k): int(v) for k, v in kinds.items()},
            "decisions_by_status": {str(k): int(v) for k, v in statuses.items()},
            "purged_entries": int(purged),
            "oldest_decision": oldest,
            "flow_versions": int(flows),
            "head_seq": seq,
            "head_hash": head,
        }

    def verify(self, page: int = 1000, anchors: dict[int, str] | None = None) -> VerifyResult:
        """Recompute every body hash and link; report the first broken link. Reads the chain in
        pages of `page` entries inside one read snapshot, so a store of millions of records is
        checked in bounded memory and concurrent appends do not disturb it.

        `anchors` are (seq -> hash) heads noted earlier outside the store: the chain must still
        hold each with that hash. This finds what a chain cannot show by itself: entries cut off
        its end, or the whole chain rewritten and relinked."""
        if page < 1:
            raise ValueError("verify: page must be at least 1")
        anchors = anchors or {}
        with self._errors() as db, db.read_transaction():
            total, low = db.query("SELECT count(*), min(seq) FROM entry")[0]
            total = int(total)
            purges = {
                int(seq): set(json.loads(body).get("purged_seqs", []))
                for seq, body in db.query("SELECT seq, body FROM entry WHERE kind = 'purge'")
                if body is not None
            }
            # from the lowest seq present (a forged seq 0 or below is a break, not skipped)
            expected, prev, last = 1, GENESIS, min(0, int(low) - 1) if low is not None else 0
            while True:
                rows = db.query(
                    "SELECT e.seq, e.kind, e.caller_pseudonym, e.body, ev.record_json,"
                    " e.body_sha256, e.prev_hash, e.hash, e.purged_by"
                    f" {_ENTRY_FROM} WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                    (last, page),
                )
                if not rows:
                    break
                for row in rows:
                    reason = _check_entry(row, expected, prev, purges)
                    if reason is not None:
                        seq = int(row[0])
                        if reason.startswith("missing seq"):
                            return _broken(total, expected - 1, prev, expected, reason)
                        return _broken(total, expected - 1, prev, seq, reason)
                    prev, last = str(row[7]), int(row[0])
                    noted = anchors.get(last)
                    if noted is not None and noted != prev:
                        return _broken(
                            total,
                            last,
                            prev,
                            last,
                            f"anchor differs: the hash of seq {last} is not {noted}, the one"
                            " noted: the chain was rewritten at or before this entry",
                        )
                    expected += 1
        if total != expected - 1:  # cannot happen in one snapshot; never report ok if it does
            return _broken(total, expected - 1, prev, expected, "entry count differs from chain")
        beyond = [seq for seq in sorted(anchors) if seq > expected - 1]
        if beyond:
            return _broken(
                total,
                expected - 1,
                prev,
                beyond[0],
                f"anchor beyond the head: seq {beyond[0]} was noted, the chain ends at seq"
                f" {expected - 1}: entries were cut off its end",
            )
        return VerifyResult(True, total, expected - 1, prev)


def _check_entry(
    row: tuple[Any, ...], expected: int, prev: str, purges: dict[int, set[int]]
) -> str | None:
    """Why this chain entry is broken, or None."""
    seq_, kind, pseudonym, body, record_json, digest, prev_hash, h, purged_by = row
    seq = int(seq_)
    if seq != expected:
        return f"missing seq: entry {expected} is gone (the next present is {seq})"
    if prev_hash != prev:
        if seq > 1:
            return "link changed: its prev_hash is not the hash of the entry before"
        return "link changed: the first entry's prev_hash is not the genesis value"
    text = body if kind != "decision" else record_json
    if text is None:
        if purged_by is None or seq not in purges.get(int(purged_by), set()):
            return f"body missing: the {kind} body was deleted without a purge"
    else:
        try:
            parsed = json.loads(text)
        except ValueError:
            return "body changed: it is no longer valid JSON"
        if body_sha256(canonical_json(parsed)) != digest:
            return "body changed: its SHA-256 differs from body_sha256"
        named = (
            parsed.get("call", {}).get("caller_pseudonym")
            if kind == "decision"
            else parsed.get("caller_pseudonym")
        )
        if named != pseudonym:
            return "index changed: caller_pseudonym differs from the body"
    if chain_hash(prev, digest) != h:
        return "link changed: hash is not sha256(prev_hash + body_sha256)"
    return None


def _broken(entries: int, head_seq: int, head: str, seq: int, reason: str) -> VerifyResult:
    return VerifyResult(False, entries, head_seq, head, seq, reason)


def _entry(row: tuple[Any, ...]) -> Entry:
    seq, kind, created, record_id, pseudonym, purpose, text, digest, prev, h, purged_by = row
    return Entry(
        int(seq),
        kind,
        created,
        record_id,
        pseudonym,
        purpose,
        json.loads(text) if text is not None else None,
        digest,
        prev,
        h,
        int(purged_by) if purged_by is not None else None,
    )


def new_record_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered, so every index keyed by record id grows at its end instead of touching a random
    page per insert (uuid4), which keeps commits small and a large store's working set cached.
    """
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return f"{value:032x}"


def _head(db: _Backend) -> tuple[int, str]:
    rows = db.query("SELECT seq, hash FROM entry ORDER BY seq DESC LIMIT 1")
    return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)


def flow_content(flow: Flow) -> tuple[Any, ...]:
    """The flow_content row: the YAML text (if the file still has the hash the flow was loaded
    with) and, per language, the notice document whose SHA-256 is the record's notice_sha256."""
    text: str | None = None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        data = Path(flow.source_path).read_bytes()
        if hashlib.sha256(data).hexdigest() == flow.source_sha256:
            text = data.decode("utf-8")
    notices = {lang: notice_document(flow, lang) for lang in flow.languages}
    content = {
        "notice_sha256": dict(flow.notice_sha256),
        "notices": notices,
        "declaration": declaration(flow),
    }
    return (
        flow.source_sha256,
        flow.id,
        flow.version,
        flow.notice_version,
        text,
        canonical_json(content),
        utc_now(),
    )


def _insert_flows(db: _Backend, rows: Iterable[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO flow_content VALUES (?,?,?,?,?,?,?) ON CONFLICT (source_sha256) DO NOTHING",
        list(rows),
    )


def migrate(db: _Backend) -> int:
    """Apply pending migrations in one locked transaction; idempotent. Returns the version."""
    latest = MIGRATIONS[-1].version
    if db.table_exists("schema_migrations"):
        current = db.query("SELECT max(version) FROM schema_migrations")[0][0]
        if current == latest:
            return latest
    with db.write_transaction():
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {int(r[0]) for r in db.query("SELECT version FROM schema_migrations")}
        for m in MIGRATIONS:
            if m.version in done:
                continue
            for statement in m.sql.format(**db.dialect).split(";\n"):
                if statement.strip():
                    db.execute(statement)
            if m.step is not None:
                m.step(db)
            db.execute(
                "INSERT INTO schema_migrations VALUES (?,?,?)",
                (m.version, m.description, utc_now()),
            )
    return latest


# ---------------------------------------------------------------------------- the two stores
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
        super().__init__(str(self.path), lambda: _SqliteBackend(self.path, timeout, any_thread))
        #: A server sets this: WAL checkpoints (which copy pages into the database file and sync
        #: it, tens of ms) then run in a thread of their own instead of inside a commit.
        self.background_checkpoints = background_checkpoints
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    def _describe_connect_error(self, exc: BaseException) -> str:
        return _describe_sqlite_error(self.path, exc)

    def _connect(self) -> sqlite3.Connection:
        """The raw connection (tests and tools); connects and migrates on first use."""
        with self._errors() as db:
            assert isinstance(db, _SqliteBackend)
            return db.conn

    def _opened(self, db: _Backend) -> None:
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
        super().__init__(redact(url), lambda: _PostgresBackend(url, timeout))

    def _describe_connect_error(self, exc: BaseException) -> str:
        if type(exc).__name__ == "ProgrammingError" and "invalid" in str(exc):
            return f"not a valid PostgreSQL URL {redact(self.url)}: {_one_line(exc)}"
        return f"cannot use PostgreSQL at {redact(self.url)}: {_one_line(exc)}"


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
