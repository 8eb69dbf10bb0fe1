"""Latency under load: calls arriving over time, prompts in real time, ~2000 calls in flight.

    .venv/bin/python tests/bench/bench_latency.py [--target floor|consent-ivr|both]
        [--rate 200] [--seconds 10] [--call-seconds 9] [--pace P] [--clients 2]
        [--max-calls 4000]

Calls arrive at ``--rate`` per second for ``--seconds`` (200/s for 10 s = 2000 calls). Each call
plays the example flow in real time, scaled: the client sleeps ``virtual seconds * pace`` before
each response, with ``pace`` chosen so a whole call lasts ``--call-seconds`` (the prompts keep
their real WAV lengths, which the engine checks). So about ``rate * call-seconds`` calls are in
flight. The client (split over ``--clients`` processes that start together) records the
turnaround of every command: the real time from writing a response (or the env block) to
receiving the server's next command line. Reports p50 / p99 / max of the turnarounds after the
first command (that of the first command, which includes the connection set-up, and that of the
command after the key, where the server decides and writes evidence, are shown separately too),
the maximum number of calls in flight, and wrong outcomes. ``--max-calls`` is passed to
``consent-ivr serve``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import benchlib as bl


def ms(value: float) -> str:
    return f"{value * 1000:8.2f}"


def measure(name: str, args: argparse.Namespace, pace: float) -> dict[str, Any]:
    extra = ["--max-calls", str(args.max_calls)] if args.max_calls else []
    with bl.running_server(name, args.consent_ivr, extra) as server:
        base = {"host": "127.0.0.1", "port": server.port, "path": bl.FLOW_ID, "timeout": 60.0}
        if args.warmup:
            bl.run_clients([{**base, "calls": args.warmup, "concurrency": 10, "id_prefix": "9"}])
        calls = round(args.rate * args.seconds)
        specs = bl.split_specs(
            base,
            calls,
            args.clients,
            rate=args.rate,
            start_delay=1.5,
            pace=pace,
            turnarounds=True,
        )
        cpu_before = bl.tree_cpu_seconds(server.pid)
        threads_before = bl.thread_snapshot(server.pid)
        clients, results = bl.run_clients(specs)
        cpu = bl.tree_cpu_seconds(server.pid) - cpu_before
        threads_after = bl.thread_snapshot(server.pid)
        merged = bl.merge_results(results)
    print(f"-- {name}")
    bl.report_server(server)
    bl.report_client(clients, merged)
    bl.report_split(threads_before, threads_after, merged["calls"])
    t, first = merged["turnarounds"], merged["first"]
    row = {
        "p50": bl.percentile(t, 50),
        "p99": bl.percentile(t, 99),
        "max": max(t, default=float("nan")),
        "first_p50": bl.percentile(first, 50),
        "first_p99": bl.percentile(first, 99),
        "first_max": max(first, default=float("nan")),
        "in_flight": bl.max_in_flight(merged["intervals"]),
        "wrong": merged["wrong"] + merged["errors"],
        "server_cpu": cpu,
    }
    print(
        f"  {len(t)} turnarounds (ms): p50 {ms(row['p50'])}  p99 {ms(row['p99'])}  "
        f"max {ms(row['max'])}"
    )
    print(
        f"  first command of a call ({len(first)}, incl. connect) (ms): "
        f"p50 {ms(row['first_p50'])}  p99 {ms(row['first_p99'])}  max {ms(row['first_max'])}"
    )
    key = merged["after_key"]
    row["key_p50"], row["key_p99"] = bl.percentile(key, 50), bl.percentile(key, 99)
    print(
        f"  command after the key ({len(key)}: decision + evidence) (ms): "
        f"p50 {ms(row['key_p50'])}  p99 {ms(row['key_p99'])}  max {ms(max(key, default=0.0))}"
    )
    print(
        f"  max in flight {row['in_flight']}; wall {merged['wall']:.1f} s; server CPU "
        f"{cpu:.2f} s; client CPU {merged['client_cpu']:.2f} s"
    )
    sys.stdout.flush()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bl.add_common_args(parser)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="arrival period")
    parser.add_argument("--call-seconds", type=float, default=9.0, help="real length of a call")
    parser.add_argument("--pace", type=float, default=None, help="overrides --call-seconds")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured calls first")
    parser.add_argument("--max-calls", type=int, default=4000, help="for consent-ivr serve")
    args = parser.parse_args()
    bl.LOOP = args.loop
    bl.raise_nofile()
    virtual = bl.virtual_call_seconds()
    pace = args.pace if args.pace is not None else args.call_seconds / virtual
    bl.header("latency: calls spread over time, real-time prompts", sys.argv)
    print(
        f"calls {round(args.rate * args.seconds)} at {args.rate:g}/s; a call is {virtual:.2f} "
        f"virtual s, pace {pace:.4f} -> {virtual * pace:.2f} real s"
    )
    rows = {name: measure(name, args, pace) for name in bl.targets(args.target)}
    print("-- summary (turnaround, ms)")
    for name, row in rows.items():
        print(
            f"  {name:12s} p50 {ms(row['p50'])}  p99 {ms(row['p99'])}  max {ms(row['max'])}  "
            f"in flight {row['in_flight']}  {row['wrong']} wrong"
        )
    if len(rows) == 2:
        c, f = rows["consent-ivr"], rows["floor"]
        print(
            f"  consent-ivr/floor: p50 {bl.ratio(c['p50'], f['p50'])}, "
            f"p99 {bl.ratio(c['p99'], f['p99'])}, max {bl.ratio(c['max'], f['max'])}"
        )
    return 1 if any(row["wrong"] for row in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
