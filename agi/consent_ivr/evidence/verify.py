"""Verifying the hash chain: recompute every body hash and link, report the first broken one.

What `consent-ivr evidence verify` runs (docs/evidence.md): a break names its seq and why (a body
changed, a link changed, an entry missing, a body deleted without a purge, an index that no longer
matches its body, or a head noted outside the store that the chain no longer holds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.entries import ENTRY_FROM, GENESIS, chain_hash
from consent_ivr.evidence.record import body_sha256, canonical_json


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


def verify_chain(db: Backend, page: int, anchors: dict[int, str]) -> VerifyResult:
    """The chain in `db`, checked in pages of `page` entries inside one read snapshot, against
    the `anchors` (seq -> hash) noted outside the store (see `ChainStore.verify`)."""
    with db.read_transaction():
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
