"""`ChainStore`: the evidence store's one interface, on either backend.

It connects lazily and migrates on first use, maps every driver error to a one-line `StoreError`
(`EvidenceWriteError` for writes) and drops a broken connection so that the next use reconnects,
serialises writers (a lock here, the backend's write lock across processes), and offers: appending
decisions, withdrawals and other entries, the chain's head and entries, withdrawal look-ups, the
flow versions kept by hash, retention purges, the GA4 outbox, statistics and verification. The
queries themselves live in `entries`, `flowcontent`, `retention`, `outbox` and `verify`; the
concrete stores and `open_store` in `store`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from consent_ivr.evidence.backends import Backend, one_line
from consent_ivr.evidence.entries import (
    ENTRY_COLUMNS,
    ENTRY_FROM,
    Entry,
    append,
    append_decisions,
    chain_head,
    entry_from_row,
)
from consent_ivr.evidence.errors import EvidenceWriteError, StoreError
from consent_ivr.evidence.flowcontent import (
    content_row,
    insert_flows,
    stored_content,
    stored_versions,
)
from consent_ivr.evidence.migrations import migrate
from consent_ivr.evidence.outbox import (
    OutboxItem,
    claim_item,
    due_items,
    get_item,
    queue_event,
    resolve_item,
    retry_item,
)
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import Prepared, new_record_id, prepare
from consent_ivr.evidence.retention import preview_purge, purge_cutoff, purge_entries
from consent_ivr.evidence.verify import VerifyResult, verify_chain
from consent_ivr.flow.model import Flow

#: The purpose value of a withdrawal of every consent purpose.
ALL_PURPOSES = "*"


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
        contents = {f.source_sha256: content_row(f) for f in flows}
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            append_decisions(db, prepared)
            insert_flows(db, contents.values())
        self._known_flows.update(contents)

    def remember_flow(self, flow: Flow) -> None:
        """Keep the flow's content by its source hash (R13); cheap when already stored."""
        if flow.source_sha256 in self._known_flows:
            return
        content = content_row(flow)
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            insert_flows(db, [content])
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
            return purge_entries(db, before, cutoff, source, kind)

    def purge_preview(self, before: str, *, kind: str = "decision") -> dict[str, Any]:
        """What `purge(before, kind=kind)` would remove, changing nothing: ``count``, the
        ``oldest``/``newest`` ``created_at`` among them, for decisions their count ``by_status``,
        and ``kept``: entries of other kinds created before the date, by kind."""
        cutoff = purge_cutoff(before, kind)
        with self._errors() as db, db.read_transaction():
            return preview_purge(db, before, cutoff, kind)

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
                queue_event(db, outbox, body["created_at"], a.seq)
        return {"seq": a.seq, "hash": a.hash, **body}

    def outbox_get(self, item_id: str) -> OutboxItem | None:
        with self._errors() as db:
            return get_item(db, item_id)

    def outbox_due(self, now: str, limit: int = 100) -> list[OutboxItem]:
        """Pending items whose next attempt is due at `now` (UTC ISO), oldest first."""
        with self._errors() as db:
            return due_items(db, now, limit)

    def outbox_claim(self, item_id: str, now: str, lease_until: str) -> OutboxItem | None:
        """Take a due pending item for one delivery attempt: its next attempt moves to
        `lease_until`, so a second sender (another server) does not send it meanwhile."""
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            return claim_item(db, item_id, now, lease_until)

    def outbox_retry(
        self, item_id: str, *, attempts: int, next_attempt_at: str, error: str | None
    ) -> None:
        """Leave the item pending for a later attempt."""
        with self._lock, self._errors(write=True) as db, db.write_transaction():
            retry_item(db, item_id, attempts, next_attempt_at, error)

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
            return resolve_item(db, item_id, state, attempts, error, entry)

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

    def latest_decision(self, pseudonyms: Iterable[str], flow_id: str) -> dict[str, Any] | None:
        """The newest record of flow `flow_id` for any of these pseudonyms (e.g. one per key)
        that decided something (granted, declined or partial), or None. One statement: a probe
        of the index (caller_pseudonym, flow_id, created_at) per pseudonym (`LATEST_DECISION`),
        O(log n) in the store's size, one round trip to the database."""
        values = list(pseudonyms)
        if not values:
            return None
        params = [value for pseudonym in values for value in (pseudonym, flow_id)]
        with self._errors() as db:
            rows = db.query(latest_decision_sql(len(values)), params)
        result: dict[str, Any] | None = json.loads(rows[0][2]) if rows else None
        return result

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
            return stored_content(db, source_sha256)

    def flow_versions(self, flow_id: str, version: int) -> list[dict[str, Any]]:
        """Every stored content of flow `flow_id` at `version` (R18: there should be one):
        ``source_sha256``, ``notice_version``, ``first_seen``, ``texts`` (language -> prompt id ->
        text) and ``declaration`` (None for versions stored before it was kept)."""
        with self._errors() as db:
            return stored_versions(db, flow_id, version)

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
        with self._errors() as db:
            return verify_chain(db, page, anchors or {})


#: One pseudonym's newest deciding record of a flow: one descent of `evidence_returning`
#: (a caller with 20,000 records costs what one with one record costs).
LATEST_DECISION = (
    "SELECT * FROM (SELECT created_at, record_id, record_json FROM evidence"
    " WHERE caller_pseudonym = ? AND flow_id = ?"
    " AND status IN ('granted', 'declined', 'partial')"
    " ORDER BY created_at DESC LIMIT 1) AS p{n}"
)


def latest_decision_sql(count: int) -> str:
    """`LATEST_DECISION` for `count` pseudonyms in one statement, the newest of them first."""
    parts = [LATEST_DECISION.format(n=n) for n in range(count)]
    return " UNION ALL ".join(parts) + " ORDER BY 1 DESC, 2 DESC LIMIT 1"
