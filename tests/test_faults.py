"""Fault tests against the real `consent-ivr serve` process: kill -9 mid-burst, a PostgreSQL
outage mid-load, two servers on one store, and the two-minute soak (tests/bench/soak.py).

Each ends with what an auditor would check: every call whose channel was told `granted` has its
durable granted record, and `consent-ivr evidence verify` passes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from consent_ivr.paths import PROJECT_ROOT
from faultkit import (
    Behaviour,
    Load,
    Outcome,
    PrivatePostgres,
    Serve,
    by_uniqueid,
    decision_records,
    dump,
    entries_in_chain,
    granted_without_record,
    pg_schema,
    run_until,
    verify_chain,
)
from storekit import store_url  # noqa: F401  (fixture: SQLite and PostgreSQL)

ACCEPT = Behaviour("accept", "1", frozenset({"granted"}))
MIX = (
    ACCEPT,
    Behaviour("decline", "2", frozenset({"declined"})),
    Behaviour("wrong-keys", "5,7,8", frozenset({"none"})),
    Behaviour("hang-up", "h@12.5", frozenset({"none"})),
)


def granted(o: Outcome) -> bool:
    return o.told_granted


@pytest.mark.faults
def test_kill_9_during_a_burst_of_accepting_calls_loses_no_decision_a_caller_was_told(
    store_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Serve(store_url, tmp_path) as srv:
        told = 0
        killed_at = 0.0

        def kill_at_the_100th_grant(line: bytes) -> None:
            # SIGKILL the moment a caller is told: the decisions of the calls around it are
            # being written or queued (a server that told before its commit loses them)
            nonlocal told, killed_at
            if line.startswith(b'SET VARIABLE "__CONSENT_GA_LINKAGE" "granted"'):
                told += 1
                if told == 100:
                    os.kill(srv.pid, signal.SIGKILL)
                    killed_at = time.monotonic()

        async def burst() -> list[Outcome]:
            load = Load(
                [srv.address], ACCEPT, workers=40, prefix="burst", watch=kill_at_the_100th_grant
            ).start()
            await run_until([load], lambda: killed_at > 0, 180, "100 granted calls")
            return await load.stop()

        outcomes = asyncio.run(burst())
        srv.kill9()  # reaps it
    cut = [o for o in outcomes if o.started < killed_at <= o.ended]
    assert len(cut) >= 10, "the kill was meant to hit calls in flight"
    records = decision_records(store_url)
    assert granted_without_record(outcomes, records) == []
    told_granted = [o for o in outcomes if o.told_granted]
    assert len(told_granted) >= 100
    # a record is written before the caller hears anything, so records >= told; each call at
    # most once, and (every caller pressed 1) nothing but grants
    assert len(records) >= len(told_granted)
    assert all(len(rs) == 1 for rs in by_uniqueid(records).values())
    assert {r["status"] for r in records.values()} == {"granted"}
    code, text = verify_chain(store_url)
    assert code == 0, text
    assert entries_in_chain(text) == len(records)

    # the store a crashed server left behind serves the next server as it is
    with Serve(store_url, tmp_path, name="after") as srv:

        async def calls_after() -> list[Outcome]:
            load = Load([srv.address], ACCEPT, workers=5, prefix="after").start()
            await run_until([load], lambda: len(load.outcomes) >= 20, 120, "20 calls")
            return await load.stop()

        after = asyncio.run(calls_after())
        assert srv.stop() == 0
    assert all(o.told_granted for o in after), dump([o for o in after if not o.told_granted])
    records = decision_records(store_url)
    assert granted_without_record(after, records) == []
    code, text = verify_chain(store_url)
    assert code == 0, text
    assert entries_in_chain(text) == len(records)


@pytest.mark.faults
def test_a_postgresql_outage_mid_load_fails_calls_closed_and_the_server_heals_without_a_restart(
    tmp_path: Path,
) -> None:
    with PrivatePostgres() as pg, Serve(pg.url, tmp_path) as srv:
        pid = srv.pid

        async def scenario() -> tuple[float, float, float, list[Outcome]]:
            # callers who press 1, each call ~0.4 s (pace 0.01 of a 43 s call)
            load = Load([srv.address], ACCEPT, workers=6, pace=0.01, prefix="pg").start()
            await run_until([load], lambda: load.count(granted) >= 20, 120, "20 granted calls")
            pg.stop("immediate")  # every connection cut, as in a crash
            down = time.monotonic()
            await run_until(
                [load],
                lambda: load.count(lambda o: o.started >= down) >= 10,
                120,
                "10 calls during the outage",
            )
            restart = time.monotonic()
            pg.start()
            up = time.monotonic()
            await run_until(
                [load],
                lambda: load.count(lambda o: o.started >= up and o.told_granted) >= 20,
                120,
                "20 granted calls after the restart",
            )
            return down, restart, up, await load.stop()

        down, restart, up, outcomes = asyncio.run(scenario())
        assert srv.alive and srv.pid == pid, "the server was restarted or died"
        during = [o for o in outcomes if o.started >= down and o.ended <= restart]
        after = [o for o in outcomes if o.started >= up]
        records = decision_records(pg.url)
        assert srv.stop() == 0
        code, text = verify_chain(pg.url)
        log = srv.log_text()
    assert len(during) >= 10
    for o in during:  # fail closed: the write failed, so the channel says error, never granted
        assert o.variables.get("CONSENT_STATUS") == "error", dump([o])
        assert o.variables.get("CONSENT_GA_LINKAGE") == "error", dump([o])
    assert "evidence.write_failed" in log
    assert after and all(o.told_granted for o in after), dump([o for o in after if not granted(o)])
    assert granted_without_record(outcomes, records) == []
    assert code == 0, text
    assert entries_in_chain(text) == len(records)
    assert all(len(rs) == 1 for rs in by_uniqueid(records).values())


@pytest.mark.faults
def test_two_servers_sharing_one_postgresql_store_under_load_lose_no_record_and_keep_one_chain(
    tmp_path: Path,
) -> None:
    calls = 600
    with pg_schema() as url:
        with Serve(url, tmp_path, name="a") as a, Serve(url, tmp_path, name="b") as b:

            async def load_both() -> list[Outcome]:
                load = Load(
                    [a.address, b.address], lambda i: MIX[i % len(MIX)], workers=40, prefix="pair"
                ).start()
                await run_until([load], lambda: load.started >= calls, 300, f"{calls} calls")
                return await load.stop()

            outcomes = asyncio.run(load_both())
            assert (a.stop(), b.stop()) == (0, 0)
        records = decision_records(url)
        code, text = verify_chain(url)
    assert all(o.completed for o in outcomes), dump([o for o in outcomes if not o.completed])
    wrong = [o for o in outcomes if o.variables["CONSENT_STATUS"] not in o.behaviour.expected]
    assert wrong == [], dump(wrong)
    per_server = Counter(o.server for o in outcomes)
    assert abs(per_server[0] - per_server[1]) <= 1, per_server  # calls alternate
    assert len(records) == len(outcomes) >= calls  # no lost record, no extra one
    per_call = by_uniqueid(records)
    for o in outcomes:
        (record,) = per_call[o.uniqueid]
        assert record["record_id"] == o.record_id
        assert record["status"] == o.variables["CONSENT_STATUS"]
    assert granted_without_record(outcomes, records) == []
    assert code == 0, text
    assert entries_in_chain(text) == len(records)
    # the chain interleaves the two servers' records (they really wrote at the same time)
    server_of = {o.uniqueid: o.server for o in outcomes}
    order = [server_of[r["call"]["uniqueid"]] for r in records.values()]  # in seq order
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 20, f"the servers' records hardly interleave ({switches} switches)"


@pytest.mark.soak
def test_soak_two_minutes_one_right_record_per_call_verified_chain_flat_memory() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "tests/bench/soak.py", "--minutes", "2"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=900,
        check=False,
    )
    print(done.stdout, done.stderr, f"({time.monotonic() - started:.0f} s)")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
