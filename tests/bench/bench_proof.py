"""How long the whole-flow proof takes, and how much memory, per language of a flow.

    .venv/bin/python tests/bench/bench_proof.py [FLOW] [--rounds 3] [--no-baseline]

For each language: the proof (`consent_ivr.lint.proof.prove`, what `consent-ivr lint` runs)
`--rounds` times in this process, with its states, transitions, distinct calls and bound, the
median and the fastest time, and its peak Python memory (tracemalloc, in a round of its own).
The baseline, run in the same process: the same search keyed by the engine's *whole* state (what
a test-only explorer did before the proof merged states that can no longer change an outcome),
which shows what the state merging buys. Target (issue #8): <= 3 s per language for the example.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agi"))

from consent_ivr.engine import Call, Finish  # noqa: E402
from consent_ivr.flow.loader import load_flow  # noqa: E402
from consent_ivr.lint.proof import events_for, prove  # noqa: E402


def full_state(call: Call) -> tuple[Any, ...]:
    """The engine's whole state, with nothing merged (the baseline's key)."""
    return (
        call._phase,
        (call._current.prompt.id, call._current.role, call._current.offset)
        if call._current
        else None,
        tuple((i.prompt.id, i.role, i.offset) for i in call._queue),
        call._question,
        tuple(call._counters),
        call._replays,
        call._early_accepts,
        tuple(sorted(call._heard.items())),
        tuple(sorted((k, v[0], v[1]) for k, v in call._outcomes.items())),
        call._hung_up,
        call._status,
    )


def baseline(flow: Any, lang: str) -> tuple[int, float]:
    """States and seconds of the unmerged search (depth-first, as the old explorer)."""
    began = time.perf_counter()
    start = Call(flow, lang)
    first = start.start()
    seen = {(full_state(start), repr(first))}
    stack = [(start, first)]
    while stack:
        call, action = stack.pop()
        if isinstance(action, Finish):
            continue
        for event in events_for(action, flow):
            child = call.clone()
            nxt = child.send(event)
            key = (full_state(child), repr(nxt))
            if key not in seen:
                seen.add(key)
                stack.append((child, nxt))
    return len(seen), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("flow", nargs="?", default=str(ROOT / "flows" / "call-tracking.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    flow = load_flow(args.flow)
    print(f"flow {flow.label} ({args.flow}), {args.rounds} rounds per language")
    for lang in flow.languages:
        times = []
        for _ in range(args.rounds):
            result = prove(flow, lang)
            times.append(result.seconds)
        tracemalloc.start()
        prove(flow, lang)
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        verdict = "holds" if result.ok and not result.violations else "VIOLATED"
        print(
            f"  {lang}: proof {verdict}: {result.states:,} states, {result.transitions:,}"
            f" transitions, {result.paths:,} distinct calls, every call ends within"
            f" {result.longest} steps / {result.most_keys} key presses"
        )
        print(
            f"      time median {statistics.median(times):.2f} s, fastest {min(times):.2f} s"
            f" (target <= 3 s); peak Python memory {peak / 2**20:.1f} MiB"
        )
        if not args.no_baseline:
            states, seconds = baseline(flow, lang)
            print(
                f"      baseline (whole-state keys, nothing merged): {states:,} states,"
                f" {seconds:.1f} s: the proof takes {min(times) / seconds:.3f}x its time"
                f" ({seconds / min(times):.0f}x faster) for {result.states / states:.3f}x its"
                " states"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
