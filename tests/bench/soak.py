"""Soak: N minutes of mixed calls against `consent-ivr serve`, then the evidence and memory checks.

    .venv/bin/python tests/bench/soak.py --minutes 2 [--rate 20] [--pace 0.05] [--store sqlite]

Callers arrive at `--rate` per second for `--minutes` (at most `--max-in-flight` at a time) and
each is one of `faultkit.behaviour_mix`: accepting, declining (at the question or during the
notice), silent, wrong keys, hanging up at a random moment or after the decision, answering a
prompt with garbage, vanishing at a random command, vanishing inside the environment block.
Prompts take `--pace` real seconds per second of audio (0.05: a 43 s call takes 2.1 s), so
about `rate * 2.5` calls are in flight. The server's RSS is sampled every second.

Then, with the server stopped by SIGTERM (it must exit 0), it asserts:

* one record per call that got past its environment block, none for the others, none unknown;
* each record's status is the one its behaviour must end in (garbage: error; vanishing: granted
  exactly when the key reached the server, else none), and equals what the channel was told;
* every call told `granted` has its durable granted record; no caller got a client-side error;
* `consent-ivr evidence verify` passes and counts exactly these records;
* no caller number in the server's log (it logs at info level: every call's finish, every error);
* flat memory: see `flat_memory`.

It prints its figures and exits 0 when every check holds, 1 otherwise. tests/test_faults.py runs
it for two minutes in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: faultkit, storekit

from faultkit import (
    Outcome,
    Serve,
    behaviour_mix,
    by_uniqueid,
    decision_records,
    entries_in_chain,
    granted_without_record,
    run_call,
    verify_chain,
)

#: "Flat": after the warm-up, the last third's median RSS is at most this much above the first
#: third's (see flat_memory).
FLAT_FRACTION = 0.10
#: What one call in flight holds in the server, rounded up (README: held calls, 14.0-14.2 KiB).
HELD_CALL_KIB = 16


def flat_memory(
    samples: list[tuple[float, int, int]], warmup: float, rate: float
) -> tuple[bool, str]:
    """Memory is flat when, after `warmup` seconds (imports, first connections, allocator arenas),
    the median RSS of the last third of the (time, RSS, calls in flight) samples is at most 10 %
    above the median of the first third — less what more calls in flight hold (16 KiB each), so
    that a busy machine, whose calls take longer, is not taken for a leak.

    Why this bound. Medians ignore the ups and downs of the calls in flight. What may still grow
    is bounded: the cache of parsed response lines (2,048 lines, about 1 MiB, filled slowly by
    the random `endpos` of hang-ups and early declines) and SQLite's page cache (2 MiB per
    connection) — together under 10 % of a ~40 MiB server, and they level off (a 12-minute run:
    +4.3 % between the thirds, 0.3 KiB per call in its last five minutes). A leak does not level
    off: the thirds' medians lie two thirds of the measured time apart, so at 20 calls/s the
    2-minute run puts 1,200 calls between them, and leaking 4 KiB per call — under a third of
    what a call in flight holds — adds 4.7 MiB, beyond the bound (it failed, +16.6 %, with such
    a leak put into the server on purpose); a leaked call state would add 16 MiB."""
    measured = [s for s in samples if s[0] >= warmup]
    if len(measured) < 9:
        return False, f"too few RSS samples after the warm-up ({len(measured)})"
    third = len(measured) // 3
    head, tail = measured[:third], measured[-third:]
    first = statistics.median(s[1] for s in head)
    last = statistics.median(s[1] for s in tail)
    busier = max(0.0, statistics.median(s[2] for s in tail) - statistics.median(s[2] for s in head))
    apart = statistics.median(s[0] for s in tail) - statistics.median(s[0] for s in head)
    per_call = (last - first) / max(1.0, apart * rate)
    limit = first * (1 + FLAT_FRACTION) + busier * HELD_CALL_KIB
    (t0, k0, _), (t1, k1, _) = measured[0], measured[-1]
    text = (
        f"RSS {k0 / 1024:.1f} MiB after the warm-up ({t0:.0f} s), {k1 / 1024:.1f} MiB at the "
        f"end ({t1:.0f} s); medians of the first / last third {first / 1024:.1f} / "
        f"{last / 1024:.1f} MiB ({(last - first) / first * 100:+.1f} %, {per_call:+.2f} KiB per "
        f"call; flat: <= {limit / 1024:.1f} MiB, {busier:.0f} more calls in flight); "
        f"max {max(s[1] for s in samples) / 1024:.1f} MiB"
    )
    return last <= limit, text


async def soak(args: argparse.Namespace, store: str, workdir: Path) -> int:
    rng = random.Random(args.seed)
    failures: list[str] = []
    srv = Serve(store, workdir, "--reload-interval", "2", log_level="info", name="soak").start()
    samples: list[tuple[float, int, int]] = []
    outcomes: list[Outcome] = []
    callers: set[str] = set()
    in_flight: set[asyncio.Task[Outcome]] = set()
    limit = asyncio.Semaphore(args.max_in_flight)
    t0 = time.monotonic()
    duration = args.minutes * 60

    async def one(index: int) -> Outcome:
        # one number per call: the example flow honours a returning caller's decision, and a
        # behaviour must decide its own call (the index keeps the numbers apart)
        caller = f"+49{rng.choice(['89', '30', '40'])}{10**7 + index}"
        callers.add(caller)
        behaviour = behaviour_mix(rng)
        async with limit:
            outcome = await run_call(
                srv.address,
                index,
                behaviour,
                uniqueid=f"soak.{index}",
                caller=caller,
                pace=args.pace,
                timeout=60.0,
            )
        outcomes.append(outcome)
        return outcome

    async def sample_rss() -> None:
        while True:
            samples.append((time.monotonic() - t0, srv.rss_kib(), len(in_flight)))
            await asyncio.sleep(1.0)

    sampler = asyncio.ensure_future(sample_rss())
    index = 0
    try:
        while time.monotonic() - t0 < duration:
            task = asyncio.ensure_future(one(index))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            index += 1
            await asyncio.sleep(max(0.0, t0 + index / args.rate - time.monotonic()))
        load_seconds = time.monotonic() - t0
        pending = (await asyncio.wait(set(in_flight), timeout=180))[1] if in_flight else set()
        if pending:
            failures.append(f"{len(pending)} calls did not end within 180 s of the last start")
            for task in pending:
                task.cancel()
    finally:
        sampler.cancel()
        cpu = server_cpu_seconds(srv.pid) if srv.alive else float("nan")
        idle_rss = srv.rss_kib() if srv.alive else 0
        code = srv.stop() if srv.alive else srv.proc.returncode if srv.proc else None
    if code != 0:
        failures.append(f"serve exited {code} after SIGTERM: {srv.log_tail()}")

    # ----------------------------------------------------------------------------- checks
    records = decision_records(store)
    per_call = by_uniqueid(records)
    known = {o.uniqueid for o in outcomes}
    unknown = sorted(set(per_call) - known)
    if unknown:
        failures.append(f"{len(unknown)} records of calls never placed, e.g. {unknown[:3]}")
    client_errors = [o for o in outcomes if o.error is not None]
    if client_errors:
        failures.append(
            f"{len(client_errors)} calls failed at the client, e.g. {client_errors[0].error}"
        )
    wrong: list[str] = []
    for o in outcomes:
        if o.error is not None:
            continue
        mine = per_call.get(o.uniqueid, [])
        want = 0 if o.behaviour.env_only else 1
        if len(mine) != want:
            wrong.append(f"{o.uniqueid} ({o.behaviour.name}): {len(mine)} records, expected {want}")
            continue
        if not mine:
            continue
        status = mine[0]["status"]
        expected = set(o.behaviour.expected)
        if o.behaviour.name == "vanishing-peer":
            expected = {"granted"} if o.key_delivered else {"none"}
        if status not in expected:
            wrong.append(f"{o.uniqueid} ({o.behaviour.name}): record {status}, expected {expected}")
        told = o.variables.get("CONSENT_STATUS")
        if o.completed and told != status:
            wrong.append(f"{o.uniqueid} ({o.behaviour.name}): told {told}, record {status}")
    if wrong:
        failures.append(f"{len(wrong)} calls with a wrong record: {wrong[:5]}")
    lost = granted_without_record(outcomes, records)
    if lost:
        failures.append(f"{len(lost)} calls told granted without their record: {lost[:5]}")
    verify_code, verify_text = verify_chain(store)
    if verify_code != 0:
        failures.append(f"evidence verify: {verify_text}")
    elif entries_in_chain(verify_text) != len(records):
        failures.append(f"the chain holds other entries than the {len(records)} records")
    log = srv.log_text()
    lengths = {len(form) for caller in callers for form in forms(caller)}
    windows = {  # every digit window of the log as long as a caller number's forms
        run[i : i + n]
        for run in re.findall(r"\d+", log)
        for n in lengths
        for i in range(len(run) - n + 1)
    }
    leaked = [c for c in callers if any(form in windows for form in forms(c))]
    if leaked:
        failures.append(f"{len(leaked)} caller numbers in clear in the server log")
    flat, memory = flat_memory(samples, max(30.0, 0.25 * load_seconds), args.rate)
    if not flat:
        failures.append(f"memory not flat: {memory}")

    # ---------------------------------------------------------------------------- figures
    if args.rss_file:
        Path(args.rss_file).write_text("".join(f"{t:.1f} {k} {n}\n" for t, k, n in samples))
    statuses = dict(sorted(collections.Counter(r["status"] for r in records.values()).items()))
    kinds = collections.Counter(o.behaviour.name for o in outcomes)
    events = collections.Counter(re.findall(r'"event": "([a-z_.]+)"', log))
    told = sum(o.told_granted for o in outcomes)
    lines = [
        f"soak: {args.minutes:g} min at {args.rate:g} calls/s, pace {args.pace:g}, "
        f"seed {args.seed}",
        f"  store {store.split('?')[0]}; server: {' '.join(srv.argv[3:])}",
        f"  calls placed: {len(outcomes)} in {load_seconds:.0f} s",
        f"  by behaviour: {dict(sorted(kinds.items()))}",
        f"  records: {len(records)} {statuses}; calls without a record by design "
        f"(vanished in the environment block): {kinds['vanish-in-env-block']}",
        f"  told granted: {told}, each with its durable granted record",
        f"  chain: {verify_text}",
        f"  memory: {memory}; idle at the end {idle_rss / 1024:.1f} MiB; {len(samples)} samples",
        f"  server CPU {cpu:.1f} s ({cpu / max(1, len(outcomes)) * 1000:.2f} ms per call)",
        f"  server log lines by event: {dict(events.most_common(8))}",
        f"  serve exit status after SIGTERM: {code}",
        *(f"FAIL: {failure}" for failure in failures),
        "soak: ok" if not failures else f"soak: {len(failures)} checks failed",
    ]
    print("\n".join(lines), flush=True)
    return 0 if not failures else 1


def forms(caller: str) -> tuple[str, str]:
    """The caller number as digits with the country code and in national form (0…)."""
    digits = caller.lstrip("+")
    return digits, "0" + digits[2:]


def server_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    p.add_argument("--rate", type=float, default=20.0, help="new calls per second (default 20)")
    p.add_argument("--pace", type=float, default=0.05, help="real s per s of audio (0.05)")
    p.add_argument("--max-in-flight", type=int, default=200, help="client-side cap (200)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--rss-file", default=None, help="write the samples (s, KiB, calls) here")
    p.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="a new SQLite file, or a fresh schema on the test PostgreSQL (storekit)",
    )
    args = p.parse_args()
    if args.minutes <= 0 or args.rate <= 0 or args.pace < 0:
        p.error("--minutes and --rate must be > 0, --pace >= 0")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    with tempfile.TemporaryDirectory(prefix="consent-ivr-soak-") as tmp:
        if args.store == "sqlite":
            return asyncio.run(soak(args, str(Path(tmp) / "evidence.sqlite3"), Path(tmp)))
        from storekit import pg_schema_url

        schema = pg_schema_url()
        url = next(schema)
        try:
            return asyncio.run(soak(args, url, Path(tmp)))
        finally:
            schema.close()


if __name__ == "__main__":
    sys.exit(main())
