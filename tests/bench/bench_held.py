"""Held calls: many concurrent calls parked in a prompt; the server's memory per call.

    .venv/bin/python tests/bench/bench_held.py [--target floor|consent-ivr|both]
        [--calls 5000] [--rate 1000] [--clients 1] [--max-calls 6000] [--settle 1.0]

For each server: start it, run ``--warmup`` calls, read VmRSS (/proc/<pid>/status; the sum over
the process tree is shown too if the server has children). Then the client process(es) connect
``--calls`` calls (at ``--rate`` per second, so the listen backlog is not flooded) and hold the
response to each call's first STREAM FILE (the first notice segment) until every call is parked
there: all calls are open at once, each inside the first prompt after its initial variables and
ANSWER. After ``--settle`` seconds VmRSS is read again; growth per call = (parked - before) /
calls, in KiB. Then all calls are released, run to completion (0-ms audio), and every outcome is
checked; VmRSS after completion is shown as well. The fd limit is raised in the client and the
servers (RLIMIT_NOFILE); ``--max-calls`` is passed to ``consent-ivr serve``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import benchlib as bl


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--max-calls", str(args.max_calls)] if args.max_calls else []
    with bl.running_server(name, args.consent_ivr, extra) as server:
        base = {"host": "127.0.0.1", "port": server.port, "path": bl.FLOW_ID, "timeout": 120.0}
        if args.warmup:
            bl.run_clients([{**base, "calls": args.warmup, "concurrency": 10, "id_prefix": "9"}])
        time.sleep(args.settle)
        rss_before, tree_before = bl.rss_kib(server.pid), bl.tree_rss_kib(server.pid)
        specs = bl.split_specs(base, args.calls, args.clients, rate=args.rate / args.clients)
        for spec in specs:
            spec["rate"] = args.rate / len(specs)
            spec["park"] = True
        clients = [bl.start_client(spec) for spec in specs]
        t0 = time.monotonic()
        parked_lines = []
        for client in clients:
            assert client.proc.stdout is not None
            parked_lines.append(client.proc.stdout.readline().strip())
        park_time = time.monotonic() - t0
        time.sleep(args.settle)
        rss_parked, tree_parked = bl.rss_kib(server.pid), bl.tree_rss_kib(server.pid)
        for client in clients:
            assert client.proc.stdin is not None
            client.proc.stdin.write("go\n")
            client.proc.stdin.flush()
        results = [bl.client_result(c) for c in clients]
        time.sleep(args.settle)
        rss_after = bl.rss_kib(server.pid)
        merged = bl.merge_results(results)
    print(f"-- {name}")
    bl.report_server(server)
    bl.report_client(clients, merged)
    parked = sum(int(line.split()[1]) for line in parked_lines if line.startswith("parked"))
    per_call = (rss_parked - rss_before) / max(parked, 1)
    row = {
        "before": rss_before,
        "parked": rss_parked,
        "after": rss_after,
        "per_call": per_call,
        "n_parked": parked,
        "wrong": merged["wrong"] + merged["errors"],
    }
    print(f"  parked: {parked_lines} after {park_time:.1f} s")
    print(
        f"  VmRSS before {rss_before} KiB, with {parked} parked {rss_parked} KiB, after all "
        f"completed {rss_after} KiB; growth {per_call:.1f} KiB per parked call"
    )
    if tree_before != rss_before or tree_parked != rss_parked:
        print(f"  process tree RSS: before {tree_before} KiB, parked {tree_parked} KiB")
    sys.stdout.flush()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.add_common_args(parser)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="connects per second")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls first")
    parser.add_argument("--max-calls", type=int, default=6000, help="for consent-ivr serve")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before RSS reads")
    args = parser.parse_args()
    bl.LOOP = args.loop
    limit = bl.raise_nofile(max(65536, 2 * args.calls + 1000))
    bl.header("held: concurrent calls parked in the first notice prompt", sys.argv)
    print(f"RLIMIT_NOFILE soft limit (inherited by the servers): {limit}")
    rows = {name: measure(name, args) for name in bl.targets(args.target)}
    print("-- summary (VmRSS, KiB)")
    for name, row in rows.items():
        print(
            f"  {name:12s} before {row['before']:8d}  parked {row['parked']:8d}  "
            f"{row['per_call']:6.1f} KiB/call ({row['n_parked']} parked)  {row['wrong']} wrong"
        )
    if len(rows) == 2:
        c, f = rows["consent-ivr"], rows["floor"]
        print(f"  consent-ivr/floor: KiB per call {bl.ratio(c['per_call'], f['per_call'])}")
    bad = any(row["wrong"] or row["n_parked"] != args.calls for row in rows.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
