"""Retention: purge the bodies and pseudonyms of old decisions (or tracking events) and record
the purge as an entry of the chain; preview what a purge would remove. A purge keeps every seq,
hash and body_sha256, so the chain still verifies; withdrawals are never purged (they must go on
closing the gate). Each runs on a backend inside `ChainStore`'s lock and transaction.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.entries import append
from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.outbox import drop_finished
from consent_ivr.evidence.pseudonym import utc_now


def purge_cutoff(before: str, kind: str) -> str:
    """The UTC timestamp a purge `before` (a calendar date YYYY-MM-DD) cuts at; StoreError for
    anything else (2026-13-01 and 2026-02-30 are not dates) or a kind that has no retention."""
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


def purge_entries(db: Backend, before: str, cutoff: str, source: str, kind: str) -> dict[str, Any]:
    """Purge the entries of `kind` created before `cutoff` (``purge_cutoff(before, kind)``) and
    append the purge entry, which is returned (write transaction)."""
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
        drop_finished(db, [int(r[0]) for r in victims])
    a = append(db, "purge", body)
    ids = [(r[1],) for r in victims if r[1] is not None]
    db.executemany("DELETE FROM evidence_outcome WHERE record_id = ?", ids)
    db.executemany("DELETE FROM evidence WHERE record_id = ?", ids)
    db.executemany(
        "UPDATE entry SET body = NULL, caller_pseudonym = NULL, purged_by = ? WHERE seq = ?",
        [(a.seq, int(r[0])) for r in victims],
    )
    return {"seq": a.seq, "hash": a.hash, **body}


def preview_purge(db: Backend, before: str, cutoff: str, kind: str) -> dict[str, Any]:
    """What `purge_entries` would remove, changing nothing (read transaction)."""
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
