"""Shared parts of the benchmark scripts in tests/bench (run by hand, never by pytest).

Run them with the project's virtualenv from the project root, e.g.
``.venv/bin/python tests/bench/bench_saturation.py --target both``. Each script starts the
servers it compares as subprocesses on loopback ports, drives them identically from a separate
client process (``benchclient.py``), and prints its figures and the exact command lines used.

Servers (``--target floor|consent-ivr|both``, default both, run one after the other in one run):

* ``floor``: ``<python> tests/bench/floor.py --listen 127.0.0.1:PORT`` — the hand-written
  minimal FastAGI server doing the same exchange (the lower bound).
* ``consent-ivr``: ``<venv>/bin/consent-ivr serve --listen 127.0.0.1:PORT --store
  <tmp>/evidence.sqlite3`` with ``CONSENT_IVR_HMAC_KEY`` set to a random 32-character key, on
  its default loop (uvloop where installed) unless ``--loop`` names one for both servers.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent
FLOW_ID = "call-tracking"
TARGETS = ("floor", "consent-ivr")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def add_common_args(parser: Any) -> None:
    parser.add_argument(
        "--target",
        choices=(*TARGETS, "both"),
        default="both",
        help="which server(s) to measure (default both, one after the other)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=None,
        help="event loop of BOTH servers (default: each its own, the floor asyncio as"
        " hand-written, consent-ivr its default: uvloop where installed)",
    )
    parser.add_argument(
        "--consent-ivr",
        default=str(VENV_BIN / "consent-ivr"),
        help="the consent-ivr executable (default: the one next to this python)",
    )


def targets(choice: str) -> list[str]:
    return list(TARGETS) if choice == "both" else [choice]


def command_line(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    shown = {k: "<random 32 hex chars>" if "KEY" in k else v for k, v in (env or {}).items()}
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in shown.items())
    text = shlex.join(str(a) for a in argv)
    return f"{prefix} {text}" if prefix else text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------- /proc readings


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                kids.extend(int(k) for k in fh.read().split())
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    seen = [pid]
    for p in seen:
        seen.extend(k for k in _children(p) if k not in seen)
    return seen


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class ThreadSnapshot:
    """CPU ticks per thread name (the kernel's ``comm``; the main thread is ``main loop``) and
    minor page faults of one process, read from ``/proc/PID/task``. consent-ivr names its
    threads (``evidence-writer``, ``evidence-checkp``, ``log-writer``); the floor has one."""

    ticks: dict[str, int]
    minor_faults: int


def thread_snapshot(pid: int) -> ThreadSnapshot:
    ticks: dict[str, int] = {}
    faults = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            name = "main loop" if task.name == str(pid) else (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            # fields[0] is field 3 (state): minflt is field 10, utime and stime 14 and 15.
            ticks[name] = ticks.get(name, 0) + int(fields[11]) + int(fields[12])
            faults += int(fields[7])
    return ThreadSnapshot(ticks, faults)


def report_split(before: ThreadSnapshot, after: ThreadSnapshot, calls: int) -> dict[str, float]:
    """Print CPU ms per call per thread and minor page faults per call between two snapshots;
    return the per-thread figures. (Threads that ended in between are not counted.)"""
    split = {
        name: (t - before.ticks.get(name, 0)) / CLK_TCK / calls * 1000
        for name, t in sorted(after.ticks.items(), key=lambda kv: -kv[1])
    }
    faults = (after.minor_faults - before.minor_faults) / calls
    print(
        "  CPU ms/call by thread: "
        + ", ".join(f"{name} {value:.3f}" for name, value in split.items())
        + f"; minor page faults/call {faults:.1f}"
    )
    return {**split, "minor faults": faults}


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        with suppress(OSError):
            total += cpu_ticks(p)
    return total / CLK_TCK


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        with suppress(OSError):
            total += rss_kib(p)
    return total


# ------------------------------------------------------------------------------ servers


@dataclass
class Server:
    name: str
    argv: list[str]
    env_shown: dict[str, str]
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    exit_code: int | None = None
    stderr_tail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def command(self) -> str:
        return command_line(self.argv, self.env_shown)


LOOP: str | None = None  # set from --loop by the scripts (None: each server's own default)


def server_argv(
    name: str, port: int, workdir: Path, consent_ivr: str
) -> tuple[list[str], dict[str, str]]:
    if name == "floor":
        argv = [
            PYTHON,
            str(HERE / "floor.py"),
            "--listen",
            f"127.0.0.1:{port}",
            "--loop",
            LOOP or "asyncio",
        ]
        return argv, {}
    store = workdir / "evidence.sqlite3"
    argv = [consent_ivr, "serve", "--listen", f"127.0.0.1:{port}", "--store", str(store)]
    if LOOP is not None:
        argv += ["--loop", LOOP]
    return argv, {"CONSENT_IVR_HMAC_KEY": secrets.token_hex(16)}


@contextmanager
def running_server(
    name: str, consent_ivr: str, extra: Sequence[str] = (), ready_timeout: float = 30.0
) -> Iterator[Server]:
    """Start a server, wait for ``listening on HOST:PORT``, yield it, stop it with SIGTERM."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        argv, env_shown = server_argv(name, port, workdir, consent_ivr)
        argv += list(extra)
        errfile = open(workdir / "stderr.txt", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=errfile,
            env={**os.environ, **env_shown},
            cwd=ROOT,
        )
        assert proc.stdout is not None
        server = Server(name, argv, env_shown, proc, port, workdir)
        try:
            deadline = time.monotonic() + ready_timeout
            line = b""
            while time.monotonic() < deadline and proc.poll() is None:
                line = proc.stdout.readline()
                if line.startswith(b"listening on "):
                    server.port = int(line.split()[-1].rsplit(b":", 1)[1])
                    break
            else:
                raise RuntimeError(
                    f"{name} did not print 'listening on' (exit {proc.poll()}): "
                    f"{(workdir / 'stderr.txt').read_text(errors='replace')[-2000:]}"
                )
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    server.notes.append("did not exit within 60 s of SIGTERM; killed")
                    proc.kill()
                    proc.wait()
            server.exit_code = proc.returncode
            proc.stdout.close()
            errfile.close()
            server.stderr_tail = (workdir / "stderr.txt").read_text(errors="replace")[-2000:]


def server_available(consent_ivr: str) -> bool:
    try:
        done = subprocess.run(
            [consent_ivr, "serve", "--help"], capture_output=True, timeout=60, check=False
        )
    except OSError:
        return False
    return done.returncode == 0


# ------------------------------------------------------------------------------- client


@dataclass
class Client:
    argv: list[str]
    proc: subprocess.Popen[str]
    result_file: Path

    @property
    def command(self) -> str:
        return command_line(self.argv)


def start_client(spec: dict[str, Any]) -> Client:
    fd, result_file = tempfile.mkstemp(prefix="benchclient-", suffix=".json")
    os.close(fd)
    spec = {**spec, "result_file": result_file}
    argv = [PYTHON, str(HERE / "benchclient.py"), json.dumps(spec, separators=(",", ":"))]
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    return Client(argv, proc, Path(result_file))


def client_result(client: Client) -> dict[str, Any]:
    assert client.proc.stdout is not None
    out = client.proc.stdout.read()
    client.proc.wait()
    try:
        text = client.result_file.read_text(encoding="utf-8")
    finally:
        client.result_file.unlink(missing_ok=True)
    if client.proc.returncode != 0 or not text.startswith("{"):
        raise RuntimeError(f"client failed (exit {client.proc.returncode}): {out[-2000:]}")
    result: dict[str, Any] = json.loads(text)
    return result


def run_clients(specs: list[dict[str, Any]]) -> tuple[list[Client], list[dict[str, Any]]]:
    clients = [start_client(spec) for spec in specs]
    return clients, [client_result(c) for c in clients]


def split_specs(
    base: dict[str, Any],
    calls: int,
    processes: int,
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    start_delay: float = 0.0,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Client specs that split ``calls`` (and concurrency / rate) over ``processes``."""
    processes = max(1, min(processes, calls))
    start_at = time.time() + start_delay if start_delay else None
    specs = []
    for i in range(processes):
        share = calls // processes + (1 if i < calls % processes else 0)
        spec = {**base, **extra, "calls": share, "id_prefix": f"{i + 1}"}
        if concurrency is not None:
            spec["concurrency"] = max(1, concurrency // processes)
        if rate is not None:
            spec["rate"] = rate / processes
        if start_at is not None:
            spec["start_at"] = start_at
        specs.append(spec)
    return specs


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "calls": sum(r["calls"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "wrong": sum(r["wrong"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "samples": [s for r in results for s in r["samples"]][:5],
        "elapsed": max(r["elapsed"] for r in results),
        "wall": 0.0,
        "client_cpu": sum(r["client_cpu"] for r in results),
        "first": [t for r in results for t in r.get("first", [])],
        "turnarounds": [t for r in results for t in r.get("turnarounds", [])],
        "after_key": [t for r in results for t in r.get("after_key", [])],
        "intervals": [iv for r in results for iv in r.get("intervals", [])],
    }
    if merged["intervals"]:
        iv = merged["intervals"]
        merged["wall"] = max(b for _, b in iv) - min(a for a, _ in iv)
        merged["elapsed"] = merged["wall"]
    return merged


def virtual_call_seconds(language: str = "en") -> float:
    """Virtual length of a call where 1 is pressed at the question: ANSWER (0.5 s), every
    first-layer segment, the closing message (from the WAV lengths of the example flow)."""
    import yaml

    from consent_ivr.harness.asterisk import TICKS_PER_SECOND, WavSoundCatalog
    from consent_ivr.paths import sounds_dir

    flow = yaml.safe_load((ROOT / "flows" / f"{FLOW_ID}.yaml").read_text(encoding="utf-8"))
    catalog = WavSoundCatalog(sounds_dir(), language)
    names = [seg["id"] for seg in flow["notice"]] + ["close_granted"]
    samples = sum(catalog(f"{FLOW_ID}/{name}") or 0 for name in names)
    return 0.5 + samples / TICKS_PER_SECOND


def max_in_flight(intervals: list[list[float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def header(title: str, argv: Sequence[str]) -> None:
    print(f"== {title}")
    print(f"command: {command_line([PYTHON, *argv])}")
    print(f"host: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, clk_tck {CLK_TCK}")
    sys.stdout.flush()


def report_server(server: Server) -> None:
    print(f"  server command: {server.command}")
    print(f"  server pid {server.pid}, exit status after SIGTERM: {server.exit_code}")
    for note in server.notes:
        print(f"  note: {note}")
    if server.exit_code not in (0, None) and server.stderr_tail:
        print("  server stderr (tail):")
        for line in server.stderr_tail.splitlines()[-10:]:
            print(f"    {line}")


def report_client(clients: list[Client], merged: dict[str, Any]) -> None:
    for client in clients:
        print(f"  client command: {client.command}")
    print(
        f"  outcomes: {merged['ok']}/{merged['calls']} granted, {merged['wrong']} wrong, "
        f"{merged['errors']} errors"
    )
    for sample in merged["samples"]:
        print(f"    e.g. {sample}")
