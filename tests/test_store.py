"""The evidence store on both backends: migrations, the hash chain, purge, withdrawal, key
rotation, flow versions, concurrent writers. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.pseudonym import Keyring, PseudonymKey
from consent_ivr.evidence.record import body_sha256, canonical_json
from consent_ivr.evidence.store import GENESIS, MIGRATIONS, ChainStore, chain_hash, open_store
from consent_ivr.flow.loader import load_flow
from consent_ivr.harness.asterisk import SimulatedAsterisk, WavSoundCatalog
from consent_ivr.harness.loopback import Loopback
from consent_ivr.paths import flows_dir
from consent_ivr.transports.consent_agi import ConsentAGI
from consent_ivr.transports.runner import run_call
from storekit import store_url  # noqa: F401  (the two-backend fixture)

DATA = Path(__file__).parent / "data"
SCHEMA1 = DATA / "evidence-schema1.sqlite3"  # written by the first release's code
NUMBER = "+4930987654321"
KEY = PseudonymKey.from_bytes(b"store-test-key-0123456789")


def _template() -> dict[str, Any]:
    conn = sqlite3.connect(SCHEMA1)
    try:
        text = conn.execute("SELECT record_json FROM evidence LIMIT 1").fetchone()[0]
    finally:
        conn.close()
    return dict(json.loads(text))


TEMPLATE = _template()


def record(
    store: ChainStore, pseudonym: str | None = None, created_at: str = "2026-11-29T10:00:00.000Z"
) -> dict[str, Any]:
    r = json.loads(json.dumps(TEMPLATE))
    r["record_id"] = store.new_record_id()
    r["created_at"] = created_at
    r["call"]["caller_pseudonym"] = pseudonym
    r["call"]["caller_key_id"] = KEY.key_id
    return r


@pytest.fixture
def store(store_url: str):  # noqa: F811
    s = open_store(store_url).open()
    yield s
    s.close()


def raw(store: ChainStore, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Tamper with the database behind the store's back (autocommit on both backends)."""
    db = store._backend()
    db.execute(sql, params)


def test_existing_first_release_file_is_migrated_and_its_records_chained(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    shutil.copy(SCHEMA1, path)
    s = open_store(path)
    try:
        assert s.schema_version() == MIGRATIONS[-1].version
        assert s.count() == 3
        result = s.verify()
        assert result.ok and result.entries == 3, result.describe()
        first = s.entry("1")
        assert first is not None and first.prev_hash == GENESIS and first.kind == "decision"
        assert first.body is not None
        assert first.body_sha256 == body_sha256(canonical_json(first.body))
        assert first.hash == chain_hash(GENESIS, first.body_sha256)
        s.write(record(s, KEY.pseudonym(NUMBER)))  # new records continue the chain
        assert s.verify().entries == 4 and s.verify().ok
    finally:
        s.close()
    again = open_store(f"sqlite://{path}")  # idempotent: nothing re-applied
    try:
        rows = again._backend().query("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
        assert again.verify().entries == 4
    finally:
        again.close()


def test_migrations_are_recorded_and_idempotent(store_url: str):  # noqa: F811
    for _ in range(2):
        s = open_store(store_url)
        try:
            assert s.schema_version() == MIGRATIONS[-1].version
            rows = s._backend().query("SELECT version, description FROM schema_migrations")
            assert sorted(r[0] for r in rows) == [m.version for m in MIGRATIONS]
        finally:
            s.close()


def test_chain_append_and_verify(store: ChainStore):
    p = KEY.pseudonym(NUMBER)
    ids = [store.write(record(store, p)) for _ in range(3)]
    store.write_many([record(store, p) for _ in range(5)])
    assert store.count() == 8
    got = store.get(ids[0])
    assert got is not None and got["record_id"] == ids[0]
    result = store.verify()
    assert result.ok and result.entries == 8 and result.head_seq == 8, result.describe()
    entries = store.entries_for([p])
    assert [e.seq for e in entries] == list(range(1, 9))
    for a, b in itertools.pairwise(entries):
        assert b.prev_hash == a.hash == chain_hash(a.prev_hash, a.body_sha256)


def _filled(store: ChainStore, n: int = 5) -> None:
    for _ in range(n):
        store.write(record(store, KEY.pseudonym(NUMBER)))


def test_a_changed_body_is_the_first_broken_link(store: ChainStore):
    _filled(store)
    victim = store.entry("3")
    assert victim is not None and victim.record_id
    body = store.get(victim.record_id)
    assert body is not None
    body["status"] = "granted" if body["status"] != "granted" else "declined"
    raw(
        store,
        "UPDATE evidence SET record_json = ? WHERE record_id = ?",
        (json.dumps(body), victim.record_id),
    )
    result = store.verify()
    assert not result.ok and result.broken_seq == 3 and "body changed" in result.reason


def test_a_changed_hash_breaks_the_link(store: ChainStore):
    _filled(store)
    raw(store, "UPDATE entry SET hash = ? WHERE seq = 2", ("f" * 64,))
    result = store.verify()
    assert not result.ok and result.broken_seq == 2 and "link changed" in result.reason


def test_a_deleted_entry_is_a_missing_seq(store: ChainStore):
    _filled(store)
    raw(store, "DELETE FROM entry WHERE seq = 4")
    result = store.verify()
    assert not result.ok and result.broken_seq == 4 and "missing seq" in result.reason


def test_a_deleted_record_is_a_missing_body(store: ChainStore):
    _filled(store)
    victim = store.entry("2")
    assert victim is not None
    raw(store, "DELETE FROM evidence_outcome WHERE record_id = ?", (victim.record_id,))
    raw(store, "DELETE FROM evidence WHERE record_id = ?", (victim.record_id,))
    result = store.verify()
    assert not result.ok and result.broken_seq == 2 and "body missing" in result.reason


def test_verify_reads_the_chain_in_pages_and_finds_a_break_on_a_later_page(store: ChainStore):
    _filled(store, 7)
    whole = store.verify()
    paged = store.verify(page=2)  # pages 1-2, 3-4, 5-6, 7
    assert paged == whole and paged.ok and paged.entries == 7 and paged.head_seq == 7
    raw(store, "UPDATE entry SET hash = ? WHERE seq = 6", ("f" * 64,))
    result = store.verify(page=2)
    assert not result.ok and result.broken_seq == 6 and "link changed" in result.reason
    raw(store, "DELETE FROM entry WHERE seq = 5")
    result = store.verify(page=2)
    assert not result.ok and result.broken_seq == 5 and "missing seq" in result.reason


def _cut_tail(store: ChainStore, seq: int) -> None:
    """Remove the last entry and its decision everywhere, as someone hiding it would."""
    victim = store.entry(str(seq))
    assert victim is not None and victim.record_id
    raw(store, "DELETE FROM entry WHERE seq = ?", (seq,))
    raw(store, "DELETE FROM evidence_outcome WHERE record_id = ?", (victim.record_id,))
    raw(store, "DELETE FROM evidence WHERE record_id = ?", (victim.record_id,))


def test_an_anchor_finds_entries_cut_off_the_end(store: ChainStore):
    _filled(store, 5)
    head = store.verify()
    assert head.ok and store.verify(anchors={5: head.head_hash}).ok
    _cut_tail(store, 5)
    assert store.verify().ok  # the chain alone cannot tell: this is what anchors are for
    result = store.verify(anchors={5: head.head_hash})
    assert not result.ok and result.broken_seq == 5
    assert "anchor beyond the head" in result.reason and "ends at seq 4" in result.reason


def test_an_anchor_finds_a_replaced_and_relinked_tail(store: ChainStore):
    _filled(store, 5)
    noted = store.verify()
    _cut_tail(store, 5)
    store.write(record(store, KEY.pseudonym(NUMBER)))  # a different seq 5, properly linked
    assert store.verify().ok
    result = store.verify(anchors={3: store.entry("3").hash, 5: noted.head_hash})  # type: ignore[union-attr]
    assert not result.ok and result.broken_seq == 5 and "anchor differs" in result.reason


def test_a_changed_pseudonym_index_is_detected(store: ChainStore):
    _filled(store)
    raw(store, "UPDATE entry SET caller_pseudonym = ? WHERE seq = 5", ("0" * 64,))
    result = store.verify()
    assert not result.ok and result.broken_seq == 5 and "index changed" in result.reason


def _writer(url: str, n: int, errors: list[BaseException]) -> None:
    s = open_store(url, timeout=30.0)
    try:
        for i in range(n):
            if i % 2:
                s.write(record(s, KEY.pseudonym(NUMBER)))
            else:
                s.write_many([record(s, KEY.pseudonym(NUMBER)) for _ in range(3)])
    except BaseException as exc:
        errors.append(exc)
    finally:
        s.close()


def test_concurrent_writers_keep_one_unbroken_chain(store_url: str):  # noqa: F811
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_writer, args=(store_url, 10, errors)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    s = open_store(store_url)
    try:
        result = s.verify()
        assert result.ok, result.describe()
        assert result.entries == s.count() == 6 * (5 * 1 + 5 * 3)
    finally:
        s.close()


def _new_file_with_a_writer_holding_its_lock(path: Path) -> sqlite3.Connection:
    """A rollback-journal SQLite file whose RESERVED lock another connection holds: the state
    in which a second process opening a brand-new store tries to switch it to WAL."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE scratch (x)")
    other.execute("BEGIN IMMEDIATE")
    return other


def test_opening_a_new_sqlite_store_waits_for_a_concurrent_opener(tmp_path: Path):
    # SQLite answers the WAL switch with an immediate "database is locked" (no busy handler)
    # while another connection holds the file's lock; the store must wait, not fail the call.
    path = tmp_path / "evidence.sqlite3"
    other = _new_file_with_a_writer_holding_its_lock(path)
    release = threading.Timer(0.3, other.execute, ("ROLLBACK",))
    release.start()
    started = time.monotonic()
    s = open_store(str(path), timeout=10.0)
    try:
        s.write(record(s, KEY.pseudonym(NUMBER)))
        waited = time.monotonic() - started
        assert s.verify().ok and s.count() == 1
    finally:
        s.close()
        release.join()
        other.close()
    assert 0.25 <= waited < 10.0, waited


def test_a_lock_held_past_the_timeout_is_a_clear_write_error(tmp_path: Path):
    from consent_ivr.evidence.errors import EvidenceWriteError

    path = tmp_path / "evidence.sqlite3"
    other = _new_file_with_a_writer_holding_its_lock(path)
    s = open_store(str(path), timeout=0.2)
    try:
        with pytest.raises(EvidenceWriteError, match="is locked by another process"):
            s.write(record(s, KEY.pseudonym(NUMBER)))
    finally:
        s.close()
        other.execute("ROLLBACK")
        other.close()


def test_purge_keeps_the_chain_verifiable_and_records_itself(store: ChainStore):
    p = KEY.pseudonym(NUMBER)
    old_at = "2026-01-10T12:00:00.000Z"
    old = [store.write(record(store, p, old_at)) for _ in range(3)]
    new = store.write(record(store, p, "2026-06-01T12:00:00.000Z"))
    store.withdraw({KEY.key_id: str(p)}, "ga_linkage")
    preview = store.purge_preview("2026-03-01")
    assert preview["count"] == 3 and preview["oldest"] == preview["newest"] == old_at
    assert preview["kept"] == {} and store.stats()["purged_entries"] == 0  # changed nothing
    assert store.purge_preview("2999-01-01")["kept"] == {"withdrawal": 1}
    purge = store.purge("2026-03-01")
    assert purge["count"] == 3 and purge["purged_seqs"] == [1, 2, 3] and purge["seq"] == 6
    assert all(store.get(i) is None for i in old) and store.get(new) is not None
    gone = store.entry("1")
    assert gone is not None and gone.body is None and gone.caller_pseudonym is None
    assert gone.purged_by == 6 and gone.body_sha256 and gone.hash
    assert store.verify().ok, store.verify().describe()
    assert store.is_withdrawn(str(p), "ga_linkage")  # withdrawals outlive retention
    last = store.entry("6")
    assert last is not None and last.kind == "purge" and last.body is not None
    assert last.body["before"] == "2026-03-01"
    # a body removed without a purge entry naming it is not a purge
    raw(store, "UPDATE entry SET purged_by = 6 WHERE seq = 4")
    raw(store, "DELETE FROM evidence_outcome WHERE record_id = ?", (new,))
    raw(store, "DELETE FROM evidence WHERE record_id = ?", (new,))
    result = store.verify()
    assert not result.ok and result.broken_seq == 4 and "body missing" in result.reason
    with pytest.raises(StoreError, match="YYYY-MM-DD"):
        store.purge("1.3.2026")
    for not_a_day in ("2026-13-01", "2026-02-30"):  # the shape of a date, not a date
        with pytest.raises(StoreError, match="calendar date"):
            store.purge(not_a_day)
        with pytest.raises(StoreError, match="calendar date"):
            store.purge_preview(not_a_day)


def test_withdraw_and_is_withdrawn(store: ChainStore):
    p = str(KEY.pseudonym(NUMBER))
    store.write(record(store, p))
    assert not store.is_withdrawn(p, "ga_linkage")
    recorded = store.withdraw({KEY.key_id: p}, "ga_linkage")
    assert recorded[0]["kind"] == "withdrawal" and recorded[0]["purpose"] == "ga_linkage"
    at = recorded[0]["created_at"]
    assert store.is_withdrawn(p, "ga_linkage")
    assert store.is_withdrawn([p, "x"], "ga_linkage", after="2026-01-01T00:00:00.000Z")
    assert not store.is_withdrawn(p, "ga_linkage", after=at)  # a later grant stands
    assert not store.is_withdrawn(p, "other_purpose")
    assert not store.is_withdrawn("someone-else", "ga_linkage")
    store.withdraw({KEY.key_id: p})  # every purpose
    assert store.is_withdrawn(p, "other_purpose")
    assert store.verify().ok
    with pytest.raises(StoreError):
        store.withdraw({})


def test_a_record_written_under_an_old_key_is_found_with_the_new_keyring(
    store: ChainStore, tmp_path: Path
):
    old_file = tmp_path / "old.key"
    old_file.write_bytes(b"the-old-key-0123456789\n")
    old = PseudonymKey.from_bytes(b"the-old-key-0123456789")
    store.write(record(store, old.pseudonym(NUMBER)))
    ring = Keyring.from_environment(
        {
            "CONSENT_IVR_HMAC_KEY": "the-new-key-0123456789",
            "CONSENT_IVR_HMAC_OLD_KEY_FILES": f"{old_file}:",
        }
    )
    assert ring.current.key_id != old.key_id and [k.key_id for k in ring.old] == [old.key_id]
    store.write(record(store, ring.current.pseudonym(NUMBER)))
    pseudonyms = ring.pseudonyms(NUMBER)
    assert set(pseudonyms) == {ring.current.key_id, old.key_id}
    assert [e.seq for e in store.entries_for(pseudonyms.values())] == [1, 2]
    store.withdraw(pseudonyms, "ga_linkage")
    assert store.is_withdrawn(str(old.pseudonym(NUMBER)), "ga_linkage")
    assert store.is_withdrawn(str(ring.current.pseudonym(NUMBER)), "ga_linkage")


def test_keyring_errors_are_config_errors(tmp_path: Path):
    from consent_ivr.evidence.pseudonym import ConfigError

    with pytest.raises(ConfigError, match="old HMAC key file"):
        Keyring.from_environment(
            {"CONSENT_IVR_HMAC_KEY": "k" * 20, "CONSENT_IVR_HMAC_OLD_KEY_FILES": "/nonexistent"}
        )
    assert PseudonymKey.from_environment({"CONSENT_IVR_HMAC_KEY": "k" * 20}).key_id


def test_a_real_call_stores_its_flow_content_by_hash(store: ChainStore):
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    sim = SimulatedAsterisk(
        dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER, "agi_uniqueid": "9.1"}
    )
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)
    result = run_call(
        flow=flow,
        language="de",
        env=dict(agi.env),
        key=KEY,
        store=store,
        exchange=agi.exchange,
        hangup_seen=lambda: agi.hangup_seen,
    )
    assert result.status == "granted"
    rec = store.get(result.record_id)
    assert rec is not None
    content = store.flow_content(rec["flow"]["sha256"])
    assert content is not None and content["flow_id"] == "call-tracking"
    assert content["source_text"] == Path(flow.source_path).read_text(encoding="utf-8")
    notice = content["notices"]["de"]
    assert body_sha256(canonical_json(notice)) == rec["flow"]["notice_sha256"]
    store.remember_flow(flow)  # cheap and idempotent
    assert store.stats()["flow_versions"] == 1
    assert store.verify().ok


def test_write_errors_are_evidence_write_errors_and_nothing_is_half_written(store: ChainStore):
    from consent_ivr.evidence.errors import EvidenceWriteError

    good = record(store, "p")
    store.write(good)
    dup = record(store, "p")
    dup["record_id"] = good["record_id"]  # primary key clash in the middle of a batch
    with pytest.raises(EvidenceWriteError):
        store.write_many([record(store, "p"), dup])
    assert store.count() == 1 and store.verify().entries == 1


def test_a_kept_store_reconnects_after_its_connection_broke(store: ChainStore):
    # e.g. the server's gate reader after a PostgreSQL restart: one failed use (fail closed),
    # then the next use works again instead of failing until the server restarts
    from consent_ivr.evidence.errors import StoreError

    store.write(record(store, "p"))
    store._backend().conn.close()  # the connection dies under the store
    with pytest.raises(StoreError):
        store.count()
    assert store.count() == 1
    store.write(record(store, "p"))
    assert store.verify().ok and store.head()[0] == 2


def test_wrong_urls_and_unreachable_servers_are_one_line_store_errors(tmp_path: Path):
    not_db = tmp_path / "notes.txt"
    not_db.write_text("hello, this is not SQLite\n" * 100)
    cases = [
        ("mysql://h/db", "unsupported evidence store URL"),
        ("sqlite://relative", "sqlite:///absolute"),
        (str(not_db), "not an SQLite evidence store"),
        ("postgresql://127.0.0.1:1/test", "cannot use PostgreSQL"),
    ]
    for url, message in cases:
        with pytest.raises(StoreError, match=message) as info:
            open_store(url).open()
        assert "\n" not in str(info.value)
    assert not_db.read_text().startswith("hello")  # untouched


def test_record_ids_are_uuid7_time_ordered_and_unique() -> None:
    import uuid

    from consent_ivr.evidence.store import new_record_id

    ids = [new_record_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(hex=i) for i in ids]
    assert {u.version for u in parsed} == {7} and {u.variant for u in parsed} == {uuid.RFC_4122}
    millis = [int(i[:12], 16) for i in ids]
    assert millis == sorted(millis)  # ordered by their time prefix
    assert abs(millis[-1] / 1000 - time.time()) < 60


def test_verify_reads_from_the_lowest_seq_and_refuses_an_empty_page(store: ChainStore):
    _filled(store, 3)
    first = store.entry("1")
    assert first is not None
    raw(  # a self-consistent entry forged in front of the chain
        store,
        "INSERT INTO entry (seq, kind, created_at, body, body_sha256, prev_hash, hash)"
        " VALUES (0, 'withdrawal', ?, ?, ?, ?, ?)",
        (
            first.created_at,
            "{}",
            body_sha256("{}"),
            GENESIS,
            chain_hash(GENESIS, body_sha256("{}")),
        ),
    )
    result = store.verify(page=2)
    assert not result.ok and result.broken_seq == 1 and "missing seq" in result.reason
    with pytest.raises(ValueError):
        store.verify(page=0)
