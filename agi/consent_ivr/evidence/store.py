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

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent_ivr.evidence.backends import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    describe_sqlite_error,
    one_line,
    redact,
)
from consent_ivr.evidence.entries import (
    ENTRY_COLUMNS,
    ENTRY_FROM,
    GENESIS,
    INSERT_ENTRY,
    Entry,
    append,
    chain_hash,
    chain_head,
    entry_from_row,
)
from consent_ivr.evidence.errors import EvidenceWriteError, StoreError
from consent_ivr.evidence.migrations import MIGRATIONS, migrate
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import Prepared, body_sha256, canonical_json, prepare
from consent_ivr.flow.model import Flow
from consent_ivr.flow.notice import declaration, notice_document

__all__ = [
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
    "open_store",
    "redact",
]

#: The purpose value of a withdrawal of every consent purpose.
ALL_PURPOSES = "*"


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


class ChainStore:
    """The evidence store: append-only entries in one hash chain, on one backend.

    Connects lazily (on the first use), so a broken store shows up as the error of that use.
    Every method raises `StoreError` (writes: `EvidenceWriteError`) with a one-line message.
    """

    def __init__(self, label: str, connect: Callable[[], Backend]) -> None:
        self.label = label
        self._connect_backend = connect
        self._db: Backend | None = None
        self._known_flows: set[str] = set()
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------- plumbing
    def _backend(self) -> Backend:
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

    def _opened(self, db: Backend) -> None:
        """Hook for a backend store after connecting and migrating."""

    @contextlib.contextmanager
    def _errors(self, write: bool = False) -> Iterator[Backend]:
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
        return f"cannot open the evidence store {self.label}: {one_line(exc)}"

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
            seq, prev = chain_head(db)
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
            db.executemany(INSERT_ENTRY, rows)
            for p in prepared:  # a confirmed phone withdrawal: same transaction as its record
                for body in p.withdrawals:
                    append(db, "withdrawal", body)
            _insert_flows(db, contents.values())
        self._known_flows.update(contents)

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
                a = append(db, "withdrawal", body)
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
            a = append(db, "purge", body)
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
            a = append(db, kind, body)
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
                a = append(db, entry[0], entry[1])
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
                f"SELECT {ENTRY_COLUMNS} {ENTRY_FROM} WHERE e.kind = ? ORDER BY e.seq", (kind,)
            )
        return [entry_from_row(r) for r in rows]

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
            rows = db.query(f"SELECT {ENTRY_COLUMNS} {ENTRY_FROM} WHERE {column} = ?", (value,))
        return entry_from_row(rows[0]) if rows else None

    def entries_for(self, pseudonyms: Iterable[str]) -> list[Entry]:
        """Every entry naming one of these pseudonyms, oldest first."""
        values = list(pseudonyms)
        if not values:
            return []
        marks = ",".join("?" * len(values))
        with self._errors() as db:
            rows = db.query(
                f"SELECT {ENTRY_COLUMNS} {ENTRY_FROM} WHERE e.caller_pseudonym IN ({marks})"
                " ORDER BY e.seq",
                values,
            )
        return [entry_from_row(r) for r in rows]

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
            return chain_head(db)

    def stats(self) -> dict[str, Any]:
        with self._errors() as db:
            kinds = dict(db.query("SELECT kind, count(*) FROM entry GROUP BY kind"))
            statuses = dict(db.query("SELECT status, count(*) FROM evidence GROUP BY status"))
            purged = db.query("SELECT count(*) FROM entry WHERE purged_by IS NOT NULL")[0][0]
            oldest = db.query("SELECT min(created_at) FROM evidence")[0][0]
            flows = db.query("SELECT count(*) FROM flow_content")[0][0]
            seq, last = chain_head(db)
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
            "head_hash": last,
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
                    f" {ENTRY_FROM} WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
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


def new_record_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered, so every index keyed by record id grows at its end instead of touching a random
    page per insert (uuid4), which keeps commits small and a large store's working set cached.
    """
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return f"{value:032x}"


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


def _insert_flows(db: Backend, rows: Iterable[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO flow_content VALUES (?,?,?,?,?,?,?) ON CONFLICT (source_sha256) DO NOTHING",
        list(rows),
    )


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
