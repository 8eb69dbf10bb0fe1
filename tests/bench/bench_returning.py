"""Returning callers (issue 13): the look-up's cost on a store of 1 million decisions, and the
calls' latencies with and without the `returning:` block, on SQLite and PostgreSQL.

    .venv/bin/python tests/bench/bench_returning.py [--rows 1000000] [--reps 10] [--lookups 2000]
        [--backend sqlite|postgresql|both] [--play-ms 1870]

For each backend a store is filled with ``--rows`` decisions (random callers, four records each,
two flows, the last 60 days; evidence rows and their chain entries, one transaction of
``executemany``) plus one heavy caller with 20,000 records of another flow. Then:

1. **The look-up** (`evidence.returning.recall_earlier`, what both transports run while the first
   prompt plays) for ``--lookups`` known and unknown callers and for the heavy caller: with the
   index ``evidence_returning (caller_pseudonym, flow_id, created_at)`` (migration 4), with only
   the first release's ``evidence_caller (caller_pseudonym)``, and with neither. The query plans
   are printed.
2. **Calls** through process AGI (``agi/consent-ivr.agi``, executed as Asterisk does) and over
   FastAGI (``consent-ivr serve``, one server per variant), ``--reps`` each, on the same store:
   the example flow without its block (a copy, as version 2), with it for a new caller (nothing
   to honour: the full flow), and with it for a returning caller (the reminder). The first prompt
   "plays" ``--play-ms`` (default the example's English first segment, 1.87 s) before it is
   answered; every other prompt is answered at once. Timed: exec (or connect) to the first prompt;
   the end of the first prompt to the next command (with the block: the wait for the look-up —
   the dead air this feature could add, bounded by 250 ms); key 1 at the question (or the
   reminder's end) to the next command (the decision and its synced record). Medians, p90 and
   the ratios with/without, interleaved in the same run.

PostgreSQL at $CONSENT_IVR_TEST_PG (default postgresql://127.0.0.1:5432/test), in a schema of
its own, dropped at the end. Run it by hand, once; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

from consent_ivr.evidence.chain import latest_decision_sql
from consent_ivr.evidence.pseudonym import Keyring, PseudonymKey
from consent_ivr.evidence.returning import lookup_pseudonyms, recall_earlier
from consent_ivr.evidence.store import ChainStore, open_store
from consent_ivr.flow.loader import load_flow
from consent_ivr.harness.asterisk import SimulatedAsterisk

PG_URL = os.environ.get("CONSENT_IVR_TEST_PG", "postgresql://127.0.0.1:5432/test")
SECRET = "bench-returning-key-" + "0123456789abcdef"
KEY = PseudonymKey.from_bytes(SECRET.encode())
RETURNING = "+49891230001"  # decided once (key 1) before the returning calls
HEAVY = "heavy-caller"
DAY = 86_400


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def fill(store: ChainStore, rows: int, notice: str) -> float:
    """`rows` decisions of random callers (4 each) and the heavy caller's 20,000; seconds."""
    t0 = time.perf_counter()
    now = time.time()
    evidence: list[tuple[Any, ...]] = []
    entries: list[tuple[Any, ...]] = []
    heavy = hashlib.sha256(HEAVY.encode()).hexdigest()

    def add(i: int, pseudonym: str, flow: str, at: float, status: str) -> None:
        rid = f"{i:032x}"
        body = json.dumps(
            {
                "flow": {"id": flow, "notice_sha256": notice},
                "outcomes": [{"outcome": status, "purpose": "ga_linkage", "reason": "key"}],
                "reason": "key",
                "record_id": rid,
                "created_at": iso(at),
                "status": status,
            }
        )
        evidence.append(
            (rid, iso(at), "1.1", flow, 1, "0" * 64, "2026-11", notice, "en", pseudonym,
             KEY.key_id, status, "key", body)
        )  # fmt: skip
        entries.append(
            (i + 1, "decision", iso(at), rid, pseudonym, None, None, "0" * 64, "0" * 64,
             f"{i:064x}")
        )  # fmt: skip

    def flush() -> None:  # in chunks of 50,000 rows, all in the one transaction
        db.executemany("INSERT INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", evidence)
        db.executemany(
            "INSERT INTO entry (seq, kind, created_at, record_id, caller_pseudonym, purpose,"
            " body, body_sha256, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            entries,
        )
        evidence.clear()
        entries.clear()

    store.open()
    db = store._backend()
    with db.write_transaction():
        for i in range(rows):
            caller = hashlib.sha256(b"c%d" % (i // 4)).hexdigest()
            flow = "call-tracking" if i % 2 else "other-flow"
            add(i, caller, flow, now - (i * 7919 % (60 * DAY)), "granted" if i % 3 else "declined")
            if len(evidence) >= 50_000:
                flush()
        for j in range(20_000):
            add(rows + j, heavy, "other-flow", now - j * 60, "declined")
        add(rows + 20_000, heavy, "call-tracking", now - 30 * DAY + 60, "granted")
        flush()
    db.execute("ANALYZE")
    return time.perf_counter() - t0


def plan(store: ChainStore) -> str:
    """The look-up's plan for a caller with two pseudonyms (the store's own statement)."""
    db = store._backend()
    sql = latest_decision_sql(2)
    params = ("x", "call-tracking", "y", "call-tracking")
    if db.name == "sqlite":
        rows = db.query("EXPLAIN QUERY PLAN " + sql, params)
        return "; ".join(str(r[-1]) for r in rows)
    rows = db.query("EXPLAIN " + sql, params)
    return " | ".join(str(r[0]).strip() for r in rows[:8])


def time_lookups(store: ChainStore, flow: Any, callers: list[list[str]]) -> list[float]:
    out = []
    for pseudonyms in callers:
        t0 = time.perf_counter()
        recall_earlier(store, pseudonyms, flow, time.time())
        out.append(time.perf_counter() - t0)
    return out


def us(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1e6:9.1f} µs  "
        f"p99 {bl.percentile(values, 99) * 1e6:9.1f} µs"
    )


def lookup_bench(store: ChainStore, flow: Any, n: int) -> None:
    keyring = Keyring(KEY)
    known = [[hashlib.sha256(b"c%d" % i).hexdigest()] for i in range(0, n * 50, 50)]
    unknown = [lookup_pseudonyms(keyring, f"+4940{i:07d}") for i in range(n)]
    heavy = [[hashlib.sha256(HEAVY.encode()).hexdigest()]] * max(20, n // 20)
    db = store._backend()
    variants = (
        ("evidence_returning (caller, flow, time)", []),
        ("evidence_caller (caller) only", ["DROP INDEX evidence_returning"]),
        (
            "no index",
            ["DROP INDEX evidence_caller"],
        ),
    )
    for label, drops in variants:
        for sql in drops:
            db.execute(sql)
        if db.name == "sqlite":
            db.execute("ANALYZE")
        print(f"  look-up with {label}: plan: {plan(store)}")
        cap = 10 if label == "no index" else n  # a full scan per look-up: a few suffice
        k, u, h = known[:cap], unknown[:cap], heavy[:cap]
        print(f"    known caller    {us(time_lookups(store, flow, k))}  (n={len(k)})")
        print(f"    unknown caller  {us(time_lookups(store, flow, u))}  (n={len(u)})")
        print(
            f"    heavy caller    {us(time_lookups(store, flow, h))}  (n={len(h)}, 20,001 records)"
        )
    db.execute("CREATE INDEX evidence_caller ON evidence(caller_pseudonym)")
    db.execute("CREATE INDEX evidence_returning ON evidence(caller_pseudonym, flow_id, created_at)")


def drive(
    fd: int, write: Any, block: bytes, t0: float, play: float, timeout: float = 30.0
) -> tuple[float, float, float, bool]:
    """Answer one call's commands as Asterisk would: (env block written -> first STREAM FILE,
    end of the first prompt -> next command, key 1 at the question or the end of the reminder
    -> next command, was the reminder played?). The first prompt "plays" `play` seconds."""
    data = b""
    first_prompt = after_first = -1.0
    sent_at = 0.0
    stage = "start"
    reminder = False
    write(block)
    while True:
        while b"\n" not in data:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError("no command")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the script (or server) ended the call")
            data += chunk
        line, data = data.split(b"\n", 1)
        now = time.perf_counter()
        if stage == "first_answered":
            after_first, stage = now - sent_at, "playing"
        elif stage == "decided":
            return first_prompt, after_first, now - sent_at, reminder
        if line.startswith(b"STREAM FILE"):
            if first_prompt < 0:
                first_prompt = now - t0
                time.sleep(play)
                stage = "first_answered"
                answer = b"200 result=0 endpos=99999999\n"
            elif b"reminder_" in line:
                reminder, stage = True, "decided"  # silence keeps the earlier decision
                answer = b"200 result=0 endpos=99999999\n"
            elif line.endswith(b'"0123456789*#"'):
                stage = "decided"
                answer = b"200 result=49 endpos=8000\n"  # key 1 at the question
            else:
                answer = b"200 result=0 endpos=99999999\n"
        elif line.startswith(b"SET VARIABLE"):
            answer = b"200 result=1\n"
        else:
            answer = b"200 result=0\n"
        sent_at = time.perf_counter()
        write(answer)


def call(
    argv: list[str], env: dict[str, str], caller: str, play: float
) -> tuple[float, float, float, bool]:
    """One process-AGI call (exec counts into the time to the first prompt)."""
    block = SimulatedAsterisk(
        request=argv[0], args=argv[1:], env={"agi_callerid": caller}
    ).env_block()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=env, cwd=bl.ROOT, bufsize=0,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        return drive(proc.stdout.fileno(), proc.stdin.write, block, t0, play)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def call_tcp(
    address: tuple[str, int], caller: str, play: float
) -> tuple[float, float, float, bool]:
    """One FastAGI call to a running server (connect counts into the time to the first prompt)."""
    block = SimulatedAsterisk(
        network=True, network_script="call-tracking", env={"agi_callerid": caller}
    ).env_block()
    t0 = time.perf_counter()
    sock = socket.create_connection(address, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return drive(sock.fileno(), sock.sendall, block, t0, play)
    finally:
        sock.close()


def ms(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:7.1f} ms  "
        f"p90 {bl.percentile(values, 90) * 1000:7.1f}  max {max(values) * 1000:7.1f}"
    )


def call_bench(url: str, reps: int, play: float, tmp: Path) -> None:
    plain = tmp / "plain"
    plain.mkdir()
    for name in ("call-tracking.yaml", "withdrawal.yaml"):
        shutil.copy(bl.ROOT / "flows" / name, plain / name)
    text = (plain / "call-tracking.yaml").read_text(encoding="utf-8")
    # another version (R18 refuses the same version with other words), without the block
    text = text.split("\nreturning:")[0].replace("version: 1 ", "version: 2 ", 1)
    (plain / "call-tracking.yaml").write_text(text + "\n")
    base = {**os.environ, "CONSENT_IVR_HMAC_KEY": SECRET, "CONSENT_IVR_STORE": url}
    script = str(bl.ROOT / "agi" / "consent-ivr.agi")
    with_block = {**base, "CONSENT_IVR_FLOWS": str(bl.ROOT / "flows")}
    without = {**base, "CONSENT_IVR_FLOWS": str(plain)}
    argv = [script, "call-tracking"]
    print("  process AGI (agi/consent-ivr.agi, one process per call):")
    compare(
        lambda env, caller, play: call(argv, env, caller, play),
        {"without": without, "with": with_block},
        reps,
        play,
        "+4930",
    )
    servers = {name: serve(env, tmp / f"serve-{name}.log") for name, env in
               (("without", without), ("with", with_block))}  # fmt: skip
    try:
        print("  FastAGI (consent-ivr serve, one server per variant, same store):")
        compare(
            lambda env, caller, play: call_tcp(servers[env["BENCH_VARIANT"]][1], caller, play),
            {
                "without": {**without, "BENCH_VARIANT": "without"},
                "with": {**with_block, "BENCH_VARIANT": "with"},
            },
            reps,
            play,
            "+4932",
        )
    finally:
        for proc, _address in servers.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    flows = env["CONSENT_IVR_FLOWS"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "consent_ivr.cli", "serve", "--listen", "127.0.0.1:0",
         "--store", env["CONSENT_IVR_STORE"], "--flows", flows, "--reload-interval", "0"],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        env={**env, "CONSENT_IVR_LOG_LEVEL": "warning"}, cwd=bl.ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"the server did not start: {log.read_text()[-500:]}")
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def compare(
    place: Any, envs: dict[str, dict[str, str]], reps: int, play: float, prefix: str
) -> None:
    """The three variants, interleaved (a busy moment hits each alike), and the ratios."""
    place(envs["with"], RETURNING, 0.0)  # the returning caller's decision, if not yet made
    place(envs["without"], prefix + "9999999", 0.0)  # warm-up
    rows: dict[str, list[tuple[float, float, float, bool]]] = {
        "without the block": [],
        "with it, new caller": [],
        "with it, returning caller": [],
    }
    for i in range(reps):
        rows["without the block"].append(place(envs["without"], f"{prefix}0{i:06d}", play))
        rows["with it, new caller"].append(place(envs["with"], f"{prefix}1{i:06d}", play))
        rows["with it, returning caller"].append(place(envs["with"], RETURNING, play))
    medians: dict[str, tuple[float, ...]] = {}
    for label, results in rows.items():
        firsts, afters, keys = ([r[i] for r in results] for i in range(3))
        reminded = sum(r[3] for r in results)
        print(f"   {label} (n={len(results)}, reminder played in {reminded}):")
        print(f"     to the first prompt            {ms(firsts)}")
        print(f"     first prompt's end -> next     {ms(afters)}")
        what = "end of the reminder" if reminded else "key 1 at the question"
        print(f"     {what + ' -> next':30s} {ms(keys)}")
        medians[label] = tuple(statistics.median(v) for v in (firsts, afters, keys))
    w = medians["without the block"]
    for label in ("with it, new caller", "with it, returning caller"):
        m = medians[label]
        print(
            f"   ratio {label} / without (medians): first prompt {bl.ratio(m[0], w[0])},"
            f" after the first prompt {m[1] * 1000 - w[1] * 1000:+.1f} ms,"
            f" decision {bl.ratio(m[2], w[2])}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--play-ms", type=float, default=1870.0)
    args = parser.parse_args()
    bl.header("returning callers: look-up and call latency", sys.argv)
    flow = load_flow(bl.ROOT / "flows" / "call-tracking.yaml")
    notice = flow.notice_sha256["en"]
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="bench-returning-") as tmpdir:
            tmp = Path(tmpdir)
            schema = ""
            if backend == "sqlite":
                url = str(tmp / "evidence.sqlite3")
            else:
                import psycopg

                schema = "bench_" + secrets.token_hex(4)
                admin = psycopg.connect(PG_URL, autocommit=True)
                admin.execute(f"CREATE SCHEMA {schema}")
                url = f"{PG_URL}?options=-csearch_path%3D{schema}"
            try:
                store = open_store(url)
                seconds = fill(store, args.rows, notice)
                total = store.count()
                print(f"-- {backend}: {total:,} decisions, filled in {seconds:.1f} s")
                lookup_bench(store, flow, args.lookups)
                store.close()
                call_bench(url, args.reps, args.play_ms / 1000, tmp)
            finally:
                if schema:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")
                    admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
