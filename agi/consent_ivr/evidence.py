"""Durable evidence of each consent decision: the record and the SQLite store.

A record pins what the caller heard and did (R13) and is written — committed and synced — before
any channel variable says ``granted`` (R12). The caller number never enters a record: only its
keyed HMAC-SHA256 pseudonym with the id of the key (R14; see `pseudonym`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consent_ivr.engine import Decision
from consent_ivr.flow.model import Flow
from consent_ivr.pseudonym import ConfigError, PseudonymKey, normalise_number, utc_now

if TYPE_CHECKING:
    from consent_ivr.driver import CallFacts

# re-exported: the record names them
__all__ = [
    "DEFAULT_STORE",
    "ConfigError",
    "EvidenceWriteError",
    "PseudonymKey",
    "SqliteEvidenceStore",
    "build_record",
    "normalise_number",
    "utc_now",
]

DEFAULT_STORE = "/var/lib/consent-ivr/evidence.sqlite3"


class EvidenceWriteError(Exception):
    """The record could not be made durable."""


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
        # flat records of scalars: a shallow copy is the dict (dataclasses.asdict deep-copies)
        "plays": [dict(vars(p)) for p in decision.plays],
        "keys": [dict(vars(k)) for k in decision.keys],
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

    def __init__(self, path: str | os.PathLike[str], *, background_checkpoints: bool = False):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        #: A server sets this: WAL checkpoints (which copy pages into the database file and sync
        #: it, tens of ms) then run in a thread of their own instead of inside a commit.
        self.background_checkpoints = background_checkpoints
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            if self.background_checkpoints:
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpointer = threading.Thread(
                    target=self._checkpoint_loop, name="evidence-checkpoint", daemon=True
                )
                self._checkpointer.start()
            self._conn = conn
        return self._conn

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
            prepared = [prepare(r) for r in records]
        except (KeyError, TypeError, ValueError) as exc:
            raise EvidenceWriteError(f"{type(exc).__name__}: {exc}") from exc
        self.write_prepared(prepared)

    def write_prepared(self, prepared: list[Prepared]) -> None:
        """Insert rows made by `prepare` (serialised elsewhere: this does only database work)."""
        try:
            conn = self._connect()
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [p.row for p in prepared],
                )
                conn.executemany(
                    "INSERT INTO evidence_outcome VALUES (?,?,?,?)",
                    [o for p in prepared for o in p.outcomes],
                )
        except (sqlite3.Error, OSError) as exc:
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
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class Prepared:
    """A record as database rows, JSON already serialised."""

    record_id: str
    row: tuple[Any, ...]
    outcomes: tuple[tuple[str, str, str, str], ...]


def prepare(record: dict[str, Any]) -> Prepared:
    """Serialise a record into its rows (the CPU part of a write; KeyError/TypeError if bad)."""
    return Prepared(
        str(record["record_id"]),
        _evidence_row(record),
        tuple(
            (record["record_id"], o["purpose"], o["outcome"], o["reason"])
            for o in record["outcomes"]
        ),
    )


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
