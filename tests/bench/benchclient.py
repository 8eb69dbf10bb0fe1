"""The benchmark client process: plays Asterisk for many calls with harness/aclient.py.

    python tests/bench/benchclient.py '<json spec>'

Spec keys: ``host``, ``port``, ``path`` (flow id), ``calls``, ``concurrency`` (None = no limit),
``rate`` (calls per second, None = back to back), ``start_at`` (epoch seconds to begin, so
several client processes start together), ``pace`` (real seconds per virtual second),
``timeout`` (per line), ``dtmf`` (default "1"), ``id_prefix`` (unique call ids across processes),
``turnarounds`` (collect them), ``park`` (hold the response to the first STREAM FILE of every call
until all calls of this process are parked, print ``parked N`` and wait for a line on stdin).

Every call uses the real WAV lengths of the prompts (``WavSoundCatalog``): the server's engine
checks ``endpos`` against them, so a zero-length catalog would make every accept an early accept
and no call would end granted. With ``pace`` 0 the prompts take no real time.

The result is one JSON line (in the spec's ``result_file`` if given, else on stdout): counts
(``ok`` = CONSENT_STATUS granted), a few samples of wrong outcomes / errors, elapsed and client
CPU seconds, and optionally the turnarounds and the (start, end) epoch interval of every call.
``first`` = turnarounds of the first command (from the env block, includes connect),
``after_key`` = those of the command after the answer to the question (decision + evidence
write), ``turnarounds`` = all but the first.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

from consent_ivr.harness.aclient import run_fastagi_async
from consent_ivr.harness.asterisk import SimResult, SimulatedAsterisk, WavSoundCatalog
from consent_ivr.paths import sounds_dir

try:  # optional: a faster event loop when installed
    import uvloop  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    uvloop = None


async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, path = spec["host"], spec["port"], spec["path"]
    n = int(spec["calls"])
    concurrency = spec.get("concurrency") or n
    rate = spec.get("rate")
    pace = float(spec.get("pace", 0.0))
    timeout = float(spec.get("timeout", 60.0))
    dtmf = spec.get("dtmf", "1")
    prefix = spec.get("id_prefix", "0")
    want_turnarounds = bool(spec.get("turnarounds"))
    park = bool(spec.get("park"))
    catalog = WavSoundCatalog(sounds_dir(), "en")

    semaphore = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    first: list[float] = []
    turnarounds: list[float] = []
    after_key: list[float] = []
    intervals: list[list[float]] = []
    parked_ids: set[int] = set()
    all_parked = asyncio.Event()
    go = asyncio.Event()

    async def hold(sim: SimulatedAsterisk, line: bytes) -> None:
        if line.startswith(b"STREAM FILE") and id(sim) not in parked_ids:
            parked_ids.add(id(sim))
            if len(parked_ids) == n:
                all_parked.set()
            await go.wait()

    async def one(index: int) -> SimResult:
        if rate:
            delay = t0 + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        async with semaphore:
            mine: list[float] = []
            started = time.time()
            result: SimResult | None = None
            try:
                result = await run_fastagi_async(
                    host,
                    port,
                    path,
                    timeout=timeout,
                    pace=pace,
                    turnarounds=mine if want_turnarounds else None,
                    before_reply=hold if park else None,
                    dtmf=dtmf,
                    sounds=catalog,
                    env={
                        "agi_uniqueid": f"1700000000.{prefix}{index:06d}",
                        # a new caller on every call: the full exchange the floor does (one
                        # shared number would make every call after the first a returning
                        # caller, who hears the reminder instead of the notice)
                        "agi_callerid": f"+4989{prefix}{index:07d}",
                    },
                )
                return result
            finally:
                intervals.append([started, time.time()])
                if mine:
                    first.append(mine[0])
                    turnarounds.extend(mine[1:])
                    # The command after the answer to the question (the key) is where the
                    # server decides and, for consent-ivr, writes the evidence record.
                    lines = [d for k, d in result.log if k == "S>A"] if result else []
                    for i in range(1, min(len(lines), len(mine))):
                        if b'"0123456789*#"' in lines[i - 1]:
                            after_key.append(mine[i])
                            break

    start_at = spec.get("start_at")
    if start_at:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    t0 = loop.time()
    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    if park:
        waiter = asyncio.ensure_future(all_parked.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if all_parked.is_set():
            print(f"parked {len(parked_ids)}", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
        else:
            print(f"parked {len(parked_ids)} (not all: a call ended early)", flush=True)
        go.set()
        waiter.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = loop.time() - t0

    ok = wrong = errors = 0
    samples: list[str] = []
    for result in results:
        if isinstance(result, BaseException):
            errors += 1
            if len(samples) < 5:
                samples.append(f"error {type(result).__name__}: {result}")
        elif result.variables.get("CONSENT_STATUS") == "granted":
            ok += 1
        else:
            wrong += 1
            if len(samples) < 5:
                vs = {k: v for k, v in result.variables.items() if k.startswith("CONSENT_")}
                samples.append(f"wrong: agistatus={result.agistatus} {vs}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out: dict[str, Any] = {
        "calls": n,
        "ok": ok,
        "wrong": wrong,
        "errors": errors,
        "samples": samples,
        "elapsed": elapsed,
        "client_cpu": usage.ru_utime + usage.ru_stime,
        "intervals": intervals,
    }
    if want_turnarounds:
        out["first"] = first
        out["turnarounds"] = turnarounds
        out["after_key"] = after_key
    return out


def main() -> int:
    spec = json.loads(sys.argv[1])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if uvloop is not None:
        uvloop.install()
    result = asyncio.run(drive(spec))
    result["uvloop"] = uvloop is not None
    text = json.dumps(result, separators=(",", ":"))
    if spec.get("result_file"):  # large results: a file, not a pipe the parent reads later
        with open(spec["result_file"], "w", encoding="utf-8") as fh:
            fh.write(text)
        print("done", flush=True)
    else:
        print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
