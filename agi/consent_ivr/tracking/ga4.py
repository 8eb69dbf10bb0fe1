"""GA4: the event sent to Google Analytics for a call behind an open gate, and its delivery.

`ga4_payload` is what the store's outbox keeps (the allow-listed event `GA4_PARAMS` and the gate
inputs, no secrets); `build_ga4_request` turns it into one Measurement Protocol request; `Ga4Sender`
delivers outbox items one at a time: the gate checked again before every attempt (a withdrawal
cancels the item, with a chain entry), never before the grant (R4), POST, exponential backoff.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.store import ChainStore, OutboxItem
from consent_ivr.flow.model import GA4_CONSENT_PURPOSES, GA4_GATE_PURPOSE
from consent_ivr.logs import Logger, get_logger
from consent_ivr.tracking.config import Ga4Config
from consent_ivr.tracking.gate import check_gate

SENT_KIND = "ga4_sent"
CANCELLED_KIND = "ga4_cancelled"
FAILED_KIND = "ga4_failed"
#: The consent purpose that opens the Google linkage, and the two ads purposes of R16 (their one
#: home is the flow model: the linter checks flows against them).
GA_PURPOSE = GA4_GATE_PURPOSE
ADS_PURPOSES = GA4_CONSENT_PURPOSES
EVENT_NAME = "phone_call_lead"
#: The only event parameters ever sent to Google (R16).
GA4_PARAMS = frozenset({"call_duration", "call_status", "tracking_number_id", "flow_version"})

_OPAQUE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def iso_utc(epoch: float) -> str:
    """`epoch` as ISO 8601 UTC with milliseconds and a Z: the times of entries and the outbox."""
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def tracking_number_id(number: str | None, explicit: str | None) -> str | None:
    """The opaque id sent to Google instead of the tracking number."""
    if explicit and _OPAQUE_ID.fullmatch(explicit):
        return explicit
    if number is None:
        return None
    return (
        "tn-" + hashlib.sha256(b"consent-ivr/tracking-number:" + number.encode()).hexdigest()[:12]
    )


def ga4_payload(
    body: Mapping[str, Any],
    values: Mapping[str, str | None],
    record: Mapping[str, Any] | None,
    client_id: str,
) -> dict[str, Any]:
    """What the outbox keeps: the allow-listed event and the gate inputs (no secrets)."""
    flow = (record or {}).get("flow", {})
    params: dict[str, Any] = {
        "call_duration": body.get("duration_s") or 0,
        "call_status": body["status"],
        "flow_version": f"{flow.get('id', '')}@{flow.get('version', '')}",
    }
    tn_id = tracking_number_id(body.get("tracking_number"), values.get("tracking_number_id"))
    if tn_id:
        params["tracking_number_id"] = tn_id
    return {
        "client_id": client_id,
        "event": {"name": EVENT_NAME, "params": params},
        "gate": {p: values.get(p) for p in (GA_PURPOSE, *ADS_PURPOSES.values()) if values.get(p)},
    }


def build_ga4_request(
    payload: Mapping[str, Any], consent: Mapping[str, str], config: Ga4Config
) -> tuple[str, bytes]:
    """The URL (with measurement id and API secret) and the JSON body of one MP request."""
    event = payload["event"]
    params = dict(event["params"])
    if not set(params) <= GA4_PARAMS or event["name"] != EVENT_NAME:
        raise ValueError(
            f"refusing to send undeclared parameters {sorted(set(params) - GA4_PARAMS)}"
        )
    query = urllib.parse.urlencode(
        {"measurement_id": config.measurement_id or "", "api_secret": config.api_secret or ""}
    )
    sep = "&" if "?" in config.endpoint else "?"
    body = {
        "client_id": payload["client_id"],
        "consent": dict(consent),
        "events": [{"name": EVENT_NAME, "params": params}],
    }
    return config.endpoint + sep + query, json.dumps(body, separators=(",", ":")).encode()


@dataclass
class FlushReport:
    sent: int = 0
    retried: int = 0
    cancelled: int = 0
    failed: int = 0
    deferred: int = 0

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in vars(self).items())


class Ga4Sender:
    """Delivers outbox items: gate re-check, R4 check, POST, backoff; one item at a time."""

    def __init__(
        self,
        store: ChainStore,
        config: Ga4Config,
        *,
        clock: Callable[[], float] = time.time,
        log: Logger | None = None,
        post: Callable[[str, bytes, float], int] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.log = log or get_logger(component="ga4")
        self.post = post or _post

    def flush(self, limit: int = 100, should_stop: Callable[[], bool] | None = None) -> FlushReport:
        """Deliver the due items, one at a time; `should_stop` is asked before each (a server
        that stops waits for one delivery at most). An item whose delivery breaks is logged and
        counted as deferred: its lease runs out and a later round retries it, after the others."""
        report = FlushReport()
        for item in self.store.outbox_due(iso_utc(self.clock()), limit):
            if should_stop is not None and should_stop():
                break
            try:
                outcome = self.deliver(item.id)
            except Exception as exc:  # one broken item must not stall the items behind it
                self.log.error(
                    "ga4.deliver_error", outbox=item.id, error=f"{type(exc).__name__}: {exc}"
                )
                outcome = "deferred"
            if outcome == "skipped":
                continue
            setattr(report, outcome, getattr(report, outcome) + 1)
        return report

    def deliver(self, item_id: str) -> str:
        """One attempt: sent | retried | cancelled | failed | deferred | skipped (not due)."""
        now = self.clock()
        lease = iso_utc(now + self.config.timeout * 2 + 5)
        item = self.store.outbox_claim(item_id, iso_utc(now), lease)
        if item is None:
            return "skipped"
        log = self.log.bind(outbox=item.id, record_id=item.record_id)
        gate = item.payload.get("gate", {})
        decision = check_gate(
            self.store,
            purpose=GA_PURPOSE,
            channel_value=gate.get(GA_PURPOSE),
            record_id=item.record_id,
        )
        if not decision.open:
            if decision.reason.startswith("store_error"):
                return self._defer(item, decision.reason, log)
            self.store.outbox_resolve(
                item.id,
                "cancelled",
                attempts=item.attempts,
                error=decision.reason,
                entry=(CANCELLED_KIND, self._entry_body(item, reason=decision.reason)),
            )
            log.info("ga4.cancelled", reason=decision.reason)
            return "cancelled"
        record = self.store.get(item.record_id or "")
        granted_at = str((record or {}).get("created_at", "9999"))
        if iso_utc(now) <= granted_at:  # R4: never before the grant (clock skew between hosts)
            return self._defer(item, "before_grant", log)
        if self.config.missing:
            log.error("ga4.not_configured", missing=self.config.missing)
            return self._defer(item, "not_configured", log)
        consent = {
            field_: (
                "GRANTED"
                if check_gate(
                    self.store,
                    purpose=purpose,
                    channel_value=gate.get(purpose),
                    record_id=item.record_id,
                ).open
                else "DENIED"
            )
            for field_, purpose in ADS_PURPOSES.items()
        }
        attempts = item.attempts + 1
        try:
            url, data = build_ga4_request(item.payload, consent, self.config)
        except (KeyError, TypeError, ValueError) as exc:  # never sendable: fail it for good
            reason = f"unsendable payload: {type(exc).__name__}: {exc}"
            return self._fail(item, attempts, reason, log)
        try:
            status = self.post(url, data, self.config.timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except (OSError, ValueError, http.client.HTTPException) as exc:  # network-level: retry
            status, error = 0, f"{type(exc).__name__}: {exc}"
        if error is None:
            self.store.outbox_resolve(
                item.id,
                "sent",
                attempts=attempts,
                error=None,
                entry=(
                    SENT_KIND,
                    self._entry_body(item, consent=consent, params=item.payload["event"]["params"]),
                ),
            )
            log.info("ga4.sent", attempts=attempts)
            return "sent"
        retryable = status == 0 or status == 429 or status >= 500
        if not retryable or attempts >= self.config.max_attempts:
            return self._fail(item, attempts, error, log)
        due = iso_utc(now + self.config.backoff(attempts))
        self.store.outbox_retry(item.id, attempts=attempts, next_attempt_at=due, error=error)
        log.warning("ga4.retry", attempts=attempts, error=error, next_attempt_at=due)
        return "retried"

    def _fail(self, item: OutboxItem, attempts: int, reason: str, log: Logger) -> str:
        """The item will never be sent: resolve it `failed`, with its chain entry."""
        self.store.outbox_resolve(
            item.id,
            "failed",
            attempts=attempts,
            error=reason,
            entry=(FAILED_KIND, self._entry_body(item, reason=reason)),
        )
        log.error("ga4.failed", attempts=attempts, error=reason)
        return "failed"

    def _defer(self, item: OutboxItem, reason: str, log: Logger) -> str:
        """Not an attempt (nothing was sent): try again after the base backoff."""
        due = iso_utc(self.clock() + self.config.backoff_base)
        self.store.outbox_retry(item.id, attempts=item.attempts, next_attempt_at=due, error=reason)
        log.warning("ga4.deferred", reason=reason, next_attempt_at=due)
        return "deferred"

    @staticmethod
    def _entry_body(item: OutboxItem, **extra: Any) -> dict[str, Any]:
        return {
            "created_at": utc_now(),
            "outbox_id": item.id,
            "record_id": item.record_id,
            "tracking_seq": item.tracking_seq,
            **extra,
        }


def _post(url: str, data: bytes, timeout: float) -> int:
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
