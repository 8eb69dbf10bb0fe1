"""The CPU a new caller's returning-caller look-up costs, in parts, in one process.

    .venv/bin/python tests/bench/bench_lookup_cost.py [--callers 3000] [--rounds 3]

For `--callers` distinct numbers not in a fresh SQLite store (what the saturation benchmark's
callers are), the thread CPU (`time.thread_time`) per caller of: the number's forms
(`number_forms`: phonenumbers parses and formats it), its pseudonyms (`lookup_pseudonyms`: the
forms plus an HMAC each), the store's answer for them (`recall_earlier`: one statement, one index
probe per pseudonym) and the transports' whole `look_up`. What the server's look-up thread
spends beyond `look_up` per call is the hand-over between threads (saturation's per-thread split).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consent_ivr.evidence.pseudonym import Keyring, PseudonymKey, number_forms
from consent_ivr.evidence.returning import look_up, lookup_pseudonyms, recall_earlier
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.loader import load_flow
from consent_ivr.paths import flows_dir


class _Quiet:
    def error(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the look-up failed")


def per_call(items: list[Any], work: Callable[[Any], object]) -> float:
    """Thread CPU microseconds per item."""
    t0 = time.thread_time()
    for item in items:
        work(item)
    return (time.thread_time() - t0) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callers", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    assert flow.returning is not None
    ring = Keyring(PseudonymKey.from_bytes(b"bench-key-0123456789abcdef", "DE"))
    rows: dict[str, list[float]] = {"forms": [], "pseudonyms": [], "store": [], "look_up": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "evidence.sqlite3")).open()
        try:
            for r in range(args.rounds):
                callers = [f"+4989{r}{n:07d}" for n in range(args.callers)]
                rows["forms"].append(per_call(callers, lambda c: number_forms(c, "DE")))
                rows["pseudonyms"].append(per_call(callers, lambda c: lookup_pseudonyms(ring, c)))
                found = [lookup_pseudonyms(ring, c) for c in callers]
                now = time.time()
                rows["store"].append(
                    per_call(found, lambda p, now=now: recall_earlier(store, p, flow, now))
                )
                rows["look_up"].append(
                    per_call(callers, lambda c: look_up(lambda: store, ring, c, flow, _Quiet()))
                )
        finally:
            store.close()
    print(f"new-caller look-up, {args.callers} callers x {args.rounds} rounds, CPU us per caller:")
    for name, values in rows.items():
        shown = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {name:10s} median {statistics.median(values):6.0f}  ({shown})")
    print(f"  pseudonyms per caller: {len(lookup_pseudonyms(ring, '+49891234567'))}")


if __name__ == "__main__":
    main()
