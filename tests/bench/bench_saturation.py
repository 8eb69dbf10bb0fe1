"""Saturation: full calls back to back with 0-ms audio; calls/s and server CPU time per call.

    .venv/bin/python tests/bench/bench_saturation.py [--target floor|consent-ivr|both]
        [--calls 2000] [--concurrency 100] [--warmup 20] [--clients 1] [--rounds 3]

For each server: start it, place ``--warmup`` calls (not measured), read the server's CPU time
(utime+stime of its process tree from /proc), place ``--calls`` calls from a separate client
process at ``--concurrency`` (caller presses 1 at the question; prompts take no real time: the
client answers at once with the real WAV lengths as endpos), read the CPU time again. Reports
calls/s, server CPU ms per call, client CPU ms per call, wrong outcomes, and the
consent-ivr / floor ratios.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import benchlib as bl


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with bl.running_server(name, args.consent_ivr) as server:
        base = {"host": "127.0.0.1", "port": server.port, "path": bl.FLOW_ID, "timeout": 60.0}
        if args.warmup:
            bl.run_clients([{**base, "calls": args.warmup, "concurrency": 10, "id_prefix": "9"}])
        cpu_before = bl.tree_cpu_seconds(server.pid)
        threads_before = bl.thread_snapshot(server.pid)
        specs = bl.split_specs(base, args.calls, args.clients, concurrency=args.concurrency)
        clients, results = bl.run_clients(specs)
        cpu_after = bl.tree_cpu_seconds(server.pid)
        threads_after = bl.thread_snapshot(server.pid)
        merged = bl.merge_results(results)
    print(f"-- {name}")
    bl.report_server(server)
    bl.report_client(clients, merged)
    bl.report_split(threads_before, threads_after, merged["calls"])
    cpu = cpu_after - cpu_before
    row = {
        "calls_per_s": merged["calls"] / merged["elapsed"],
        "server_cpu_ms": cpu / merged["calls"] * 1000,
        "client_cpu_ms": merged["client_cpu"] / merged["calls"] * 1000,
        "wrong": merged["wrong"] + merged["errors"],
    }
    print(
        f"  {merged['calls']} calls in {merged['elapsed']:.2f} s = {row['calls_per_s']:.1f} "
        f"calls/s; server CPU {cpu:.2f} s = {row['server_cpu_ms']:.2f} ms/call "
        f"(clock tick {1000 / bl.CLK_TCK:.0f} ms); client CPU {row['client_cpu_ms']:.2f} ms/call"
    )
    sys.stdout.flush()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.add_common_args(parser)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls first")
    parser.add_argument("--clients", type=int, default=1, help="client processes (split evenly)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median ratio)")
    args = parser.parse_args()
    bl.LOOP = args.loop
    bl.header("saturation: back-to-back calls, 0-ms audio", sys.argv)
    # Rounds alternate the servers (floor, consent-ivr, floor, ...) so that slow drifts of a
    # noisy machine hit both; the verdict is the median of the per-round ratios.
    rounds = [
        {name: measure(name, args) for name in bl.targets(args.target)} for _ in range(args.rounds)
    ]
    print("-- summary")
    for n, rows in enumerate(rounds, 1):
        for name, row in rows.items():
            print(
                f"  round {n} {name:12s} {row['calls_per_s']:8.1f} calls/s  "
                f"{row['server_cpu_ms']:7.2f} ms server CPU/call  {row['wrong']} wrong"
            )
    if all(len(rows) == 2 for rows in rounds):
        cpu = [r["consent-ivr"]["server_cpu_ms"] / r["floor"]["server_cpu_ms"] for r in rounds]
        rate = [r["consent-ivr"]["calls_per_s"] / r["floor"]["calls_per_s"] for r in rounds]
        print(
            "  consent-ivr/floor server CPU per call, per round: "
            + ", ".join(f"{x:.2f}x" for x in cpu)
            + f"; median {bl.median(cpu):.2f}x; calls/s median {bl.median(rate):.2f}x"
        )
    rows = {k: v for r in rounds for k, v in r.items()}
    return 1 if any(row["wrong"] for row in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
