"""Evidence write and gate latency on SQLite and PostgreSQL (1 and 50 records per transaction),
and the writer's CPU per record by records per commit (SQLite).

    .venv/bin/python tests/bench/bench_evidence_write.py \
        [--pg postgresql://127.0.0.1:5432/test] [-n 300]

Each write is a durable commit (SQLite WAL synchronous=FULL; PostgreSQL synchronous_commit=on)
that appends to the hash chain under the write lock. PostgreSQL runs in a throwaway schema.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agi"))

from consent_ivr.evidence.record import prepare
from consent_ivr.evidence.store import open_store
from consent_ivr.tracking.gate import check_gate

ROOT = Path(__file__).resolve().parents[2]


def template() -> dict[str, object]:
    conn = sqlite3.connect(ROOT / "tests/data/evidence-schema1.sqlite3")
    text = conn.execute("SELECT record_json FROM evidence LIMIT 1").fetchone()[0]
    conn.close()
    return dict(json.loads(text))


def run(url: str, n: int) -> dict[str, str]:
    base = template()
    store = open_store(url).open()

    def rec() -> dict[str, object]:
        r = dict(base)
        r["record_id"] = store.new_record_id()
        r["status"] = "granted"
        r["outcomes"] = [
            {"purpose": "ga_linkage", "outcome": "granted", "reason": "key", "decided_ms": 1}
        ]
        return r

    out = {}
    try:
        for _ in range(20):  # warm-up
            store.write(rec())
        single = []
        ids = []
        for _ in range(n):
            p = [prepare(rec())]
            ids.append(p[0].record_id)
            t0 = time.perf_counter()
            store.write_prepared(p)
            single.append((time.perf_counter() - t0) * 1000)
        batch = []
        for _ in range(max(10, n // 10)):
            p = [prepare(rec()) for _ in range(50)]
            t0 = time.perf_counter()
            store.write_prepared(p)
            batch.append((time.perf_counter() - t0) * 1000)
        q = statistics.quantiles
        out["1/txn"] = (
            f"p50 {statistics.median(single):.2f} ms, p99 {q(single, n=100)[98]:.2f} ms "
            f"({n} commits)"
        )
        out["50/txn"] = (
            f"p50 {statistics.median(batch):.2f} ms per batch = "
            f"{statistics.median(batch) / 50:.3f} ms/record, p99 {q(batch, n=100)[98]:.2f} ms "
            f"({len(batch)} batches)"
        )
        gate = []
        for rid in ids:
            t0 = time.perf_counter()
            d = check_gate(store, purpose="ga_linkage", channel_value="granted", record_id=rid)
            gate.append((time.perf_counter() - t0) * 1000)
            assert d.open, d
        out["gate"] = (
            f"p50 {statistics.median(gate):.2f} ms, p99 {q(gate, n=100)[98]:.2f} ms "
            f"({len(gate)} checks: record lookup + withdrawal check)"
        )
        assert store.verify().ok
    finally:
        store.close()
    return out


def cpu_by_batch(url: str, n: int = 1024) -> str:
    """The writing thread's CPU per record (`time.thread_time`: SQLite's work and the kernel's
    for the synced commit) with 1, 2, 4, 16 and 64 records per commit: what a decision costs the
    server's evidence writer when decisions come one at a time, and when they pile up."""
    base = template()
    store = open_store(url).open()
    parts = []
    try:
        for size in (1, 2, 4, 16, 64):
            batches = []
            for _ in range(n // size):
                batch = []
                for _ in range(size):
                    r = dict(base)
                    r["record_id"] = store.new_record_id()
                    r["caller_pseudonym"] = secrets.token_hex(32)  # HMACs are random keys
                    batch.append(prepare(r))
                batches.append(batch)
            t0 = time.thread_time()
            for batch in batches:
                store.write_prepared(batch)
            parts.append(f"{size}: {(time.thread_time() - t0) / n * 1e6:.0f}")
    finally:
        store.close()
    return "writer CPU us/record by records per commit: " + ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", default="postgresql://127.0.0.1:5432/test")
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:  # on the project's disk, not tmpfs
        print("sqlite    ", run(str(Path(tmp) / "bench.sqlite3"), args.n))
        print("sqlite    ", cpu_by_batch(str(Path(tmp) / "batches.sqlite3")))
    import psycopg

    schema = "bench_" + secrets.token_hex(4)
    with psycopg.connect(args.pg, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in args.pg else "?"
            print("postgresql", run(f"{args.pg}{sep}options=-csearch_path%3D{schema}", args.n))
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
