"""Process-AGI start-up: time from exec to the first AGI command and to the first prompt.

    .venv/bin/python tests/bench/bench_agi_start.py [--reps 30] [--flow FLOW] [--play-ms 200]
        [--script PATH]

Each repetition executes ``agi/consent-ivr.agi FLOW`` (or ``--script``: e.g. the agi-bin
entry `consent-ivr install-asterisk` writes, which sets its own variables) as Asterisk does (the
file itself, so its ``#!`` line and launcher are measured too; env ``CONSENT_IVR_HMAC_KEY`` set,
``CONSENT_IVR_STORE`` in a temporary folder), writes a full env block on its stdin at once (as
Asterisk does) and measures the time until the first command line arrives on its stdout; it then
answers each command as Asterisk would (``200 result=1`` for SET VARIABLE, ``200 result=0`` else)
until the first ``STREAM FILE`` (the first prompt the caller hears) and kills the script.
It goes on answering (every prompt heard to its end, the first after ``--play-ms``, key 1 at the
question) and also times the pause from the key to the next command: the decision and its
synced evidence record.
Interleaved with it, ``[sys.executable, "-S", "-c", "pass"]`` is timed from start to exit. Prints
the medians (and min / max) and the ratios.
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
    argv: list[str], env: dict[str, str], block: bytes, timeout: float = 30.0, play: float = 0.2
) -> tuple[float, float, bytes, int, float]:
    """(seconds to the first command, seconds to the first STREAM FILE, first line, commands
    before it, seconds from the key 1 at the question to the next command).

    Every prompt is answered as heard to its end (an ``endpos`` past its length, which the engine
    clamps), the first one after `play` seconds (a stand-in for its playback, which really lasts
    several seconds), the others at once; the question is answered with key 1, so the script
    decides ``granted`` and writes its evidence record (opening the store, the synced commit;
    the imports it needs happen in a thread during the first prompt) before its next command.
    """
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
        first_at: float | None = None
        prompt_at: float | None = None
        first_line = b""
        commands = 0
        prompt_commands = 0
        key_at: float | None = None
        while True:
            while b"\n" not in data:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
                if not ready:
                    raise TimeoutError(f"no AGI command within {timeout} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the script exited before its first prompt: {data!r}")
                data += chunk
            line, data = data.split(b"\n", 1)
            now = time.perf_counter()
            commands += 1
            if first_at is None:
                first_at, first_line = now - t0, line
                if not line.strip():
                    raise RuntimeError(f"unexpected first line {line!r}")
            if key_at is not None:
                assert prompt_at is not None
                return first_at, prompt_at, first_line, prompt_commands, now - key_at
            if line.startswith(b"STREAM FILE") and prompt_at is None:
                prompt_at, prompt_commands = now - t0, commands
                time.sleep(play)
            if line.startswith(b"STREAM FILE") and line.endswith(b'"0123456789*#"'):
                answer = b"200 result=49 endpos=8000\n"  # key 1 at the question
                key_at = time.perf_counter()
                proc.stdin.write(answer)
                continue
            if line.startswith(b"STREAM FILE"):
                answer = b"200 result=0 endpos=99999999\n"
            elif line.startswith(b"SET VARIABLE"):
                answer = b"200 result=1\n"
            else:
                answer = b"200 result=0\n"
            proc.stdin.write(answer)
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
    parser.add_argument(
        "--play-ms",
        type=float,
        default=200.0,
        help="how long the first prompt 'plays' before it is answered (default 200)",
    )
    parser.add_argument(
        "--script",
        default=str(bl.ROOT / "agi" / "consent-ivr.agi"),
        help="the AGI script to run (default agi/consent-ivr.agi)",
    )
    args = parser.parse_args()
    bl.header("process-AGI start-up", sys.argv)
    agi_argv = [args.script, args.flow]
    bare_argv = [sys.executable, "-S", "-c", "pass"]
    with tempfile.TemporaryDirectory(prefix="bench-agi-") as tmp:
        shown = {
            "CONSENT_IVR_HMAC_KEY": secrets.token_hex(16),
            "CONSENT_IVR_STORE": str(Path(tmp) / "evidence.sqlite3"),
        }
        env = {**os.environ, **shown}

        def block_for(n: int) -> bytes:
            """The env block of call `n`: a new caller every call (the example flow remembers
            a caller's decision; a returning caller hears the reminder, not the question)."""
            sim = SimulatedAsterisk(
                request=agi_argv[0], args=agi_argv[1:], env={"agi_callerid": f"+4930{n:08d}"}
            )
            return sim.env_block()

        block = block_for(0)
        print(f"agi command: {bl.command_line(agi_argv, shown)}  (cwd {bl.ROOT})")
        print(f"  stdin: the simulator's env block ({len(block)} bytes), written at once")
        warm, _prompt, line, commands, _key = time_agi(agi_argv, env, block)
        print(
            f"  first command line: {line.decode()!r}; the first STREAM FILE is command "
            f"{commands} (unmeasured warm-up run: {warm * 1000:.1f} ms)"
        )
        print(f"baseline: {bl.command_line(bare_argv)}  (start to exit)")
        time_exit(bare_argv)
        agi: list[float] = []
        prompt: list[float] = []
        decision: list[float] = []
        bare: list[float] = []
        for rep in range(args.reps):
            first, to_prompt, _line, _n, after_key = time_agi(
                agi_argv, env, block_for(rep + 1), play=args.play_ms / 1000
            )
            agi.append(first)
            prompt.append(to_prompt)
            decision.append(after_key)
            bare.append(time_exit(bare_argv))
    rows = (
        ("consent-ivr.agi to 1st command", agi),
        ("consent-ivr.agi to 1st prompt", prompt),
        ("key 1 to the next command", decision),
        ("python -S -c pass", bare),
    )
    for label, values in rows:
        print(
            f"  {label:32s} median {statistics.median(values) * 1000:7.1f} ms  "
            f"min {min(values) * 1000:7.1f}  max {max(values) * 1000:7.1f}  (n={len(values)})"
        )
    base = statistics.median(bare)
    print(f"  ratio 1st command / baseline (medians): {bl.ratio(statistics.median(agi), base)}")
    print(f"  ratio 1st prompt / baseline (medians):  {bl.ratio(statistics.median(prompt), base)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
