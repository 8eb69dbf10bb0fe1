"""`consent-ivr evidence …` as an operator runs it (subprocesses), on both backends."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.evidence.store import open_store
from storekit import store_url  # noqa: F401  (the two-backend fixture)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA1 = Path(__file__).parent / "data" / "evidence-schema1.sqlite3"
FIXTURE_KEY = "schema1-fixture-key-0123456789"  # the key the fixture's calls were made with
NUMBER = "+49891234567"  # the simulator's caller in the fixture file


def ev(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    return subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "evidence", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "CONSENT_IVR_HMAC_KEY": FIXTURE_KEY, **(env or {})},
    )


def today() -> str:
    """Today's date (UTC), the latest cut-off a purge accepts without --force."""
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def head(url: str) -> int:
    store = open_store(url)
    try:
        return int(store.stats()["head_seq"])
    finally:
        store.close()


def one_line_error(r: subprocess.CompletedProcess[str], text: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert text in r.stderr, r.stderr


@pytest.fixture
def filled(store_url: str, tmp_path: Path) -> str:  # noqa: F811
    """A store holding the first release's three decisions (copied record by record)."""
    src = tmp_path / "src.sqlite3"
    shutil.copy(SCHEMA1, src)
    conn = sqlite3.connect(src)
    records = [json.loads(r[0]) for r in conn.execute("SELECT record_json FROM evidence")]
    conn.close()
    s = open_store(store_url)
    try:
        s.write_many(records)
    finally:
        s.close()
    return store_url


def test_dsr_session(filled: str):
    r = ev("find", "--caller", NUMBER, "--store", filled)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("decision") == 3 and NUMBER not in r.stdout

    r = ev("show", "1", "--store", filled)
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["seq"] == 1 and first["body"]["status"] == "granted"
    r = ev("show", first["record_id"], "--store", filled)
    assert json.loads(r.stdout)["seq"] == 1

    r = ev("export", "--caller", NUMBER, "--format", "json", "--store", filled)
    assert r.returncode == 0, r.stderr
    export = json.loads(r.stdout)
    assert len(export["entries"]) == 3 and NUMBER not in r.stdout

    r = ev("withdraw", "--caller", NUMBER, "--purpose", "ga_linkage", "--store", filled)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("recorded withdrawal seq 4: purpose ga_linkage")

    r = ev("purge", "--before", today(), "--yes", "--store", filled)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("recorded purge seq 5: 3 decisions")

    r = ev("stats", "--store", filled)
    stats = json.loads(r.stdout)
    assert stats["entries"] == {"decision": 3, "withdrawal": 1, "purge": 1}
    assert stats["purged_entries"] == 3 and stats["head_seq"] == 5

    r = ev("verify", "--store", filled)
    assert r.returncode == 0 and r.stdout.startswith("ok: 5 entries"), r.stderr

    r = ev("find", "--caller", NUMBER, "--store", filled)  # the purged decisions lost the number
    assert r.stdout.splitlines() == [r.stdout.splitlines()[0]] and "withdrawal" in r.stdout


def test_export_includes_the_flow_and_notice_the_caller_heard(tmp_path: Path):
    store = tmp_path / "e.sqlite3"
    sim = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "simulate", "call-tracking", "--dtmf", "1",
         "--lang", "de", "--store", str(store), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "CONSENT_IVR_HMAC_KEY": FIXTURE_KEY},
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    r = ev("export", "--caller", NUMBER, "--store", f"sqlite://{store}")
    assert r.returncode == 0, r.stderr
    export = json.loads(r.stdout)
    (entry,) = export["entries"]
    flow = export["flows"][entry["body"]["flow"]["sha256"]]
    assert "flow: call-tracking" in flow["source_text"]
    assert flow["notice_sha256"]["de"] == entry["body"]["flow"]["notice_sha256"]
    assert flow["notices"]["de"]["prompts"]


def test_verify_names_the_first_broken_link_and_exits_1(tmp_path: Path):
    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    assert ev("verify", "--store", str(path)).returncode == 0
    conn = sqlite3.connect(path)
    conn.execute("UPDATE entry SET prev_hash = ? WHERE seq = 2", ("a" * 64,))
    conn.commit()
    conn.close()
    r = ev("verify", "--store", str(path))
    assert r.returncode == 1 and "BROKEN at seq 2: link changed" in r.stderr
    assert "Traceback" not in r.stderr


def test_errors_are_one_line_with_exit_2(tmp_path: Path):
    not_db = tmp_path / "not.sqlite3"
    not_db.write_bytes(b"PK\x03\x04 not a database" * 200)
    one_line_error(ev("stats", "--store", str(not_db)), "not an SQLite evidence store")
    one_line_error(ev("stats", "--store", "mysql://h/db"), "unsupported evidence store URL")
    one_line_error(
        ev("stats", "--store", "postgresql://u:secret@127.0.0.1:1/db"), "cannot use PostgreSQL"
    )
    assert "secret" not in ev("stats", "--store", "postgresql://u:secret@127.0.0.1:1/db").stderr
    missing = tmp_path / "nothing.sqlite3"
    one_line_error(ev("stats", "--store", str(missing)), "no evidence store at")
    assert not missing.exists()
    good = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, good)
    one_line_error(ev("show", "no-such-record", "--store", str(good)), "no entry")
    one_line_error(ev("purge", "--before", "yesterday", "--store", str(good)), "YYYY-MM-DD")
    one_line_error(ev("find", "--caller", "anonymous", "--store", str(good)), "not a phone number")
    no_key = ev("find", "--caller", NUMBER, "--store", str(good), env={"CONSENT_IVR_HMAC_KEY": ""})
    one_line_error(no_key, "no HMAC key")
    bad_old = {"CONSENT_IVR_HMAC_OLD_KEY_FILES": str(tmp_path / "gone.key")}
    one_line_error(ev("find", "--caller", NUMBER, "--store", str(good), env=bad_old), "old HMAC")


def test_a_locked_store_is_a_clear_error_and_nothing_is_written(tmp_path: Path):
    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    assert ev("verify", "--store", str(path)).returncode == 0  # migrated
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = ev("withdraw", "--caller", NUMBER, "--store", str(path), "--lock-timeout", "0.2")
        one_line_error(r, "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    r = ev("stats", "--store", str(path))
    assert json.loads(r.stdout)["entries"] == {"decision": 3}


def test_store_defaults_to_the_environment(tmp_path: Path):
    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    r = ev("stats", env={"CONSENT_IVR_STORE": str(path)})
    assert r.returncode == 0 and json.loads(r.stdout)["head_seq"] == 3, r.stderr


def test_verify_checks_anchors_noted_from_its_own_ok_line(tmp_path: Path):
    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    ok = ev("verify", "--store", str(path))
    words = ok.stdout.split()
    seq, digest = words[words.index("seq") + 1], words[words.index("hash") + 1]
    anchor = f"{seq}:{digest}"
    assert ev("verify", "--store", str(path), "--anchor", anchor).returncode == 0
    conn = sqlite3.connect(path)  # the newest entry disappears, with its record
    (rid,) = conn.execute("SELECT record_id FROM entry WHERE seq = ?", (int(seq),)).fetchone()
    conn.execute("DELETE FROM entry WHERE seq = ?", (int(seq),))
    conn.execute("DELETE FROM evidence_outcome WHERE record_id = ?", (rid,))
    conn.execute("DELETE FROM evidence WHERE record_id = ?", (rid,))
    conn.commit()
    conn.close()
    assert ev("verify", "--store", str(path)).returncode == 0
    r = ev("verify", "--store", str(path), "--anchor", anchor)
    assert r.returncode == 1 and f"BROKEN at seq {seq}: anchor beyond the head" in r.stderr


def test_a_malformed_anchor_is_a_one_line_error(tmp_path: Path):
    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    r = ev("verify", "--store", str(path), "--anchor", "5:nothex")
    one_line_error(r, "expected SEQ:HASH")


@pytest.mark.parametrize("date", ["2026-13-01", "2026-02-30", "2026-00-10", "2026-1-01"])
def test_a_purge_date_that_is_not_on_the_calendar_is_refused(filled: str, date: str) -> None:
    one_line_error(ev("purge", "--before", date, "--yes", "--store", filled), "calendar date")
    assert head(filled) == 3


def test_a_purge_cut_off_in_the_future_is_refused_unless_forced(filled: str) -> None:
    tomorrow = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)).isoformat()
    for date in (tomorrow, "2099-01-01"):
        r = ev("purge", "--before", date, "--yes", "--store", filled)
        one_line_error(r, "in the future")
        assert "--force" in r.stderr
    assert head(filled) == 3
    r = ev("purge", "--before", "2099-01-01", "--force", "--yes", "--store", filled)
    assert r.returncode == 0 and r.stdout.startswith("recorded purge seq 4: 3 decisions"), r.stderr


def test_a_purge_dry_run_tells_what_would_go_and_changes_nothing(filled: str) -> None:
    r = ev("purge", "--before", today(), "--dry-run", "--store", filled)
    assert r.returncode == 0, r.stderr
    assert "would purge 3 decisions" in r.stdout
    assert "2026-11-29T08:33:54.612Z" in r.stdout and "2026-11-29T08:33:54.893Z" in r.stdout
    assert "granted 1, declined 1, none 1" in r.stdout and "nothing was changed" in r.stdout
    assert head(filled) == 3
    r = ev("purge", "--before", "2026-01-01", "--dry-run", "--store", filled)
    assert r.returncode == 0 and "would purge 0 decisions" in r.stdout, r.stderr


def test_a_purge_without_yes_is_refused_when_no_one_can_confirm(filled: str) -> None:
    r = ev("purge", "--before", today(), "--store", filled)
    one_line_error(r, "--yes")
    assert head(filled) == 3


@pytest.mark.parametrize(("answer", "purged"), [("yes\n", True), ("n\n", False), ("", False)])
def test_a_purge_on_a_terminal_asks_first(tmp_path: Path, answer: str, purged: bool) -> None:
    import pty

    path = tmp_path / "e.sqlite3"
    shutil.copy(SCHEMA1, path)
    leader, follower = pty.openpty()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_ivr.cli.main", "evidence", "purge", "--before", today(),
         "--store", str(path)],
        cwd=ROOT, stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**base, "CONSENT_IVR_HMAC_KEY": FIXTURE_KEY},
    )  # fmt: skip
    os.close(follower)
    os.write(leader, answer.encode() if answer else b"\x04")  # \x04: end of input (Ctrl-D)
    out, err = proc.communicate(timeout=120)
    os.close(leader)
    assert "would purge 3 decisions" in out
    if purged:
        assert proc.returncode == 0 and "recorded purge seq 4" in out, err
    else:
        assert proc.returncode == 2 and "nothing was purged" in err, (out, err)
    assert head(str(path)) == (4 if purged else 3)


def test_a_withdrawal_for_a_purpose_no_flow_has_is_refused(filled: str) -> None:
    r = ev("withdraw", "--caller", NUMBER, "--purpose", "nope", "--store", filled)
    one_line_error(r, "no flow")
    assert "ga_linkage" in r.stderr
    assert head(filled) == 3


@pytest.mark.parametrize(
    "typed", ["089/1234567", "0049891234567", "089/123 45-67", "+49 89 1234567"]
)
def test_find_matches_the_caller_whatever_form_the_number_is_typed_in(filled: str, typed: str):
    r = ev("find", "--caller", typed, "--store", filled)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("decision") == 3, r.stdout


def test_a_call_from_a_national_form_number_is_found_by_its_international_form(tmp_path: Path):
    store = tmp_path / "e.sqlite3"
    from consent_ivr.cli.simulate import simulate_call
    from consent_ivr.flow.loader import load_flow

    flow = load_flow(ROOT / "flows" / "call-tracking.yaml")
    call = simulate_call(
        flow,
        "1",
        language="de",
        store=store,
        extra_env={"CONSENT_IVR_HMAC_KEY": FIXTURE_KEY},
        agi_env={"agi_callerid": "0891234567"},  # as a trunk may deliver it
    )
    assert call.variables["CONSENT_STATUS"] == "granted"
    r = ev("find", "--caller", "+49891234567", "--store", str(store))
    assert r.returncode == 0 and r.stdout.count("decision") == 1, (r.stdout, r.stderr)


def test_records_written_under_the_legacy_form_keep_matching_and_are_withdrawn(
    store_url: str,  # noqa: F811
) -> None:
    import hmac

    from consent_ivr.evidence.pseudonym import PseudonymKey

    key = PseudonymKey.from_bytes(FIXTURE_KEY.encode())
    # the engine before E.164: the HMAC of the number as the trunk delivered it, digits only
    legacy = hmac.new(key.secret, b"0891234567", "sha256").hexdigest()
    src = sqlite3.connect(SCHEMA1)
    (text,) = src.execute("SELECT record_json FROM evidence WHERE status = 'granted'").fetchone()
    src.close()
    record = json.loads(text)
    record["call"]["caller_pseudonym"] = legacy
    s = open_store(store_url)
    try:
        s.write_many([record])
    finally:
        s.close()
    r = ev("find", "--caller", "+49 89 1234567", "--store", store_url)
    assert r.returncode == 0 and r.stdout.count("decision") == 1, (r.stdout, r.stderr)
    r = ev("withdraw", "--caller", "089/1234567", "--purpose", "ga_linkage", "--store", store_url)
    assert r.returncode == 0, r.stderr
    s = open_store(store_url)
    try:
        assert s.is_withdrawn(legacy, "ga_linkage")  # the old grant's gate closes
        assert s.is_withdrawn(str(key.pseudonym("+49891234567")), "ga_linkage")  # and new ones
    finally:
        s.close()
