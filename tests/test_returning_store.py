"""The store's side of returning callers (R18), on SQLite and PostgreSQL: the caller's latest
decision on a flow, traced to the record whose key made it, honoured only within max_age and, for
a grant, only while it is not withdrawn; the look-up's index."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from consent_ivr.engine import EarlierDecision, NoEarlierDecision, recall_wait_ms
from consent_ivr.evidence.chain import latest_decision_sql
from consent_ivr.evidence.pseudonym import Keyring, PseudonymKey
from consent_ivr.evidence.returning import (
    cutoff,
    look_up,
    lookup_pseudonyms,
    recall_earlier,
)
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import flows_dir
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

CALLER = "+49891234567"
KEY = PseudonymKey.from_bytes(b"returning-store-test-key-0123")
OLD = PseudonymKey.from_bytes(b"returning-store-old-key-01234")
DAY = 86_400


@pytest.fixture(scope="module")
def flow():
    return load_checked(flows_dir() / "call-tracking.yaml")[0]


def record(
    flow: Any,
    outcome: str,
    at: float,
    *,
    key: PseudonymKey = KEY,
    reason: str = "key",
    earlier: dict[str, Any] | None = None,
    flow_id: str | None = None,
) -> dict[str, Any]:
    """A decision record as the engine writes it (only what the look-up and the store read)."""
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))
    rec: dict[str, Any] = {
        "schema": 1,
        "record_id": ChainStore.new_record_id(),
        "created_at": created,
        "call": {
            "uniqueid": "1.1",
            "channel_type": "PJSIP",
            "transport": "agi",
            "started_at": created,
            "caller_pseudonym": key.pseudonym(CALLER),
            "caller_key_id": key.key_id,
        },
        "flow": {
            "id": flow_id or flow.id,
            "version": flow.version,
            "sha256": flow.source_sha256,
            "notice_version": flow.notice_version,
            "notice_sha256": flow.notice_sha256["de"],
            "language": "de",
        },
        "kind": "consent",
        "status": outcome,
        "reason": reason,
        "outcomes": [
            {"purpose": "ga_linkage", "outcome": outcome, "reason": reason, "decided_ms": 1}
        ],
        "plays": [],
        "keys": [],
        "errors": [],
        "returning": {"looked_up": "none", "earlier": earlier},
    }
    return rec


def recall(store: ChainStore, flow: Any, keyring: Keyring | None = None) -> Any:
    pseudonyms = lookup_pseudonyms(keyring or Keyring(KEY), CALLER)
    return recall_earlier(store, pseudonyms, flow, time.time())


def test_the_latest_decision_is_found_and_older_ones_do_not_count(store_url: str, flow) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        now = time.time()
        store.write(record(flow, "granted", now - 3 * DAY))
        latest = record(flow, "declined", now - DAY)
        store.write(latest)
        store.write(record(flow, "none", now - 60, reason="hangup"))  # not a decision
        found = recall(store, flow)
        assert isinstance(found, EarlierDecision)
        assert found.outcome == "declined" and found.record_id == latest["record_id"]
        assert found.notice_sha256 == flow.notice_sha256["de"]
        assert found.decided_at == latest["created_at"]
    finally:
        store.close()


def test_a_reused_record_is_traced_to_the_grant_it_honours_and_ages_from_it(
    store_url: str,  # noqa: F811
    flow,
) -> None:
    store = open_store(store_url)
    try:
        now = time.time()
        original = record(flow, "granted", now - 29 * DAY)
        store.write(original)
        link = {
            "record_id": original["record_id"],
            "notice_sha256": flow.notice_sha256["de"],
            "decided_at": original["created_at"],
            "outcome": "granted",
        }
        store.write(record(flow, "granted", now - DAY, reason="reused", earlier=link))
        found = recall(store, flow)
        assert isinstance(found, EarlierDecision) and found.record_id == original["record_id"]
        # a reuse does not renew the decision: 31 days after the key, it is asked again
        store.write(record(flow, "granted", now - 31 * DAY))  # older: not the latest
        aged = flow._replace(returning=flow.returning._replace(max_age_days=28))
        assert recall(store, aged) == NoEarlierDecision(why="expired")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ("expired", "expired"),
        ("withdrawn", "withdrawn"),
        ("other_flow", "none"),
        ("nothing", "none"),
        ("mixed", "mixed"),
        ("dangling_link", "none"),
    ],
)
def test_what_is_not_honoured(store_url: str, flow, setup: str, why: str) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        now = time.time()
        if setup == "expired":
            store.write(record(flow, "granted", now - 31 * DAY))
        elif setup == "withdrawn":
            store.write(record(flow, "granted", now - 2 * DAY))
            store.withdraw({KEY.key_id: KEY.pseudonym(CALLER) or ""}, "ga_linkage")
        elif setup == "other_flow":
            store.write(record(flow, "granted", now - DAY, flow_id="other-flow"))
        elif setup == "mixed":
            rec = record(flow, "granted", now - DAY)
            rec["status"] = "partial"
            rec["outcomes"].append(dict(rec["outcomes"][0], purpose="ga_linkage_2"))
            rec["outcomes"][1]["outcome"] = "declined"
            two = flow._replace(
                questions=(*flow.questions, flow.questions[0]._replace(purpose="ga_linkage_2"))
            )
            store.write(rec)
            assert recall(store, two) == NoEarlierDecision(why=why)
            return
        elif setup == "dangling_link":
            link = {"record_id": "0" * 32, "outcome": "granted"}
            store.write(record(flow, "granted", now - DAY, reason="reused", earlier=link))
        assert recall(store, flow) == NoEarlierDecision(why=why)
    finally:
        store.close()


def test_a_withdrawal_after_a_decline_does_not_ask_again(store_url: str, flow) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        store.write(record(flow, "declined", time.time() - DAY))
        store.withdraw({KEY.key_id: KEY.pseudonym(CALLER) or ""}, None)
        found = recall(store, flow)
        assert isinstance(found, EarlierDecision) and found.outcome == "declined"
    finally:
        store.close()


def test_records_under_a_retired_key_are_found_with_the_keyring(store_url: str, flow) -> None:  # noqa: F811
    store = open_store(store_url)
    try:
        store.write(record(flow, "granted", time.time() - DAY, key=OLD))
        assert recall(store, flow) == NoEarlierDecision(why="none")  # the current key alone
        found = recall(store, flow, Keyring(KEY, (OLD,)))
        assert isinstance(found, EarlierDecision) and found.outcome == "granted"
    finally:
        store.close()


def test_an_anonymous_caller_or_a_placeholder_number_never_touches_the_store(flow) -> None:
    def no_store() -> Any:
        raise AssertionError("the store was opened for an anonymous caller")

    # no number, or a trunk's placeholder for a withheld one: many callers share its pseudonym,
    # so none may find another's decision through it
    for caller in ("", "anonymous", "unknown", "0", "1", "00000", "Restricted 0", "+490000"):
        found = look_up(no_store, Keyring(KEY), caller, flow, log=None)
        assert found == NoEarlierDecision(why="anonymous")


def test_a_store_that_cannot_be_read_means_the_full_flow_and_is_logged(flow) -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

    def broken() -> Any:
        raise OSError("disk on fire")

    found = look_up(broken, Keyring(KEY), CALLER, flow, Log())
    assert found == NoEarlierDecision(why="store_error")
    assert lines[0][0] == "returning.lookup_failed" and "disk on fire" in lines[0][1]["error"]
    assert CALLER not in repr(lines) and CALLER[1:] not in repr(lines)


def test_a_failed_look_up_whose_error_holds_the_number_logs_no_digit_of_it(flow) -> None:
    lines: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            lines.append((event, fields))

    def broken() -> Any:
        raise ValueError(f"no row for caller {CALLER}")

    found = look_up(broken, Keyring(KEY), CALLER, flow, Log())
    assert found == NoEarlierDecision(why="store_error")
    (event, fields) = lines[0]
    assert event == "returning.lookup_failed" and "no row for caller" in fields["error"]
    assert not any(c.isdigit() for c in fields["error"]), fields


def test_the_look_up_probes_the_index_once_per_pseudonym_on_sqlite(tmp_path) -> None:
    store = open_store(tmp_path / "e.sqlite3")
    try:
        store.open()
        plan = (
            store._connect()
            .execute("EXPLAIN QUERY PLAN " + latest_decision_sql(3), ("a", "f", "b", "f", "c", "f"))
            .fetchall()
        )
        steps = [str(row[-1]) for row in plan]
        probes = [
            s for s in steps if s.startswith("SEARCH evidence USING INDEX evidence_returning")
        ]
        assert len(probes) == 3, steps
        # each pseudonym's newest record comes in the index's order: no sort inside a probe
        # (the merge of the 3 one-row answers sorts, which costs nothing)
        probe_parents = {row[1] for row in plan if str(row[-1]) in probes}
        sorted_inside = [
            row for row in plan if row[1] in probe_parents and "TEMP B-TREE" in row[-1]
        ]
        assert not sorted_inside, steps
        # no step reads the table or an index in full (the pseudonym-only index would sort all
        # of a caller's records: 16 ms for one with 20,000)
        assert not any(s.startswith("SCAN evidence") for s in steps), steps
        assert not any("evidence_caller" in s for s in steps), steps
    finally:
        store.close()


def test_the_wait_bound_is_the_engines_unless_configured_and_is_capped() -> None:
    assert recall_wait_ms({}, 250) == 250
    assert recall_wait_ms({"CONSENT_IVR_RECALL_WAIT_MS": "40"}, 250) == 40
    assert recall_wait_ms({"CONSENT_IVR_RECALL_WAIT_MS": "999999"}, 250) == 5000
    assert recall_wait_ms({"CONSENT_IVR_RECALL_WAIT_MS": "soon"}, 250) == 250


def test_the_cutoff_is_written_like_the_records_times() -> None:
    assert cutoff(1, 86_400 * 2) == "1970-01-02T00:00:00.000Z"
    assert copy.copy(cutoff(30, time.time())) < time.strftime("%Y-%m-%dT%H:%M:%S")
