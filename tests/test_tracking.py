"""The call-tracking step: the BayLDA field list always, GA4 only behind the gate (R4, R15, R16).

A local HTTP server on 127.0.0.1 plays the GA4 endpoint and records every request; each test
asserts exactly what was sent and what was not. Store tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.harness.asterisk import SimulatedAsterisk, run_fastagi, run_process
from consent_ivr.harness.loopback import Loopback
from consent_ivr.paths import agi_script
from consent_ivr.tracking.ga4 import iso_utc
from consent_ivr.tracking.step import (
    DirectoryError,
    Ga4Config,
    Ga4Sender,
    TrackingConfig,
    load_directory,
    run_tracking,
)
from consent_ivr.transports.consent_agi import ConsentAGI
from consent_ivr.transports.process_agi import run_track_agi
from fastagi_kit import KEY as SERVER_KEY
from fastagi_kit import ServerThread
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

DATA = Path(__file__).parent / "data"
CALLER = "+49 89 1234567"
CALLER_DIGITS = "49891234567"
KEY = PseudonymKey.from_bytes(b"tracking-test-key-0123456789")
CLIENT_ID = "1234567890.1700000000"
CONTACT, LEGAL_FORM = "Erika Mustermann", "GmbH"
TRACKING_NUMBER = "+49 800 5550100"
FORWARD = "+49 30 5550199"


# ------------------------------------------------------------------------------- the endpoint
class GaEndpoint:
    """A stand-in for www.google-analytics.com: records requests, answers from a status queue."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append((self.path, body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = (
            threading.Thread(  # a short poll: shutdown() waits one poll (0.5 s by default)
                target=lambda: self.server.serve_forever(poll_interval=0.01), daemon=True
            )
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mp/collect"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def everything(self) -> bytes:
        return b"\n".join(path.encode() + b" " + body for path, body in self.requests)


@pytest.fixture
def ga() -> Iterator[GaEndpoint]:
    endpoint = GaEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture
def store(store_url: str) -> Iterator[ChainStore]:  # noqa: F811
    s = open_store(store_url).open()
    yield s
    s.close()


def ga4(ga: GaEndpoint, **overrides: Any) -> Ga4Config:
    base = Ga4Config(endpoint=ga.url, measurement_id="G-TEST123", api_secret="s3cret", timeout=5)
    return replace(base, **overrides)


def config(store: str, ga: GaEndpoint, **overrides: Any) -> TrackingConfig:
    ga_overrides = overrides.pop("ga4", {})
    return TrackingConfig(store=store, ga4=ga4(ga, **ga_overrides), **overrides)


def _template() -> dict[str, Any]:
    conn = sqlite3.connect(DATA / "evidence-schema1.sqlite3")
    try:
        return dict(json.loads(conn.execute("SELECT record_json FROM evidence").fetchone()[0]))
    finally:
        conn.close()


TEMPLATE = _template()


def decision(store: ChainStore, outcomes: dict[str, str], key: PseudonymKey = KEY) -> str:
    """Write a decision record (a minute old) with these purpose outcomes; returns its id."""
    r = json.loads(json.dumps(TEMPLATE))
    r["record_id"] = store.new_record_id()
    r["created_at"] = iso_utc(time.time() - 60)
    r["call"]["caller_pseudonym"] = key.pseudonym(CALLER)
    r["call"]["caller_key_id"] = key.key_id
    r["status"] = "granted" if "granted" in outcomes.values() else "declined"
    r["outcomes"] = [
        {"purpose": p, "outcome": o, "reason": "key", "decided_ms": 1} for p, o in outcomes.items()
    ]
    return store.write(r)


ENV = {"agi_callerid": CALLER, "agi_dnid": TRACKING_NUMBER, "agi_uniqueid": "1700000000.42"}


def values(record_id: str | None, ga_linkage: str | None, **more: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "dial_status": "ANSWER",
        "cdr_start": "1700000000.250000",
        "cdr_duration": "95",
        "forward_number": FORWARD,
        "ga_client_id": CLIENT_ID,
        "record_id": record_id,
        "ga_linkage": ga_linkage,
    }
    out.update(more)
    return out


def tracking_entries(store: ChainStore) -> list[dict[str, Any]]:
    return [e.body for e in store.entries_of_kind("tracking") if e.body is not None]


def assert_no_personal_data(raw: bytes) -> None:
    text = raw.decode()
    for needle in (CALLER_DIGITS, "891234567", CONTACT, LEGAL_FORM, "8005550100", "305550199"):
        assert needle not in text, needle


# --------------------------------------------------------------------------- consent states
def test_granted_sends_one_request_with_exactly_the_allow_listed_event(
    store: ChainStore, ga: GaEndpoint, tmp_path: Path
) -> None:
    directory = tmp_path / "customers.csv"
    directory.write_text(f"phone,contact_person,legal_form\n{CALLER},{CONTACT},{LEGAL_FORM}\n")
    rid = decision(store, {"ga_linkage": "granted"})
    cfg = config(store.label, ga, directory=str(directory))
    result = run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store)
    assert (result.status, result.ga4) == ("recorded", "sent")

    assert len(ga.requests) == 1
    path, body = ga.requests[0]
    url = urlsplit(path)
    assert url.path == "/mp/collect"
    assert parse_qs(url.query) == {"measurement_id": ["G-TEST123"], "api_secret": ["s3cret"]}
    sent = json.loads(body)
    tn_id = sent["events"][0]["params"]["tracking_number_id"]
    assert tn_id.startswith("tn-") and len(tn_id) == 15
    assert sent == {
        "client_id": CLIENT_ID,
        "consent": {"ad_user_data": "DENIED", "ad_personalization": "DENIED"},
        "events": [
            {
                "name": "phone_call_lead",
                "params": {
                    "call_duration": 95,
                    "call_status": "answered",
                    "tracking_number_id": tn_id,
                    "flow_version": "call-tracking@1",
                },
            }
        ],
    }
    assert_no_personal_data(ga.everything())

    # the local tracking entry has the full field list, the contact person stays here
    (entry,) = tracking_entries(store)
    assert entry["call_start"] == "2023-11-14T22:13:20.250Z"
    assert entry["duration_s"] == 95 and entry["status"] == "answered"
    assert entry["tracking_number"] == "+498005550100"
    assert entry["called_number"] == "+498005550100"
    assert entry["forwarding_number"] == "+49305550199"
    assert entry["caller_pseudonym"] == KEY.pseudonym(CALLER)
    assert entry["caller_key_id"] == KEY.key_id
    assert (entry["contact_person"], entry["legal_form"]) == (CONTACT, LEGAL_FORM)
    assert entry["customer_directory"] == "hit"
    assert entry["ga4"]["gate"] == "open" and entry["ga4"]["outbox_id"] == result.outbox_id
    assert CALLER_DIGITS not in json.dumps(entry)
    (sent_entry,) = store.entries_of_kind("ga4_sent")
    assert sent_entry.body is not None and sent_entry.body["record_id"] == rid
    assert store.verify().ok


@pytest.mark.parametrize(
    ("outcome", "variable", "use_record", "reason"),
    [
        ("declined", "declined", True, "variable=declined"),
        ("none", "none", True, "variable=none"),
        ("error", "error", True, "variable=error"),
        ("granted", None, True, "variable=unset"),  # variable missing
        ("granted", "granted", False, "no_record"),  # record id missing
        ("declined", "granted", True, "record=declined"),  # variable lies, record says no
    ],
)
def test_every_other_state_sends_nothing_and_still_tracks(
    store: ChainStore,
    ga: GaEndpoint,
    outcome: str,
    variable: str | None,
    use_record: bool,
    reason: str,
) -> None:
    rid = decision(store, {"ga_linkage": outcome})
    result = run_tracking(
        ENV,
        values(rid if use_record else None, variable),
        KEY,
        config(store.label, ga),
        store=store,
    )
    assert (result.status, result.ga4, result.reason) == ("recorded", "not_sent", "gate_closed")
    assert ga.requests == []
    (entry,) = tracking_entries(store)
    assert entry["ga4"] == {
        "gate": "closed",
        "gate_reason": reason,
        "outbox_id": None,
        "not_queued": "gate_closed",
    }
    assert store.outbox_due(iso_utc(time.time() + 10**6)) == []


def test_ads_consent_fields_come_from_their_own_purposes(store: ChainStore, ga: GaEndpoint) -> None:
    rid = decision(store, {"ga_linkage": "granted", "ads_user_data": "granted"})
    v = values(rid, "granted", ads_user_data="granted", ads_personalization=None)
    run_tracking(ENV, v, KEY, config(store.label, ga), store=store)
    (request,) = ga.requests
    assert json.loads(request[1])["consent"] == {
        "ad_user_data": "GRANTED",
        "ad_personalization": "DENIED",
    }


def test_ads_purposes_alone_never_send(store: ChainStore, ga: GaEndpoint) -> None:
    rid = decision(store, {"ga_linkage": "declined", "ads_user_data": "granted"})
    v = values(rid, "declined", ads_user_data="granted")
    run_tracking(ENV, v, KEY, config(store.label, ga), store=store)
    assert ga.requests == []


@pytest.mark.parametrize(
    ("client_id", "why"), [(None, "no_client_id"), ("+4989123", "bad_client_id")]
)
def test_no_usable_client_id_sends_nothing(
    store: ChainStore, ga: GaEndpoint, client_id: str | None, why: str
) -> None:
    rid = decision(store, {"ga_linkage": "granted"})
    v = values(rid, "granted", ga_client_id=client_id)
    result = run_tracking(ENV, v, KEY, config(store.label, ga), store=store)
    assert (result.status, result.reason) == ("recorded", why) and ga.requests == []


def test_missing_ga4_credentials_send_nothing(store: ChainStore, ga: GaEndpoint) -> None:
    rid = decision(store, {"ga_linkage": "granted"})
    cfg = config(store.label, ga, ga4={"api_secret": None})
    result = run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store)
    assert (result.status, result.reason) == ("recorded", "not_configured") and not ga.requests
    assert cfg.ga4.missing == ["CONSENT_IVR_GA4_API_SECRET"]


@pytest.mark.parametrize("broken", ["sqlite-garbage", "postgresql-down"])
def test_a_store_outage_sends_nothing_and_does_not_raise(
    ga: GaEndpoint, tmp_path: Path, broken: str
) -> None:
    if broken == "sqlite-garbage":
        url = str(tmp_path / "evidence.sqlite3")
        Path(url).write_bytes(b"this is not a database" * 100)
    else:
        url = "postgresql://127.0.0.1:1/test"
    result = run_tracking(ENV, values("abc", "granted"), KEY, config(url, ga))
    assert (result.status, result.ga4) == ("error", "not_sent")
    assert ga.requests == []


def test_withdrawal_between_grant_and_send_cancels_and_records(
    store: ChainStore, ga: GaEndpoint
) -> None:
    rid = decision(store, {"ga_linkage": "granted"})
    cfg = config(store.label, ga, send_now=False)
    result = run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store)
    assert result.ga4 == "queued" and result.outbox_id
    time.sleep(0.002)  # the withdrawal is later than the grant (ms timestamps)
    store.withdraw(KEY and {KEY.key_id: str(KEY.pseudonym(CALLER))}, source="phone")
    report = Ga4Sender(store, cfg.ga4).flush()
    assert (report.sent, report.cancelled) == (0, 1)
    assert ga.requests == []
    item = store.outbox_get(result.outbox_id)
    assert item is not None and item.state == "cancelled" and item.last_error == "withdrawn"
    (cancel,) = store.entries_of_kind("ga4_cancelled")
    assert cancel.body is not None
    assert cancel.body["outbox_id"] == result.outbox_id and cancel.body["reason"] == "withdrawn"
    assert Ga4Sender(store, cfg.ga4).flush().cancelled == 0  # cancelled once, never sent
    assert store.verify().ok


def test_http_500_then_204_is_retried_with_backoff_and_sent_once(
    store: ChainStore, ga: GaEndpoint
) -> None:
    rid = decision(store, {"ga_linkage": "granted"})
    cfg = config(store.label, ga, send_now=False, ga4={"backoff_base": 10.0})
    result = run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store)
    now = [time.time() + 0.01]  # after the queueing (the item is due from its created_at)
    assert result.outbox_id is not None
    sender = Ga4Sender(store, cfg.ga4, clock=lambda: now[0])
    ga.statuses = [500]
    assert sender.flush().retried == 1
    item = store.outbox_get(result.outbox_id)
    assert item is not None and (item.state, item.attempts, item.last_error) == (
        "pending",
        1,
        "HTTP 500",
    )
    assert item.next_attempt_at == iso_utc(now[0] + 10)
    now[0] += 5  # not due yet: nothing is sent
    assert sender.flush().describe() == "sent 0, retried 0, cancelled 0, failed 0, deferred 0"
    assert len(ga.requests) == 1
    now[0] += 6
    assert sender.flush().sent == 1
    assert len(ga.requests) == 2 and ga.requests[0][1] == ga.requests[1][1]
    now[0] += 3600
    assert sender.flush().sent == 0 and len(ga.requests) == 2  # sent once
    item = store.outbox_get(result.outbox_id)
    assert item is not None and (item.state, item.attempts) == ("sent", 2)
    assert cfg.ga4.backoff(1) == 10 and cfg.ga4.backoff(3) == 40


def test_a_client_error_is_not_retried(store: ChainStore, ga: GaEndpoint) -> None:
    rid = decision(store, {"ga_linkage": "granted"})
    ga.statuses = [400]
    result = run_tracking(ENV, values(rid, "granted"), KEY, config(store.label, ga), store=store)
    assert result.outbox_id is not None
    item = store.outbox_get(result.outbox_id)
    assert item is not None and item.state == "failed" and len(ga.requests) == 1
    assert len(store.entries_of_kind("ga4_failed")) == 1


def test_tracking_entries_have_their_own_retention_purge(store: ChainStore, ga: GaEndpoint) -> None:
    run_tracking(ENV, values(None, None), KEY, config(store.label, ga), store=store)
    purge = store.purge("2999-01-01", kind="tracking")
    assert purge["count"] == 1 and purge["purged_kind"] == "tracking"
    assert tracking_entries(store) == [] and store.verify().ok


# ------------------------------------------------------------------------------ the directory
def test_directory_hit_miss_and_normalised_numbers(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "phone,contact_person,legal_form,notes\n"
        "+49 (89) 123-4567,Erika Mustermann,GmbH,never read\n"
        "+4930111,Max Muster,AG,\n"
    )
    directory = load_directory(path)
    assert directory["+49891234567"].contact_person == "Erika Mustermann"
    assert directory["+4930111"].legal_form == "AG"
    assert "+4940999" not in directory


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("phone,name\n+4989,x\n", "missing column(s) contact_person, legal_form"),
        ("phone,contact_person,legal_form\nunknown,x,GmbH\n", ":2: the phone column holds no"),
        ("phone,contact_person,legal_form\n+4989,x\n", ":2: 2 fields, expected 3"),
        (
            "phone,contact_person,legal_form\n+4989,x,AG\n+49 89,y,AG\n",
            ":3: the phone number is listed twice (first on line 2)",
        ),
        ("", "empty"),
    ],
)
def test_a_malformed_directory_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(text)
    with pytest.raises(DirectoryError, match="customer directory") as info:
        load_directory(path)
    assert message in str(info.value)
    # the message is logged: it must not carry a number from the directory
    assert "4989" not in str(info.value).replace(str(path), "")


@pytest.mark.parametrize("case", ["miss", "malformed", "missing"])
def test_directory_problems_still_write_the_event(
    tmp_path: Path, ga: GaEndpoint, case: str
) -> None:
    path = tmp_path / "customers.csv"
    if case == "miss":
        path.write_text("phone,contact_person,legal_form\n+4930111,Max Muster,AG\n")
    elif case == "malformed":
        path.write_text("phone;contact_person;legal_form\n")
    store_path = str(tmp_path / "evidence.sqlite3")
    cfg = config(store_path, ga, directory=str(path))
    result = run_tracking(ENV, values(None, None), KEY, cfg)
    assert result.status == "recorded" and result.body is not None
    assert result.body["customer_directory"] == ("miss" if case == "miss" else "error")
    assert "contact_person" not in result.body and "legal_form" not in result.body


# ------------------------------------------------------------------------------ entry points
def dead_sim(variables: dict[str, str], **options: Any) -> SimulatedAsterisk:
    """A channel after hang-up (a hangup handler runs in dead mode)."""
    sim = SimulatedAsterisk(
        env={"agi_callerid": CALLER, "agi_dnid": TRACKING_NUMBER}, answered=True, **options
    )
    for name, value in variables.items():
        sim.set_variable(name, value)
    sim.hung_up = sim.dead = True
    return sim


def channel(record_id: str, ga_linkage: str) -> dict[str, str]:
    return {
        "DIALSTATUS": "NOANSWER",
        "CDR(start,u)": "1700000000.000000",
        "CDR(duration)": "12",
        "FORWARD_NUMBER": FORWARD,
        "GA_CLIENT_ID": CLIENT_ID,
        "CONSENT_RECORD_ID": record_id,
        "CONSENT_GA_LINKAGE": ga_linkage,
    }


@pytest.mark.parametrize("granted", [True, False])
def test_process_agi_in_process_over_the_loopback(
    store: ChainStore, ga: GaEndpoint, granted: bool
) -> None:
    rid = decision(store, {"ga_linkage": "granted" if granted else "declined"})
    sim = dead_sim(channel(rid, "granted" if granted else "declined"))
    wire = Loopback(sim)
    agi = ConsentAGI(wire, wire, trap_sighup=False)  # type: ignore[arg-type]
    environ = {
        "CONSENT_IVR_HMAC_KEY": "tracking-test-key-0123456789",
        "CONSENT_IVR_STORE": store.label,
        "CONSENT_IVR_GA4_ENDPOINT": ga.url,
        "CONSENT_IVR_GA4_MEASUREMENT_ID": "G-TEST123",
        "CONSENT_IVR_GA4_API_SECRET": "s3cret",
    }
    assert run_track_agi(agi, dict(agi.env), ["called_number=+49 800 5550111"], environ) == 0
    assert sim.variables["TRACKING_STATUS"] == "recorded"
    assert sim.variables["TRACKING_GA4"] == ("sent" if granted else "not_sent:gate_closed")
    assert len(ga.requests) == (1 if granted else 0)
    assert all(b"511" not in line for line in wire._rx.split(b"\n"))
    words = {b" ".join(line.split(b" ")[:2]) for line in wire.written}
    assert words <= {b"GET VARIABLE", b"GET FULL", b"SET VARIABLE"}
    (entry,) = tracking_entries(store)
    assert entry["status"] == "missed" and entry["called_number"] == "+498005550111"


def test_process_agi_script_dispatches_track(tmp_path: Path, ga: GaEndpoint) -> None:
    store_path = tmp_path / "evidence.sqlite3"
    s = open_store(store_path)
    rid = decision(s, {"ga_linkage": "granted"})
    s.close()
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": "tracking-test-key-0123456789",
        "CONSENT_IVR_STORE": str(store_path),
        "CONSENT_IVR_GA4_ENDPOINT": ga.url,
        "CONSENT_IVR_GA4_MEASUREMENT_ID": "G-TEST123",
        "CONSENT_IVR_GA4_API_SECRET": "s3cret",
    }
    sim = dead_sim(channel(rid, "granted"), request=str(agi_script()), args=["track"])
    r = run_process([sys.executable, str(agi_script()), "track"], env=env, sim=sim)
    assert r.exit_code == 0, r.stderr
    assert r.variables["TRACKING_STATUS"] == "recorded" and r.variables["TRACKING_GA4"] == "sent"
    assert len(ga.requests) == 1
    assert_no_personal_data(ga.everything())


def test_fastagi_track_route(tmp_path: Path, ga: GaEndpoint) -> None:
    from consent_ivr.tracking.step import TrackWorkers

    with ServerThread(tmp_path) as srv:
        # one worker thread: with four, a step may land on a second thread before the first
        # is idle again, and open a second connection legitimately
        srv.server.routes.track_workers.close()
        srv.server.routes.track_workers = TrackWorkers(threads=1)
        srv.server.tracking = config(str(srv.config.store_path), ga)
        s = open_store(srv.config.store_path)
        rid = decision(s, {"ga_linkage": "granted"}, key=SERVER_KEY)
        declined = decision(s, {"ga_linkage": "declined"}, key=SERVER_KEY)
        host, port = srv.address
        for record_id, value, expected in (
            (rid, "granted", "sent"),
            (declined, "declined", "not_sent:gate_closed"),
        ):
            sim = dead_sim(channel(record_id, value), network=True, network_script="track")
            r = run_fastagi(host, port, "track", sim=sim)
            assert r.variables["TRACKING_STATUS"] == "recorded"
            assert r.variables["TRACKING_GA4"] == expected
        assert len(ga.requests) == 1
        assert len(tracking_entries(s)) == 2
        assert srv.server.routes.track_workers.opened == 1  # one connection, kept between steps
        s.close()


def test_the_server_retries_the_ga4_outbox_itself(tmp_path: Path, ga: GaEndpoint) -> None:
    with ServerThread(tmp_path, ga4_flush=0.1) as srv:
        cfg = config(str(srv.config.store_path), ga, send_now=True, ga4={"backoff_base": 0.2})
        srv.server.tracking = cfg
        s = open_store(srv.config.store_path)
        rid = decision(s, {"ga_linkage": "granted"}, key=SERVER_KEY)
        ga.statuses = [503]  # the step's own attempt fails: the item stays in the outbox
        sim = dead_sim(channel(rid, "granted"), network=True, network_script="track")
        r = run_fastagi(*srv.address, "track", sim=sim)
        assert r.variables["TRACKING_GA4"].startswith("queued")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            (item,) = s._backend().query("SELECT state, attempts FROM ga4_outbox")
            if item[0] == "sent":
                break
            time.sleep(0.05)
        time.sleep(0.3)  # a few more flush rounds: nothing more may be sent
        (item,) = s._backend().query("SELECT state, attempts FROM ga4_outbox")
        s.close()
    assert len(ga.requests) == 2 and ga.requests[0][1] == ga.requests[1][1]
    assert tuple(item) == ("sent", 2)


def test_track_workers_keep_a_connection_per_thread_and_reconnect_after_an_error(
    tmp_path: Path, ga: GaEndpoint
) -> None:
    from consent_ivr.tracking.step import TrackWorkers

    path = str(tmp_path / "evidence.sqlite3")
    s = open_store(path)
    rid = decision(s, {"ga_linkage": "granted"})
    workers = TrackWorkers(threads=2)
    good = config(path, ga, send_now=False)
    (tmp_path / "a-file").write_text("not a folder")
    broken = config(str(tmp_path / "a-file" / "evidence.sqlite3"), ga, send_now=False)

    async def steps() -> list[str]:
        out = []
        for cfg in (good, good, good, broken, good, good):
            result = await workers.run(ENV, values(rid, "granted"), KEY, cfg)
            out.append(result.status)
        return out

    try:
        statuses = asyncio.run(steps())
    finally:
        workers.close()
    assert statuses == ["recorded"] * 3 + ["error"] + ["recorded"] * 2
    assert len(tracking_entries(s)) == 5
    assert workers.opened <= 4  # not one per step: reopened only after the switch and error
    assert workers._stores == []  # close() closed every kept connection
    s.close()


def test_cli_track_flush_and_purge(
    tmp_path: Path, ga: GaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from consent_ivr.cli.main import main

    store_path = str(tmp_path / "evidence.sqlite3")
    s = open_store(store_path)
    rid = decision(s, {"ga_linkage": "granted"})
    cfg = config(store_path, ga, send_now=False)
    assert run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=s).ga4 == "queued"
    for name, value in {
        "CONSENT_IVR_GA4_ENDPOINT": ga.url,
        "CONSENT_IVR_GA4_MEASUREMENT_ID": "G-TEST123",
        "CONSENT_IVR_GA4_API_SECRET": "s3cret",
        "CONSENT_IVR_TRACKING_RETENTION_DAYS": "-1",  # everything is older than tomorrow
    }.items():
        monkeypatch.setenv(name, value)
    out, err = io.StringIO(), io.StringIO()
    assert main(["track", "--flush", "--store", store_path], out, err) == 0
    assert "ga4 outbox: sent 1" in out.getvalue() and len(ga.requests) == 1
    assert main(["track", "--purge", "--store", store_path], out, err) == 0
    assert "1 tracking events" in out.getvalue() and tracking_entries(s) == []
    monkeypatch.delenv("CONSENT_IVR_GA4_API_SECRET")
    assert main(["track", "--flush", "--store", store_path], out, err) == 1
    assert "CONSENT_IVR_GA4_API_SECRET" in err.getvalue()
    s.close()


def test_a_cancelled_caller_never_loses_its_queued_tracking_step(
    tmp_path: Path, ga: GaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_ivr.tracking.workers as tracking_module
    from consent_ivr.tracking.step import TrackWorkers

    path = str(tmp_path / "evidence.sqlite3")
    real = tracking_module.run_tracking

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # a slow GA4 delivery holding the only worker
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking_module, "run_tracking", slow)
    workers = TrackWorkers(threads=1)
    cfg = config(path, ga, send_now=False)

    async def main() -> None:
        first = asyncio.ensure_future(workers.run(ENV, values(None, None), KEY, cfg))
        queued = asyncio.ensure_future(workers.run(ENV, values(None, None), KEY, cfg))
        await asyncio.sleep(0.05)
        queued.cancel()  # the call's deadline or a server stop, while the step waits its turn
        await first
        with pytest.raises(asyncio.CancelledError):
            await queued

    asyncio.run(main())
    workers.close()  # waits for the queued step
    s = open_store(path)
    assert len(tracking_entries(s)) == 2
    s.close()


def test_a_flush_stops_between_items_when_asked(store: ChainStore, ga: GaEndpoint) -> None:
    cfg = config(store.label, ga, send_now=False)
    for _ in range(3):
        rid = decision(store, {"ga_linkage": "granted"})
        run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store)
    posts: list[str] = []

    def post(url: str, data: bytes, timeout: float) -> int:
        posts.append(url)
        return 204

    sender = Ga4Sender(store, cfg.ga4, clock=lambda: time.time() + 1, post=post)
    report = sender.flush(should_stop=lambda: len(posts) >= 1)
    assert report.sent == 1 and len(posts) == 1
    assert sender.flush().sent == 2  # the rest, next round


def _two_queued_items(store: ChainStore, ga: GaEndpoint) -> tuple[Any, list[str]]:
    cfg = config(store.label, ga, send_now=False)
    ids = []
    for _ in range(2):
        rid = decision(store, {"ga_linkage": "granted"})
        ids.append(run_tracking(ENV, values(rid, "granted"), KEY, cfg, store=store).outbox_id)
    return cfg, ids


def test_a_broken_item_neither_stalls_the_others_nor_is_retried_forever(
    store: ChainStore, ga: GaEndpoint
) -> None:
    import http.client

    cfg, ids = _two_queued_items(store, ga)
    calls: list[int] = []

    def post(url: str, data: bytes, timeout: float) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise http.client.BadStatusLine("garbage")  # a broken HTTP answer: retry later
        return 204

    sender = Ga4Sender(store, cfg.ga4, clock=lambda: time.time() + 1, post=post)
    report = sender.flush()
    assert (report.retried, report.sent) == (1, 1)
    first = store.outbox_get(ids[0])
    assert first is not None and first.state == "pending" and first.attempts == 1
    assert "BadStatusLine" in (first.last_error or "")


def test_an_unsendable_payload_is_failed_for_good_and_the_next_item_still_sent(
    store: ChainStore, ga: GaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_ivr.tracking.ga4 as tracking

    cfg, ids = _two_queued_items(store, ga)
    real = tracking.build_ga4_request
    built: list[int] = []

    def first_is_broken(payload: Any, consent: Any, ga4: Any) -> Any:
        built.append(1)
        if len(built) == 1:
            raise KeyError("event")  # a payload that can never be sent
        return real(payload, consent, ga4)

    monkeypatch.setattr(tracking, "build_ga4_request", first_is_broken)
    report = Ga4Sender(store, cfg.ga4, clock=lambda: time.time() + 1).flush()
    assert (report.failed, report.sent) == (1, 1) and len(ga.requests) == 1
    first = store.outbox_get(ids[0])
    assert first is not None and first.state == "failed"
    assert "unsendable payload" in (first.last_error or "")


def test_a_delivery_that_breaks_is_deferred_and_does_not_stall_the_next_item(
    store: ChainStore, ga: GaEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, ids = _two_queued_items(store, ga)
    sender = Ga4Sender(store, cfg.ga4, clock=lambda: time.time() + 1)
    real = sender.deliver

    def first_breaks(item_id: str) -> str:
        if item_id == ids[0]:
            raise RuntimeError("a bug")
        return real(item_id)

    monkeypatch.setattr(sender, "deliver", first_breaks)
    report = sender.flush()
    assert (report.deferred, report.sent) == (1, 1) and len(ga.requests) == 1
    first = store.outbox_get(ids[0])
    assert first is not None and first.state == "pending"


def test_the_server_flush_loop_survives_a_bad_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_caller_number_in_logs: list[Any]
) -> None:
    monkeypatch.setenv("CONSENT_IVR_GA4_MAX_ATTEMPTS", "inf")
    with ServerThread(tmp_path, ga4_flush=0.05) as srv:
        deadline = time.monotonic() + 10
        while not any(e.get("event") == "ga4.flush_error" for e in no_caller_number_in_logs):
            assert time.monotonic() < deadline, "the flush loop never ran"
            time.sleep(0.05)
        time.sleep(0.3)  # a few more rounds: the error is not logged again
        flusher = srv.server._flusher
        assert flusher is not None and not flusher.done()
    errors = [e for e in no_caller_number_in_logs if e.get("event") == "ga4.flush_error"]
    assert len(errors) == 1 and "finite" in errors[0]["error"]  # logged once, not every round
