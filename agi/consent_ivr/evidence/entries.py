"""The hash chain's entries on one backend: how an entry is linked to the one before, the chain's
head, appending entries (decisions with their evidence rows, and entries of every other kind),
and reading entries back (`Entry`).

    body_sha256 = SHA-256( canonical JSON of the body, UTF-8 )        (64 lowercase hex)
    hash        = SHA-256( ASCII( prev_hash + body_sha256 ) )         (hex strings concatenated)
    prev_hash   = hash of entry seq-1, or GENESIS (64 zeros) for seq 1

The caller of `append` holds the write transaction (`Backend.write_transaction`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.record import Prepared, body_sha256, canonical_json

GENESIS = "0" * 64

INSERT_ENTRY = (
    "INSERT INTO entry (seq, kind, created_at, record_id, caller_pseudonym, purpose, body,"
    " body_sha256, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)"
)

ENTRY_COLUMNS = (
    "e.seq, e.kind, e.created_at, e.record_id, e.caller_pseudonym, e.purpose,"
    " COALESCE(e.body, ev.record_json), e.body_sha256, e.prev_hash, e.hash, e.purged_by"
)
ENTRY_FROM = "FROM entry e LEFT JOIN evidence ev ON ev.record_id = e.record_id"


def chain_hash(prev_hash: str, body_hash: str) -> str:
    """hash = SHA-256 of the ASCII text prev_hash + body_sha256 (both 64 lowercase hex)."""
    return hashlib.sha256((prev_hash + body_hash).encode("ascii")).hexdigest()


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


def entry_from_row(row: tuple[Any, ...]) -> Entry:
    """The `Entry` of a row selected as ``ENTRY_COLUMNS ENTRY_FROM``."""
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


@dataclass
class Appended:
    seq: int
    hash: str
    body: dict[str, Any] = field(default_factory=dict)


def chain_head(db: Backend) -> tuple[int, str]:
    """The chain's last (seq, hash): (0, GENESIS) when empty."""
    rows = db.query("SELECT seq, hash FROM entry ORDER BY seq DESC LIMIT 1")
    return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)


def append(db: Backend, kind: str, body: dict[str, Any]) -> Appended:
    """Append one non-decision entry; the caller holds the write transaction."""
    seq, prev = chain_head(db)
    text = canonical_json(body)
    digest = body_sha256(text)
    h = chain_hash(prev, digest)
    db.execute(
        INSERT_ENTRY,
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
    return Appended(seq + 1, h, body)


def append_decisions(db: Backend, prepared: list[Prepared]) -> None:
    """Insert the decisions' evidence rows and chain them, then the withdrawal entries of a
    confirmed phone withdrawal (same transaction as its record); the caller holds it."""
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
