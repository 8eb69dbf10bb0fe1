"""The GA4 outbox's queries: queue an event (with its tracking entry), find the due items, claim
one for a delivery attempt, leave it for a retry, resolve it (with its entry in the chain), and drop
finished rows of purged events. Each runs on a backend inside the caller's transaction; `ChainStore`
holds the lock and the transaction (docs/tracking.md describes the delivery).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.entries import append
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import canonical_json


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


def queue_event(db: Backend, outbox: dict[str, Any], created_at: str, tracking_seq: int) -> None:
    """Queue the event `outbox` (``id``, ``record_id``, ``payload``) of the tracking entry
    `tracking_seq`, pending and due at once."""
    db.execute(
        f"INSERT INTO ga4_outbox ({_OUTBOX_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            outbox["id"],
            created_at,
            tracking_seq,
            outbox.get("record_id"),
            canonical_json(outbox["payload"]),
            "pending",
            0,
            created_at,
            None,
            None,
        ),
    )


def get_item(db: Backend, item_id: str) -> OutboxItem | None:
    rows = db.query(f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE id = ?", (item_id,))
    return _outbox_item(rows[0]) if rows else None


def due_items(db: Backend, now: str, limit: int) -> list[OutboxItem]:
    """Pending items whose next attempt is due at `now` (UTC ISO), oldest first."""
    rows = db.query(
        f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE state = 'pending'"
        " AND next_attempt_at <= ? ORDER BY created_at, id LIMIT ?",
        (now, limit),
    )
    return [_outbox_item(r) for r in rows]


def claim_item(db: Backend, item_id: str, now: str, lease_until: str) -> OutboxItem | None:
    """Take a due pending item: its next attempt moves to `lease_until` (write transaction)."""
    rows = db.query(
        f"SELECT {_OUTBOX_COLUMNS} FROM ga4_outbox WHERE id = ? AND state = 'pending'"
        " AND next_attempt_at <= ?",
        (item_id, now),
    )
    if not rows:
        return None
    db.execute("UPDATE ga4_outbox SET next_attempt_at = ? WHERE id = ?", (lease_until, item_id))
    return _outbox_item(rows[0])


def retry_item(
    db: Backend, item_id: str, attempts: int, next_attempt_at: str, error: str | None
) -> None:
    """Leave the item pending for a later attempt."""
    db.execute(
        "UPDATE ga4_outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
        " WHERE id = ? AND state = 'pending'",
        (attempts, next_attempt_at, error, item_id),
    )


def resolve_item(
    db: Backend,
    item_id: str,
    state: str,
    attempts: int,
    error: str | None,
    entry: tuple[str, dict[str, Any]] | None,
) -> dict[str, Any] | None:
    """Finish a pending item and append `entry` (kind, body) to the chain (write transaction).
    Returns the entry, or None if the item was no longer pending (nothing is recorded then)."""
    rows = db.query("SELECT 1 FROM ga4_outbox WHERE id = ? AND state = 'pending'", (item_id,))
    if not rows:
        return None
    recorded: dict[str, Any] = {}
    if entry is not None:
        a = append(db, entry[0], entry[1])
        recorded = {"seq": a.seq, "hash": a.hash, **entry[1]}
    db.execute(
        "UPDATE ga4_outbox SET state = ?, attempts = ?, last_error = ?, done_at = ? WHERE id = ?",
        (state, attempts, error, utc_now(), item_id),
    )
    return recorded


def drop_finished(db: Backend, tracking_seqs: list[int]) -> None:
    """Delete the finished rows of these (purged) tracking events; pending ones are still owed."""
    db.executemany(
        "DELETE FROM ga4_outbox WHERE tracking_seq = ? AND state <> 'pending'",
        [(seq,) for seq in tracking_seqs],
    )
