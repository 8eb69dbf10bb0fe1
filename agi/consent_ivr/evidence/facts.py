"""What a call's record says about the call itself: its id, type, start, the caller only as a keyed
pseudonym, and the transport. Light on purpose: process AGI builds it before the first prompt."""

from __future__ import annotations

from consent_ivr.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from consent_ivr.evidence.pseudonym import PseudonymKey


class CallFacts(Record):
    """What the driver knows about the call, minus anything identifying in clear."""

    uniqueid: str
    channel_type: str
    started_at: str
    caller_pseudonym: str | None
    key_id: str
    transport: str  # "agi" | "fastagi"


def call_facts(
    env: dict[str, str], key: PseudonymKey, transport: str, started_at: str
) -> CallFacts:
    return CallFacts(
        uniqueid=env.get("agi_uniqueid", ""),
        channel_type=env.get("agi_type", ""),
        started_at=started_at,
        caller_pseudonym=key.pseudonym(env.get("agi_callerid", "")),
        key_id=key.key_id,
        transport=transport,
    )
