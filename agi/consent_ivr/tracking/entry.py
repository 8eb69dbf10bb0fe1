"""The tracking entry: one call's fixed field list (BayLDA's, on legitimate interest), written to
the chain always, with its GA4 event queued in the same transaction only behind an open gate.

`run_tracking` never raises: a hangup handler must never crash, and never send on doubt.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consent_ivr.evidence.pseudonym import PseudonymKey, normalise_number, utc_now
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.logs import Logger, get_logger
from consent_ivr.protocol.session import Command
from consent_ivr.tracking.config import TrackingConfig
from consent_ivr.tracking.directory import DirectoryError, load_directory
from consent_ivr.tracking.ga4 import GA_PURPOSE, Ga4Sender, ga4_payload, iso_utc
from consent_ivr.tracking.gate import check_gate

TRACKING_KIND = "tracking"

_CLIENT_ID = re.compile(r"\d{1,20}\.\d{1,20}")  # the GA web client id: <random>.<timestamp>


@dataclass
class TrackingResult:
    status: str  # recorded | error
    ga4: str  # sent | queued | not_sent
    reason: str = ""
    seq: int | None = None
    outbox_id: str | None = None
    body: dict[str, Any] | None = None

    def commands(self) -> list[Command]:
        ga4 = self.ga4 if not self.reason else f"{self.ga4}:{self.reason}"
        return [
            Command(("SET", "VARIABLE"), ("TRACKING_STATUS", self.status)),
            Command(("SET", "VARIABLE"), ("TRACKING_GA4", ga4[:200])),
        ]


def _call_start(values: Mapping[str, str | None], env: Mapping[str, str]) -> str | None:
    """CDR(start,u) (epoch seconds); else the epoch prefix of the unique id."""
    for text in (values.get("cdr_start"), env.get("agi_uniqueid", "").split(".")[0]):
        try:
            epoch = float(text or "")
        except ValueError:
            continue
        if epoch > 0:
            return iso_utc(epoch)
    return None


def _duration(values: Mapping[str, str | None]) -> int | None:
    text = (values.get("cdr_duration") or "").strip()
    return int(float(text)) if re.fullmatch(r"\d+(\.\d+)?", text) else None


def build_tracking_body(
    env: Mapping[str, str],
    values: Mapping[str, str | None],
    key: PseudonymKey,
    config: TrackingConfig,
    log: Logger,
) -> dict[str, Any]:
    """The fixed field list of one call (BayLDA); nothing else is collected."""
    now = utc_now()
    tracking = normalise_number(values.get("tracking_number") or env.get("agi_dnid", ""))
    body: dict[str, Any] = {
        "kind": TRACKING_KIND,
        "schema": 1,
        "created_at": now,
        "call_uniqueid": env.get("agi_uniqueid", ""),
        "call_start": _call_start(values, env),
        "duration_s": _duration(values),
        "tracking_number": tracking,
        "called_number": normalise_number(values.get("called_number") or "") or tracking,
        "forwarding_number": normalise_number(values.get("forward_number") or ""),
        "status": "answered" if (values.get("dial_status") or "") == "ANSWER" else "missed",
        "caller_pseudonym": key.pseudonym(env.get("agi_callerid", "")),
        "caller_key_id": key.key_id,
        "retain_until": (
            dt.datetime.now(dt.UTC).date() + dt.timedelta(days=config.retention_days)
        ).isoformat(),
        "customer_directory": "none",
    }
    if config.directory:
        caller = normalise_number(env.get("agi_callerid", ""))
        try:
            directory = load_directory(config.directory)
        except DirectoryError as exc:
            log.error("tracking.directory_error", error=str(exc))
            body["customer_directory"] = "error"
        else:
            customer = directory.get(caller) if caller else None
            body["customer_directory"] = "hit" if customer else "miss"
            if customer is not None:
                body["contact_person"] = customer.contact_person
                body["legal_form"] = customer.legal_form
    return body


def run_tracking(
    env: Mapping[str, str],
    values: dict[str, str | None],
    key: PseudonymKey,
    config: TrackingConfig,
    *,
    store: ChainStore | None = None,
    log: Logger | None = None,
) -> TrackingResult:
    """Write the tracking entry (always) and queue/send the GA4 event (gate open only).
    Never raises: a failure is logged and reported in the result."""
    log = log or get_logger(call=env.get("agi_uniqueid", ""), step="track")
    own = store is None
    try:
        if store is None:
            store = open_store(config.store)
        return _run(env, values, key, config, store, log)
    except Exception as exc:  # a hangup handler must never crash, and never send on doubt
        log.error("tracking.error", error=f"{type(exc).__name__}: {exc}")
        return TrackingResult("error", "not_sent", "error")
    finally:
        if own and store is not None:
            store.close()


def _run(
    env: Mapping[str, str],
    values: dict[str, str | None],
    key: PseudonymKey,
    config: TrackingConfig,
    store: ChainStore,
    log: Logger,
) -> TrackingResult:
    body = build_tracking_body(env, values, key, config, log)
    record_id = values.get("record_id") or None
    decision = check_gate(
        store, purpose=GA_PURPOSE, channel_value=values.get(GA_PURPOSE), record_id=record_id
    )
    outbox: dict[str, Any] | None = None
    not_queued = ""
    client_id = (values.get("ga_client_id") or "").strip()
    if not decision.open:
        not_queued = "gate_closed"
    elif not client_id:
        not_queued = "no_client_id"
    elif not _CLIENT_ID.fullmatch(client_id):
        not_queued = "bad_client_id"
    elif config.ga4.missing:
        not_queued = "not_configured"
        log.error("ga4.not_configured", missing=config.ga4.missing)
    else:
        record = store.get(record_id) if record_id else None
        outbox = {
            "id": uuid.uuid4().hex,
            "record_id": record_id,
            "payload": ga4_payload(body, values, record, client_id),
        }
    body["ga4"] = {
        "gate": decision.value,
        "gate_reason": decision.reason,
        "outbox_id": outbox["id"] if outbox else None,
        "not_queued": not_queued or None,
    }
    try:
        entry = store.append_entry(TRACKING_KIND, body, outbox=outbox)
    except Exception as exc:
        log.error("tracking.write_failed", error=str(exc))
        return TrackingResult("error", "not_sent", "store_error")
    log.info(
        "tracking.recorded",
        seq=entry["seq"],
        gate=decision.value,
        gate_reason=decision.reason,
        ga4=outbox["id"] if outbox else not_queued,
    )
    result = TrackingResult(
        "recorded",
        "queued" if outbox else "not_sent",
        "" if outbox else not_queued,
        entry["seq"],
        outbox["id"] if outbox else None,
        body,
    )
    if outbox is not None and config.send_now:
        outcome = Ga4Sender(store, config.ga4, log=log).deliver(outbox["id"])
        if outcome == "sent":
            result.ga4 = "sent"
        elif outcome == "cancelled":
            result.ga4, result.reason = "not_sent", "cancelled"
    return result
