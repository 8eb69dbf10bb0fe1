"""Run one consent call over an AGI transport: set-up from the AGI environment, the pump, evidence.

Transport-neutral: the caller supplies `exchange(command) -> Response | None` (None = EOF) and a
`hangup_seen()` probe. The process-AGI script plugs in pyst2 (`agi_process`), tests and future
transports plug in their own. Every failure on the way — no key, a flow that does not load, a store
that cannot write — ends in ``CONSENT_STATUS=error`` and never in ``granted``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from consent_ivr.agicodec import AgiProtocolError, CommandEncodingError, Response
from consent_ivr.engine import Call, Decision
from consent_ivr.evidence import (
    CallFacts,
    EvidenceWriteError,
    PseudonymKey,
    build_record,
    utc_now,
)
from consent_ivr.flow.model import Flow
from consent_ivr.logs import get_logger
from consent_ivr.session import CallSession, Command, Finished, WriteEvidence


class EvidenceStore(Protocol):
    def new_record_id(self) -> str: ...

    def write(self, record: dict[str, Any]) -> str: ...


@dataclass
class CallResult:
    status: str
    record_id: str
    record: dict[str, Any] | None
    hung_up: bool


def call_facts(env: dict[str, str], key: PseudonymKey, transport: str) -> CallFacts:
    return CallFacts(
        uniqueid=env.get("agi_uniqueid", ""),
        channel_type=env.get("agi_type", ""),
        started_at=utc_now(),
        caller_pseudonym=key.pseudonym(env.get("agi_callerid", "")),
        key_id=key.key_id,
        transport=transport,
    )


def choose_language(flow: Flow, env: dict[str, str], override: str | None) -> str:
    """An explicit override (AGI argument, ?lang=) wins, then the channel language, else default."""
    return (
        flow.match_language(override)
        or flow.match_language(env.get("agi_language"))
        or flow.default_language
    )


def persist(
    store: EvidenceStore, decision: Decision, flow: Flow, facts: CallFacts, log: Any
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """Write the record; returns (record_id, error, record). Never raises."""
    record: dict[str, Any] | None = None
    t0 = time.perf_counter()
    try:
        record_id = store.new_record_id()
        record = build_record(decision, flow, facts, record_id)
        store.write(record)
    except EvidenceWriteError as exc:
        log.error("evidence.write_failed", error=str(exc))
        return None, str(exc), record
    except Exception as exc:  # a store must never turn a failure into consent
        log.error("evidence.write_failed", error=f"{type(exc).__name__}: {exc}")
        return None, f"{type(exc).__name__}: {exc}", record
    log.info(
        "evidence.written",
        record_id=record_id,
        status=decision.status,
        ms=round((time.perf_counter() - t0) * 1000, 3),
    )
    return record_id, None, record


def run_call(
    *,
    flow: Flow,
    language: str,
    env: dict[str, str],
    key: PseudonymKey,
    store: EvidenceStore,
    exchange: Callable[[Command], Response | None],
    hangup_seen: Callable[[], bool],
    transport: str = "agi",
) -> CallResult:
    """Pump one call to its end; `exchange` sends a command, returns its response (None = EOF)."""
    facts = call_facts(env, key, transport)
    log = get_logger(call=facts.uniqueid, flow=flow.label, lang=language, transport=transport)
    log.info("call.start", pseudonym=(facts.caller_pseudonym or "")[:12] or None)
    t0 = time.monotonic()

    def now_ms() -> int:
        return int((time.monotonic() - t0) * 1000)

    session = CallSession(Call(flow, language))
    op = session.start()
    record: dict[str, Any] | None = None
    while not isinstance(op, Finished):
        if isinstance(op, WriteEvidence):
            record_id, error, record = persist(store, op.decision, flow, facts, log)
            op = session.on_evidence(record_id, error=error, at_ms=now_ms())
            continue
        try:
            resp = exchange(op)
        except (AgiProtocolError, CommandEncodingError, OSError) as exc:
            log.error("agi.error", command=op.name, error=str(exc))
            op = session.on_error(f"{op.name}: {exc}", at_ms=now_ms())
            continue
        log.debug("agi.command", command=op.name, response=resp.lines[0] if resp else "EOF")
        op = session.on_response(resp, hangup_seen=hangup_seen(), at_ms=now_ms())
    log.info(
        "call.finish",
        status=op.status,
        record_id=session.call.record_id,
        hung_up=session.hung_up,
        ms=now_ms(),
    )
    return CallResult(op.status, session.call.record_id, record, session.hung_up)
