"""A returning caller's earlier decision, looked up in the store at call start (R18).

`recall_earlier` answers the engine's `Recall` with what the store holds for the caller's
pseudonyms (every form of the number under every key of the keyring: `lookup_pseudonyms`): the
latest record of this flow that decided something, traced to the record whose key made the
decision (a reused record names it), kept only if it is no older than the flow's ``max_age`` and,
for a grant, not withdrawn since. What the engine then judges itself — the same notice, an outcome
the flow remembers, a recording purpose — is not repeated here (one home per rule:
`engine.call`). Any store error is the caller's to catch: a look-up that fails means the full
flow (`NoEarlierDecision("store_error")`), never a grant: `look_up` is that, for the transports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from consent_ivr.engine import EarlierDecision, NoEarlierDecision
from consent_ivr.evidence.pseudonym import Keyring, is_valid_number
from consent_ivr.flow.model import Flow
from consent_ivr.logs import masked

#: The words of a decision an earlier call can be honoured for.
DECIDED = ("granted", "declined")


class RecallStore(Protocol):
    """What the look-up needs of a store (`chain.ChainStore` has it)."""

    def latest_decision(self, pseudonyms: list[str], flow_id: str) -> dict[str, Any] | None: ...

    def get(self, record_id: str) -> dict[str, Any] | None: ...

    def is_withdrawn(self, pseudonym: list[str], purpose: str, *, after: str = "") -> bool: ...


def lookup_pseudonyms(keyring: Keyring, caller: str) -> list[str]:
    """Every pseudonym the caller's records may carry (empty for an anonymous caller)."""
    out: list[str] = []
    for _key_id, pseudonym in keyring.lookup(caller):
        if pseudonym not in out:
            out.append(pseudonym)
    return out


def cutoff(max_age_days: int, now: float) -> str:
    """The UTC time (as records write it) before which a decision is too old."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - max_age_days * 86_400))


def recall_earlier(
    store: RecallStore, pseudonyms: list[str], flow: Flow, now: float
) -> EarlierDecision | NoEarlierDecision:
    """The caller's earlier decision on `flow` that may be honoured at `now` (Unix seconds), or
    why there is none. Raises the store's errors."""
    if flow.returning is None:
        return NoEarlierDecision(why="not_configured")
    if not pseudonyms:
        return NoEarlierDecision(why="anonymous")
    latest = store.latest_decision(pseudonyms, flow.id)
    if latest is None:
        return NoEarlierDecision(why="none")
    purposes = [q.purpose for q in flow.questions]
    outcome = _one_outcome(latest, purposes)
    if outcome is None:
        return NoEarlierDecision(why="mixed")
    origin = _origin(store, latest, outcome, purposes)
    if origin is None:
        return NoEarlierDecision(why="none")
    record_id, notice, decided_at = origin
    if decided_at < cutoff(flow.returning.max_age_days, now):
        return NoEarlierDecision(why="expired")
    if outcome == "granted" and any(
        store.is_withdrawn(pseudonyms, purpose, after=decided_at) for purpose in purposes
    ):
        return NoEarlierDecision(why="withdrawn")
    return EarlierDecision(
        outcome=outcome, record_id=record_id, notice_sha256=notice, decided_at=decided_at
    )


def lookup_error(exc: BaseException) -> str:
    """A failed look-up's error for the log, every digit masked: the exception was raised while
    the caller's number was in hand (its normalisation, its pseudonyms); its text may hold it."""
    return masked(f"{type(exc).__name__}: {exc}", limit=200)


def look_up(
    get_store: Callable[[], RecallStore], keyring: Keyring, caller: str, flow: Flow, log: Any
) -> EarlierDecision | NoEarlierDecision:
    """The transports' look-up: `recall_earlier` for the channel's caller number, the store
    opened by `get_store` only for a caller with a valid number (`is_valid_number`). Never
    raises: a failure is logged (one line, no number) and means the full flow (fail closed
    toward asking)."""
    try:
        # no number, or one that is no one's own (a trunk's placeholder): nothing to recall
        if not is_valid_number(caller, keyring.current.region):
            return NoEarlierDecision(why="anonymous")
        pseudonyms = lookup_pseudonyms(keyring, caller)
        if not pseudonyms:
            return NoEarlierDecision(why="anonymous")
        return recall_earlier(get_store(), pseudonyms, flow, time.time())
    except Exception as exc:  # a store that cannot be read: ask, never grant
        log.error("returning.lookup_failed", error=lookup_error(exc))
        return NoEarlierDecision(why="store_error")


def _one_outcome(record: dict[str, Any], purposes: list[str]) -> str | None:
    """The record's outcome if it is the same decision (granted or declined) on every purpose."""
    outcomes = {o.get("purpose"): o.get("outcome") for o in record.get("outcomes", [])}
    found = {outcomes.get(p) for p in purposes}
    if len(found) != 1:
        return None
    (outcome,) = found
    return outcome if outcome in DECIDED else None


def _origin(
    store: RecallStore, record: dict[str, Any], outcome: str, purposes: list[str]
) -> tuple[str, str, str] | None:
    """(record id, notice hash, time) of the record whose key made the decision: the record
    itself, or the one a reused record names — read again, so that a purged or altered link
    honours nothing."""
    if record.get("reason") != "reused":
        flow = record.get("flow", {})
        return str(record["record_id"]), str(flow.get("notice_sha256", "")), record["created_at"]
    earlier = (record.get("returning") or {}).get("earlier") or {}
    original = store.get(str(earlier.get("record_id", "")))
    if original is None or _one_outcome(original, purposes) != outcome:
        return None
    flow = original.get("flow", {})
    return (
        str(original["record_id"]),
        str(flow.get("notice_sha256", "")),
        str(original["created_at"]),
    )
