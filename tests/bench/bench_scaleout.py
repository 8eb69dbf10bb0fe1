"""Scale-out: decisions per second with 1, 2 and 4 FastAGI servers sharing one PostgreSQL store.

    .venv/bin/python tests/bench/bench_scaleout.py [--servers 1,2,4] [--calls 2000]
        [--concurrency 100] [--clients 2] [--pg postgresql://127.0.0.1:5432/test]

For each server count: a fresh PostgreSQL schema (dropped afterwards), that many
``consent-ivr serve --store <url>`` processes, ``--warmup`` calls on each, then ``--calls``
accepting calls with 0-ms audio, spread evenly over the servers from ``--clients`` client
processes at ``--concurrency`` in total (the same offered load whatever the server count). Every
call writes one durable record into the one hash chain, whose appends are serialised across
servers by a PostgreSQL advisory lock (``pg_advisory_xact_lock`` per chain): that lock is what
this benchmark shows. Reports decisions/s, server CPU per call (all servers), and the share of
samples (every 5 ms, from ``pg_locks``) in which some session waited for an advisory lock; then
``consent-ivr evidence verify`` on the store and the number of records, which must equal the
calls made. On a 2-core machine the servers, the clients and PostgreSQL share the cores: the
figures show the lock's cost and the absence of errors, not what more hardware would give.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import threading
from contextlib import ExitStack
from typing import Any

import benchlib as bl
import psycopg


def advisory_waits(url: str, stop: threading.Event, out: list[int]) -> None:
    """Sample, every 5 ms, whether any session waits for an advisory lock (1) or not (0)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.wait(0.005):
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            out.append(1 if row and row[0] else 0)


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    schema = "bench_" + secrets.token_hex(5)
    admin = psycopg.connect(args.pg, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in args.pg else "?"
    url = f"{args.pg}{sep}options=-csearch_path%3D{schema}"
    try:
        with ExitStack() as stack:
            servers = [
                stack.enter_context(
                    bl.running_server("consent-ivr", args.consent_ivr, ["--store", url])
                )
                for _ in range(n)
            ]
            bases = [
                {"host": "127.0.0.1", "port": s.port, "path": bl.FLOW_ID, "timeout": 60.0}
                for s in servers
            ]
            for i, base in enumerate(bases):
                warm = {**base, "calls": args.warmup, "concurrency": 10, "id_prefix": f"9{i}"}
                bl.run_clients([warm])
            specs = []
            per_server = max(1, args.clients // n) if args.clients >= n else 1
            for i, base in enumerate(bases):
                share = args.calls // n + (1 if i < args.calls % n else 0)
                for spec in bl.split_specs(
                    base, share, per_server, concurrency=max(1, args.concurrency // n)
                ):
                    spec["id_prefix"] = f"{i + 1}{spec['id_prefix']}"
                    specs.append(spec)
            cpu_before = sum(bl.tree_cpu_seconds(s.pid) for s in servers)
            samples: list[int] = []
            stop = threading.Event()
            sampler = threading.Thread(target=advisory_waits, args=(url, stop, samples))
            sampler.start()
            try:
                clients, results = bl.run_clients(specs)
            finally:
                stop.set()
                sampler.join()
            cpu = sum(bl.tree_cpu_seconds(s.pid) for s in servers) - cpu_before
            merged = bl.merge_results(results)
        verify = subprocess.run(
            [args.consent_ivr, "evidence", "verify", "--store", url],
            capture_output=True,
            text=True,
            timeout=600,
        )
        records = admin.execute(f"SELECT count(*) FROM {schema}.evidence").fetchone()
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    print(f"-- {n} server(s)")
    for server in servers:
        bl.report_server(server)
    bl.report_client(clients, merged)
    row = {
        "decisions_per_s": merged["ok"] / merged["elapsed"],
        "server_cpu_ms": cpu / merged["calls"] * 1000,
        "lock_wait_share": sum(samples) / len(samples) if samples else float("nan"),
        "verify_ok": verify.returncode == 0,
        "records": records[0] if records else 0,
        "expected": merged["calls"] + args.warmup * n,
        "wrong": merged["wrong"] + merged["errors"],
    }
    print(
        f"  {merged['calls']} calls in {merged['elapsed']:.2f} s: {row['decisions_per_s']:.1f} "
        f"decisions/s; server CPU {row['server_cpu_ms']:.2f} ms/call (all servers); an "
        f"advisory-lock waiter in {row['lock_wait_share']:.0%} of {len(samples)} samples"
    )
    print(
        f"  evidence verify: exit {verify.returncode}: {verify.stdout.strip()[:200]}"
        f"{verify.stderr.strip()[:200]}; records {row['records']} (expected {row['expected']})"
    )
    sys.stdout.flush()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="1,2,4", help="server counts, comma-separated")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100, help="in total, all servers")
    parser.add_argument("--clients", type=int, default=2, help="client processes in total")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls per server")
    parser.add_argument("--pg", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--consent-ivr", default=str(bl.VENV_BIN / "consent-ivr"))
    args = parser.parse_args()
    bl.header("scale-out: servers sharing one PostgreSQL store", sys.argv)
    rows = {int(n): measure(int(n), args) for n in args.servers.split(",")}
    print("-- summary")
    base = rows[min(rows)]["decisions_per_s"]
    for n, row in rows.items():
        print(
            f"  {n} server(s): {row['decisions_per_s']:7.1f} decisions/s "
            f"({row['decisions_per_s'] / base:.2f}x of {min(rows)}), "
            f"{row['server_cpu_ms']:.2f} ms server CPU/call, lock waiter "
            f"{row['lock_wait_share']:.0%}, chain {'verifies' if row['verify_ok'] else 'BROKEN'}, "
            f"records {row['records']}/{row['expected']}, {row['wrong']} wrong"
        )
    bad = any(
        not r["verify_ok"] or r["records"] != r["expected"] or r["wrong"] for r in rows.values()
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
