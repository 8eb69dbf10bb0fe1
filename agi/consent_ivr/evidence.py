"""Durable evidence of each consent decision: record building, caller pseudonyms, the SQLite store.

A record pins what the caller heard and did (R13) and is written — committed and synced — before
any channel variable says ``granted`` (R12). The caller number never enters a record: only its
keyed HMAC-SHA256 pseudonym with the id of the key (R14). The key comes from the environment
(``CONSENT_IVR_HMAC_KEY``) or a key file (``CONSENT_IVR_HMAC_KEY_FILE``); there is no default key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import queue
import sqlite3
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consent_ivr.engine import Decision
from consent_ivr.flow.model import Flow

DEFAULT_STORE = "/var/lib/consent-ivr/evidence.sqlite3"
MIN_KEY_BYTES = 16


class ConfigError(Exception):
    """A start-up configuration problem, with a message an administrator can act on."""


class EvidenceWriteError(Exception):
    """The record could not be made durable."""


@dataclass(frozen=True)
class PseudonymKey:
    """The HMAC key for caller pseudonyms and its public id (first 12 hex of its SHA-256)."""

    secret: bytes
    key_id: str

    @classmethod
    def from_bytes(cls, secret: bytes) -> PseudonymKey:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the HMAC key is {len(secret)} bytes; at least {MIN_KEY_BYTES} bytes are required"
            )
        return cls(secret, "k-" + hashlib.sha256(secret).hexdigest()[:12])

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> PseudonymKey:
        env = os.environ if environ is None else environ
        value = env.get("CONSENT_IVR_HMAC_KEY")
        if value:
            return cls.from_bytes(value.encode("utf-8"))
        key_file = env.get("CONSENT_IVR_HMAC_KEY_FILE")
        if key_file:
            try:
                data = Path(key_file).read_bytes().strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read the HMAC key file {key_file}: {exc.strerror or exc}"
                ) from None
            return cls.from_bytes(data)
        raise ConfigError(
            "no HMAC key for caller pseudonyms: set CONSENT_IVR_HMAC_KEY or "
            "CONSENT_IVR_HMAC_KEY_FILE (a file with at least 16 random bytes, e.g. "
            "`head -c 32 /dev/urandom | base64 > /etc/consent-ivr/hmac.key`)"
        )

    def pseudonym(self, caller: str) -> str | None:
        """HMAC-SHA256 of the normalised number; None for an absent/anonymous caller."""
        number = normalise_number(caller)
        if number is None:
            return None
        return hmac.new(self.secret, number.encode("utf-8"), hashlib.sha256).hexdigest()


def normalise_number(caller: str) -> str | None:
    """Keep a leading + and the digits; None when nothing identifying is left (e.g. `unknown`)."""
    text = caller.strip()
    digits = "".join(c for c in text if c.isdigit())
    if not digits:
        return None
    return ("+" if text.startswith("+") else "") + digits


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class CallFacts:
    """What the driver knows about the call, minus anything identifying in clear."""

    uniqueid: str
    channel_type: str
    started_at: str
    caller_pseudonym: str | None
    key_id: str
    transport: str  # "agi" | "fastagi"


def build_record(
    decision: Decision, flow: Flow, facts: CallFacts, record_id: str
) -> dict[str, Any]:
    """The evidence record as a JSON-ready dict (schema version 1)."""
    lang = decision.language
    return {
        "schema": 1,
        "record_id": record_id,
        "created_at": utc_now(),
        "call": {
            "uniqueid": facts.uniqueid,
            "channel_type": facts.channel_type,
            "transport": facts.transport,
            "started_at": facts.started_at,
            "caller_pseudonym": facts.caller_pseudonym,
            "caller_key_id": facts.key_id,
        },
        "flow": {
            "id": flow.id,
            "version": flow.version,
            "sha256": flow.source_sha256,
            "notice_version": flow.notice_version,
            "notice_sha256": flow.notice_sha256.get(lang, ""),
            "language": lang,
        },
        "status": decision.status,
        "reason": decision.reason,
        "informed": decision.informed,
        "hung_up": decision.hung_up,
        "outcomes": [
            {
                "purpose": o.purpose,
                "outcome": o.outcome.value,
                "reason": o.reason.value,
                "decided_ms": o.decided_ms,
            }
            for o in decision.outcomes
        ],
        "plays": [asdict(p) for p in decision.plays],
        "keys": [asdict(k) for k in decision.keys],
        "errors": list(decision.errors),
    }


SCHEMA = """
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


class SqliteEvidenceStore:
    """Append-only evidence in an SQLite file (WAL, synchronous=FULL: a commit is on disk)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    @staticmethod
    def new_record_id() -> str:
        return uuid.uuid4().hex

    def write(self, record: dict[str, Any]) -> str:
        """Insert the record durably and return its id; raises EvidenceWriteError."""
        self.write_many([record])
        return str(record["record_id"])

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Insert records in one transaction (one sync to disk); all or none. EvidenceWriteError."""
        try:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [_evidence_row(r) for r in records],
                )
                conn.executemany(
                    "INSERT INTO evidence_outcome VALUES (?,?,?,?)",
                    [
                        (r["record_id"], o["purpose"], o["outcome"], o["reason"])
                        for r in records
                        for o in r["outcomes"]
                    ],
                )
        except (sqlite3.Error, OSError, KeyError, TypeError) as exc:
            raise EvidenceWriteError(f"{type(exc).__name__}: {exc}") from exc

    def get(self, record_id: str) -> dict[str, Any] | None:
        row = (
            self._connect()
            .execute("SELECT record_json FROM evidence WHERE record_id = ?", (record_id,))
            .fetchone()
        )
        if row is None:
            return None
        result: dict[str, Any] = json.loads(row[0])
        return result

    def count(self) -> int:
        return int(self._connect().execute("SELECT count(*) FROM evidence").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _evidence_row(record: dict[str, Any]) -> tuple[Any, ...]:
    flow = record["flow"]
    call = record["call"]
    return (
        record["record_id"],
        record["created_at"],
        call["uniqueid"],
        flow["id"],
        flow["version"],
        flow["sha256"],
        flow["notice_version"],
        flow["notice_sha256"],
        flow["language"],
        call["caller_pseudonym"],
        call["caller_key_id"],
        record["status"],
        record["reason"],
        json.dumps(record, sort_keys=True, ensure_ascii=False),
    )


class GroupCommitWriter:
    """Many calls, one writer thread: records queued while a commit runs share the next commit.

    Each record is still on disk before its caller's `write` returns (R12), but a burst of N
    decisions costs one fsync instead of N. If a batch fails as a whole, its records are retried
    one by one so that one bad record cannot fail the others.
    """

    def __init__(self, store: SqliteEvidenceStore, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="evidence-writer", daemon=True)
        self._thread.start()
        self.batches = 0
        self.records = 0

    def new_record_id(self) -> str:
        return self.store.new_record_id()

    async def write(self, record: dict[str, Any]) -> str:
        """Queue the record and wait until it is committed; raises EvidenceWriteError."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(record, loop, future))
        await future
        return str(record["record_id"])

    def close(self) -> None:
        """Finish every queued record, then stop the thread and close the store."""
        self._queue.put(None)
        self._thread.join()
        self.store.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
        self.store.close()

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            self.store.write_many([p.record for p in batch])
        except EvidenceWriteError as exc:
            if len(batch) == 1:
                batch[0].settle(exc)
                return
            for p in batch:
                try:
                    self.store.write_many([p.record])
                except EvidenceWriteError as single:
                    p.settle(single)
                else:
                    p.settle(None)
            return
        self.batches += 1
        self.records += len(batch)
        for p in batch:
            p.settle(None)


@dataclass
class _Pending:
    record: dict[str, Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]

    def settle(self, error: BaseException | None) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(error)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(apply)


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on any error (nothing half-written)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
