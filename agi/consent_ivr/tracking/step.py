"""The call-tracking step: a fixed field list on legitimate interest, GA4 only behind the gate.

Run after the call from a hangup handler (``AGI(consent-ivr.agi,track)`` or
``AGI(agi://host:4573/track)``), in dead mode: it only reads channel variables (GET VARIABLE /
GET FULL VARIABLE) and sets two result variables (SET VARIABLE). docs/tracking.md is the reference.

1. Always (BayLDA's list, no consent needed, R10/R15): one append-only chain entry
   ``kind="tracking"`` with call start (UTC), duration, tracking/called/forwarding number,
   answered/missed, the caller only as the keyed pseudonym (+ key id), and for an existing business
   customer the contact person and legal form from the operator's customer directory (CSV). No
   other field, no lookup elsewhere, nothing that links calls beyond the pseudonym.
2. Only when the gate for ``ga_linkage`` is open (`gate.check_gate`): a GA4 Measurement Protocol
   event with the allow-listed parameters `GA4_PARAMS`, queued in the store's outbox in the same
   transaction as the tracking entry, then delivered by `Ga4Sender` (one immediate attempt, then
   ``consent-ivr track --flush`` with exponential backoff). The sender checks the gate again before
   every attempt; a withdrawal cancels the item and the cancellation is a chain entry.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import hashlib
import http.client
import json
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from consent_ivr.evidence.pseudonym import PseudonymKey, normalise_number, utc_now
from consent_ivr.evidence.store import ChainStore, OutboxItem, StoreError, open_store
from consent_ivr.flow.model import GA4_CONSENT_PURPOSES, GA4_GATE_PURPOSE
from consent_ivr.logs import Logger, get_logger
from consent_ivr.protocol.codec import Response
from consent_ivr.protocol.session import Command
from consent_ivr.tracking.gate import check_gate

TRACKING_KIND = "tracking"
SENT_KIND = "ga4_sent"
CANCELLED_KIND = "ga4_cancelled"
FAILED_KIND = "ga4_failed"
#: The consent purpose that opens the Google linkage, and the two ads purposes of R16 (their one
#: home is the flow model: the linter checks flows against them).
GA_PURPOSE = GA4_GATE_PURPOSE
ADS_PURPOSES = GA4_CONSENT_PURPOSES
DEFAULT_ENDPOINT = "https://www.google-analytics.com/mp/collect"
EVENT_NAME = "phone_call_lead"
#: The only event parameters ever sent to Google (R16).
GA4_PARAMS = frozenset({"call_duration", "call_status", "tracking_number_id", "flow_version"})

_CLIENT_ID = re.compile(r"\d{1,20}\.\d{1,20}")  # the GA web client id: <random>.<timestamp>
_OPAQUE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DIRECTORY_COLUMNS = ("phone", "contact_person", "legal_form")


# ------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class Ga4Config:
    endpoint: str = DEFAULT_ENDPOINT
    measurement_id: str | None = None
    api_secret: str | None = None
    timeout: float = 5.0
    backoff_base: float = 30.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 3600.0
    max_attempts: int = 10

    @property
    def missing(self) -> list[str]:
        return [
            name
            for name, value in (
                ("CONSENT_IVR_GA4_MEASUREMENT_ID", self.measurement_id),
                ("CONSENT_IVR_GA4_API_SECRET", self.api_secret),
            )
            if not value
        ]

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class TrackingConfig:
    store: str
    directory: str | None = None  # CSV path of the customer directory
    retention_days: int = 90
    ga4: Ga4Config = field(default_factory=Ga4Config)
    send_now: bool = True  # one delivery attempt right after queueing

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TrackingConfig:
        env = os.environ if environ is None else environ
        from consent_ivr.paths import store_location

        def number(name: str, default: float) -> float:
            text = env.get(name, "").strip()
            try:
                value = float(text) if text else default
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"{name}={text!r} is not a finite number")
            return value

        return cls(
            store=store_location(env),
            directory=env.get("CONSENT_IVR_CUSTOMER_DIRECTORY") or None,
            retention_days=int(number("CONSENT_IVR_TRACKING_RETENTION_DAYS", 90)),
            ga4=Ga4Config(
                endpoint=env.get("CONSENT_IVR_GA4_ENDPOINT") or DEFAULT_ENDPOINT,
                measurement_id=env.get("CONSENT_IVR_GA4_MEASUREMENT_ID") or None,
                api_secret=env.get("CONSENT_IVR_GA4_API_SECRET") or None,
                timeout=number("CONSENT_IVR_GA4_TIMEOUT", 5.0),
                backoff_base=number("CONSENT_IVR_GA4_BACKOFF", 30.0),
                max_attempts=int(number("CONSENT_IVR_GA4_MAX_ATTEMPTS", 10)),
            ),
            send_now=env.get("CONSENT_IVR_GA4_SEND_NOW", "1") != "0",
        )


# ---------------------------------------------------------------------------- the directory
class DirectoryError(Exception):
    """The customer directory is missing or malformed; the message names file and line."""


@dataclass(frozen=True)
class Customer:
    contact_person: str
    legal_form: str


_DIRECTORY_CACHE: dict[str, tuple[tuple[int, int], dict[str, Customer]]] = {}


def load_directory(path: str | os.PathLike[str]) -> dict[str, Customer]:
    """The CSV directory (header ``phone,contact_person,legal_form``; other columns are never
    read) keyed by the normalised number. Cached until the file changes. Raises DirectoryError."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except OSError as exc:
        raise DirectoryError(
            f"customer directory {name}: cannot read it ({exc.strerror or exc})"
        ) from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _DIRECTORY_CACHE.get(name)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        with open(name, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DirectoryError(f"customer directory {name}: cannot read it ({exc})") from None
    if not rows:
        raise DirectoryError(f"customer directory {name}: empty; expected the header line")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in DIRECTORY_COLUMNS if c not in header]
    if missing:
        raise DirectoryError(
            f"customer directory {name}:1: missing column(s) {', '.join(missing)}; "
            f"expected the header {','.join(DIRECTORY_COLUMNS)}"
        )
    index = [header.index(c) for c in DIRECTORY_COLUMNS]
    out: dict[str, Customer] = {}
    first_line: dict[str, int] = {}
    # Messages name file and line, never the number: they end up in logs.
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise DirectoryError(
                f"customer directory {name}:{line}: {len(row)} fields, expected {len(header)}"
            )
        phone, person, form = (row[i].strip() for i in index)
        number = normalise_number(phone)
        if number is None:
            raise DirectoryError(
                f"customer directory {name}:{line}: the phone column holds no number; "
                "expected digits with an optional leading +"
            )
        if number in out:
            raise DirectoryError(
                f"customer directory {name}:{line}: the phone number is listed twice "
                f"(first on line {first_line[number]})"
            )
        out[number] = Customer(person, form)
        first_line[number] = line
    _DIRECTORY_CACHE[name] = (stamp, out)
    return out


# ---------------------------------------------------------------------------- channel reads
#: (field, command words, variable or expression). Dead mode allows these (and SET VARIABLE).
READS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("dial_status", ("GET", "VARIABLE"), "DIALSTATUS"),
    ("cdr_start", ("GET", "FULL", "VARIABLE"), "${CDR(start,u)}"),
    ("cdr_duration", ("GET", "FULL", "VARIABLE"), "${CDR(duration)}"),
    ("tracking_number", ("GET", "VARIABLE"), "TRACKING_NUMBER"),
    ("tracking_number_id", ("GET", "VARIABLE"), "TRACKING_NUMBER_ID"),
    ("called_number", ("GET", "VARIABLE"), "CALLED_NUMBER"),
    ("forward_number", ("GET", "VARIABLE"), "FORWARD_NUMBER"),
    ("ga_client_id", ("GET", "VARIABLE"), "GA_CLIENT_ID"),
    ("record_id", ("GET", "VARIABLE"), "CONSENT_RECORD_ID"),
    ("ga_linkage", ("GET", "VARIABLE"), "CONSENT_GA_LINKAGE"),
    ("ads_user_data", ("GET", "VARIABLE"), "CONSENT_ADS_USER_DATA"),
    ("ads_personalization", ("GET", "VARIABLE"), "CONSENT_ADS_PERSONALIZATION"),
)
#: AGI arguments after `track` may set these fields as name=value (they win over variables).
ARG_FIELDS = frozenset(
    {"tracking_number", "tracking_number_id", "called_number", "forward_number", "ga_client_id"}
)
RESULT_VARIABLES = ("TRACKING_STATUS", "TRACKING_GA4")


def read_commands() -> list[tuple[str, Command]]:
    return [(name, Command(words, (expr,))) for name, words, expr in READS]


def response_value(resp: Response | None) -> str | None:
    """The value of a GET (FULL) VARIABLE answer; None when unset, dead or failed."""
    if resp is None or not resp.ok or resp.result != "1" or resp.data is None:
        return None
    return resp.data


def apply_args(values: dict[str, str | None], args: Sequence[str]) -> list[str]:
    """Apply ``name=value`` AGI arguments; returns the ones that were ignored."""
    ignored = []
    for arg in args:
        name, sep, value = arg.partition("=")
        if sep and name.strip() in ARG_FIELDS:
            values[name.strip()] = value.strip() or None
        elif arg.strip():
            ignored.append(arg)
    return ignored


# ---------------------------------------------------------------------------- the event
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


def _iso(epoch: float) -> str:
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _call_start(values: Mapping[str, str | None], env: Mapping[str, str]) -> str | None:
    """CDR(start,u) (epoch seconds); else the epoch prefix of the unique id."""
    for text in (values.get("cdr_start"), env.get("agi_uniqueid", "").split(".")[0]):
        try:
            epoch = float(text or "")
        except ValueError:
            continue
        if epoch > 0:
            return _iso(epoch)
    return None


def _duration(values: Mapping[str, str | None]) -> int | None:
    text = (values.get("cdr_duration") or "").strip()
    return int(float(text)) if re.fullmatch(r"\d+(\.\d+)?", text) else None


def tracking_number_id(number: str | None, explicit: str | None) -> str | None:
    """The opaque id sent to Google instead of the tracking number."""
    if explicit and _OPAQUE_ID.fullmatch(explicit):
        return explicit
    if number is None:
        return None
    return (
        "tn-" + hashlib.sha256(b"consent-ivr/tracking-number:" + number.encode()).hexdigest()[:12]
    )


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


def _ga4_payload(
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
            "payload": _ga4_payload(body, values, record, client_id),
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


# ------------------------------------------------------------------------------ the sender
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
        for item in self.store.outbox_due(_iso(self.clock()), limit):
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
        lease = _iso(now + self.config.timeout * 2 + 5)
        item = self.store.outbox_claim(item_id, _iso(now), lease)
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
        if _iso(now) <= granted_at:  # R4: never before the grant (clock skew between hosts)
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
        due = _iso(now + self.config.backoff(attempts))
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
        due = _iso(self.clock() + self.config.backoff_base)
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


# ----------------------------------------------------------------------------- entry points
def track_sync(
    exchange: Callable[[Command], Response | None],
    env: Mapping[str, str],
    args: Sequence[str],
    key: PseudonymKey,
    config: TrackingConfig,
    log: Logger | None = None,
) -> TrackingResult:
    """Process AGI: read the variables, run the step, set TRACKING_STATUS / TRACKING_GA4."""
    values: dict[str, str | None] = {}
    for name, command in read_commands():
        values[name] = response_value(exchange(command))
    apply_args(values, args)
    result = run_tracking(env, values, key, config, log=log)
    for command in result.commands():
        if exchange(command) is None:
            break
    return result


class TrackWorkers:
    """A server's tracking steps: a few threads, each keeping its own store connection.

    A hangup handler runs for every call, so opening (and migrating-checking) a connection per
    step would cost the server as much as the step itself. Each thread opens its connection on
    first use and keeps it; a step that ends in ``error`` drops it (the next one reconnects, e.g.
    after a database restart). Several threads, so that one slow GA4 delivery does not hold up
    the other calls' steps; the chain appends themselves serialise in the store.
    """

    def __init__(self, threads: int = 4) -> None:
        self._executor = ThreadPoolExecutor(threads, "tracking")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stores: list[ChainStore] = []
        self.opened = 0  # connections opened so far (tests, metrics)

    async def run(
        self,
        env: Mapping[str, str],
        values: dict[str, str | None],
        key: PseudonymKey,
        config: TrackingConfig,
        log: Logger | None = None,
    ) -> TrackingResult:
        # Shielded: a caller cancelled (call deadline, server stop) must not cancel a step that
        # is still queued, or its tracking entry would be lost; close() waits for every step.
        step = self._executor.submit(self._step, env, values, key, config, log)
        return await asyncio.shield(asyncio.wrap_future(step))

    def _step(
        self,
        env: Mapping[str, str],
        values: dict[str, str | None],
        key: PseudonymKey,
        config: TrackingConfig,
        log: Logger | None,
    ) -> TrackingResult:
        store: ChainStore | None = getattr(self._local, "store", None)
        if store is not None and getattr(self._local, "url", None) != config.store:
            self._drop(store)
            store = None
        if store is None:
            try:
                store = open_store(config.store, any_thread=True)
            except StoreError:  # run_tracking opens it again and reports the error its way
                return run_tracking(env, values, key, config, log=log)
            with self._lock:
                self._stores.append(store)
                self.opened += 1
            self._local.store, self._local.url = store, config.store
        result = run_tracking(env, values, key, config, store=store, log=log)
        if result.status == "error":
            self._drop(store)
        return result

    def _drop(self, store: ChainStore) -> None:
        self._local.store = None
        with self._lock:
            if store in self._stores:
                self._stores.remove(store)
        store.close()

    def close(self) -> None:
        """Wait for running steps, then close every connection."""
        self._executor.shutdown(wait=True)
        with self._lock:
            stores, self._stores = self._stores, []
        for store in stores:
            store.close()


async def track_async(
    exchange: Callable[[Command], Awaitable[Response | None]],
    env: Mapping[str, str],
    args: Sequence[str],
    key: PseudonymKey,
    config: TrackingConfig,
    log: Logger | None = None,
    *,
    workers: TrackWorkers | None = None,
) -> TrackingResult:
    """FastAGI: the same, with the store and HTTP work in a worker thread (`workers`' threads,
    which keep their connections, or a fresh thread and connection per step)."""
    values: dict[str, str | None] = {}
    for name, command in read_commands():
        values[name] = response_value(await exchange(command))
    apply_args(values, args)
    if workers is not None:
        result = await workers.run(env, values, key, config, log)
    else:
        result = await asyncio.to_thread(run_tracking, env, values, key, config, log=log)
    for command in result.commands():
        if await exchange(command) is None:
            break
    return result
