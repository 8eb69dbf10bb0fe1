"""Process-AGI start-up: time from exec to the first AGI command, against a bare interpreter.

    .venv/bin/python tests/bench/bench_agi_start.py [--reps 30] [--flow call-tracking]

Each repetition starts ``[sys.executable, "agi/consent-ivr.agi", FLOW]`` as the simulator does
(env ``CONSENT_IVR_HMAC_KEY`` set, ``CONSENT_IVR_STORE`` in a temporary folder), writes a full
env block on its stdin at once (as Asterisk does) and measures the time until the first command
line arrives on its stdout; the script is then killed. Interleaved with it, ``[sys.executable,
"-S", "-c", "pass"]`` is timed from start to exit. Prints the medians (and min / max) and the
ratio.
"""

from __future__ import annotations

import argparse
import os
import secrets
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

from consent_ivr.harness.asterisk import SimulatedAsterisk


def time_agi(
    argv: list[str], env: dict[str, str], block: bytes, timeout: float = 30.0
) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=bl.ROOT,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(block)
        fd = proc.stdout.fileno()
        data = b""
        deadline = t0 + timeout
        while b"\n" not in data:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
            if not ready:
                raise TimeoutError(f"no AGI command within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the script exited before its first command: {data!r}")
            data += chunk
        elapsed = time.perf_counter() - t0
        line = data.split(b"\n", 1)[0]
        if not line.strip():
            raise RuntimeError(f"unexpected first line {data!r}")
        return elapsed, line
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


def time_exit(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=bl.ROOT)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--flow", default=bl.FLOW_ID)
    args = parser.parse_args()
    bl.header("process-AGI start-up", sys.argv)
    agi_argv = [sys.executable, "agi/consent-ivr.agi", args.flow]
    bare_argv = [sys.executable, "-S", "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="bench-agi-") as tmp:
        shown = {
            "CONSENT_IVR_HMAC_KEY": secrets.token_hex(16),
            "CONSENT_IVR_STORE": str(Path(tmp) / "evidence.sqlite3"),
        }
        env = {**os.environ, **shown}
        block = SimulatedAsterisk(request=agi_argv[0], args=agi_argv[1:]).env_block()
        print(f"agi command: {bl.command_line(agi_argv, shown)}  (cwd {bl.ROOT})")
        print(f"  stdin: the simulator's env block ({len(block)} bytes), written at once")
        warm, line = time_agi(agi_argv, env, block)
        print(
            f"  first command line: {line.decode()!r} "
            f"(unmeasured warm-up run: {warm * 1000:.1f} ms)"
        )
        print(f"baseline: {bl.command_line(bare_argv)}  (start to exit)")
        time_exit(bare_argv)
        agi: list[float] = []
        bare: list[float] = []
        for _ in range(args.reps):
            agi.append(time_agi(agi_argv, env, block)[0])
            bare.append(time_exit(bare_argv))
    for label, values in (("consent-ivr.agi to 1st command", agi), ("python -S -c pass", bare)):
        print(
            f"  {label:32s} median {statistics.median(values) * 1000:7.1f} ms  "
            f"min {min(values) * 1000:7.1f}  max {max(values) * 1000:7.1f}  (n={len(values)})"
        )
    print(f"  ratio (medians): {bl.ratio(statistics.median(agi), statistics.median(bare))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
