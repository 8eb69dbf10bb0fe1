"""Durable evidence of each consent decision: the record and its serialisation.

A record pins what the caller heard and did (R13) and is written — committed and synced — before
any channel variable says ``granted`` (R12). The caller number never enters a record: only its
keyed HMAC-SHA256 pseudonym with the id of the key (R14; see `pseudonym`). A record's id is a
UUIDv7 (`new_record_id`). The store (SQLite or PostgreSQL, the hash chain) is
`consent_ivr.evidence.store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from consent_ivr.engine import Decision, PlayLog, withdrawal_word
from consent_ivr.evidence.facts import CallFacts
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.flow.model import Flow


def canonical_json(obj: Any) -> str:
    """The canonical JSON of a body: sorted keys, no spaces, UTF-8 text (not \\u escapes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def body_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_record_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: 48 bits of Unix milliseconds, then 74 random bits.

    Time-ordered, so every index keyed by record id grows at its end instead of touching a random
    page per insert (uuid4), which keeps commits small and a large store's working set cached.
    """
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 used
    value = ms << 80 | 0x7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return f"{value:032x}"


#: Flows that records were built from, by source hash: `prepare` attaches the flow so that the
#: store keeps its content on first use (R13). A handful of versions per process.
_FLOWS: dict[str, Flow] = {}


def build_record(
    decision: Decision, flow: Flow, facts: CallFacts, record_id: str
) -> dict[str, Any]:
    """The evidence record as a JSON-ready dict (schema version 1)."""
    lang = decision.language
    _FLOWS.setdefault(flow.source_sha256, flow)
    word = withdrawal_word if decision.kind == "withdrawal" else str
    record: dict[str, Any] = {
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
        # in a withdrawal flow accept means "withdrawal recorded", decline "cancelled"
        "kind": decision.kind,
        "status": word(decision.status),
        "reason": decision.reason,
        "informed": decision.informed,
        "hung_up": decision.hung_up,
        "outcomes": [
            {
                "purpose": o.purpose,
                "outcome": word(o.outcome.value),
                "reason": o.reason.value,
                "decided_ms": o.decided_ms,
            }
            for o in decision.outcomes
        ],
        # flat records of scalars; a play of a flow with more formats than the WAV adds
        # audio_formats (format -> hash), left out otherwise so those records stay as they were
        "plays": [_play(p) for p in decision.plays],
        "keys": [k._asdict() for k in decision.keys],
        "errors": list(decision.errors),
    }
    if flow.returning is not None:
        record["returning"] = returning_part(decision)
    return record


def returning_part(decision: Decision) -> dict[str, Any]:
    """What a record of a flow with `returning` says about the earlier decision (R18): what the
    look-up said (``honoured``, or why not: anonymous, none, expired, withdrawn, notice_changed,
    store_error, timeout, ...; ``not_asked`` when the caller pressed a key first) and, when the
    reminder was played, the record whose decision it named. With ``reason: reused`` the new
    record honours that decision; the reminder and the keys are in ``plays`` and ``keys``."""
    earlier = decision.earlier
    return {
        "looked_up": decision.recall or "not_asked",
        "earlier": None
        if earlier is None
        else {
            "record_id": earlier.record_id,
            "notice_sha256": earlier.notice_sha256,
            "decided_at": earlier.decided_at,
            "outcome": earlier.outcome,
        },
    }


def _play(play: PlayLog) -> dict[str, Any]:
    fields = play._asdict()
    if fields["audio_formats"] is None:
        del fields["audio_formats"]
    return fields


@dataclass(frozen=True)
class Prepared:
    """A record as database rows, JSON already serialised and hashed (the chain's body)."""

    record_id: str
    row: tuple[Any, ...]
    outcomes: tuple[tuple[str, str, str, str], ...]
    created_at: str = ""
    caller_pseudonym: str | None = None
    body_sha256: str = ""
    flow: Flow | None = None
    #: bodies of the withdrawal entries a withdrawal call appends after its own entry (R17)
    withdrawals: tuple[dict[str, Any], ...] = ()


def prepare(record: dict[str, Any]) -> Prepared:
    """Serialise a record into its rows (the CPU part of a write; KeyError/TypeError if bad)."""
    text = canonical_json(record)
    return Prepared(
        str(record["record_id"]),
        _evidence_row(record, text),
        tuple(
            (record["record_id"], o["purpose"], o["outcome"], o["reason"])
            for o in record["outcomes"]
        ),
        str(record["created_at"]),
        record["call"]["caller_pseudonym"],
        body_sha256(text),
        _FLOWS.get(record["flow"]["sha256"]),
        _withdrawals(record),
    )


def _withdrawals(record: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The withdrawal entries a confirmed withdrawal call stands for, or the change key on a
    returning caller's reminder of a grant (R17: one key withdraws it); ValueError if
    impossible."""
    source = "phone"
    if record.get("kind") != "withdrawal":
        earlier = (record.get("returning") or {}).get("earlier") or {}
        if earlier.get("outcome") != "granted":
            return ()
        source = "phone-reminder"
        purposes = [
            o["purpose"]
            for o in record["outcomes"]
            if o["outcome"] == "declined" and o["reason"] == "key"
        ]
    else:
        purposes = [o["purpose"] for o in record["outcomes"] if o["outcome"] == "recorded"]
    pseudonym = record["call"]["caller_pseudonym"]
    if purposes and not pseudonym:
        raise ValueError("an anonymous caller cannot withdraw by phone: no number to match")
    return tuple(
        {
            "kind": "withdrawal",
            "created_at": record["created_at"],
            "caller_pseudonym": pseudonym,
            "caller_key_id": record["call"]["caller_key_id"],
            "purpose": purpose,
            "source": source,
            "record_id": record["record_id"],
        }
        for purpose in purposes
    )


def _evidence_row(record: dict[str, Any], text: str) -> tuple[Any, ...]:
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
        text,
    )
