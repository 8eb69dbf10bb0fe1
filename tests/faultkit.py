"""Fault-test kit: a `consent-ivr serve` process to kill, a private PostgreSQL cluster to stop,
simulated callers that misbehave on purpose, and the store checks every fault test ends with.

Used by tests/test_faults.py and tests/bench/soak.py. Everything polls with deadlines; nothing
sleeps and then asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consent_ivr.evidence.store import open_store
from consent_ivr.harness.aclient import run_fastagi_async
from consent_ivr.harness.asterisk import Output, SimulatedAsterisk, SimulationError, WavSoundCatalog
from consent_ivr.paths import PROJECT_ROOT

#: The pseudonym key of every server the kit starts (a test key, never a real one).
KEY_TEXT = "fault-test-key-0123456789abcdef"
FLOW = "call-tracking"
#: The consent variables a tracking step reads: told `granted` means one of these said so.
CONSENT_VARIABLES = ("CONSENT_STATUS", "CONSENT_GA_LINKAGE")
#: One catalog for every simulated call: the server names prompts by absolute path.
SOUNDS = WavSoundCatalog()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ------------------------------------------------------------------------ the server process


class Serve:
    """`consent-ivr serve` as a subprocess on a free loopback port, its log in a file (a file
    never blocks the server, unlike a pipe nobody reads)."""

    def __init__(
        self,
        store: str,
        workdir: Path,
        *extra: str,
        log_level: str = "warning",
        name: str = "serve",
    ) -> None:
        self.store = store
        self.log_path = workdir / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.argv = [
            sys.executable,
            "-m",
            "consent_ivr.cli.main",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            store,
            *(() if "--reload-interval" in extra else ("--reload-interval", "0")),
            *extra,
        ]
        self.env = {
            **os.environ,
            "CONSENT_IVR_HMAC_KEY": KEY_TEXT,
            "CONSENT_IVR_LOG_LEVEL": log_level,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] = ("", 0)

    def start(self, timeout: float = 60.0) -> Serve:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=log,
                env=self.env,
                cwd=PROJECT_ROOT,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill9()
                raise AssertionError(
                    f"consent-ivr serve did not start (exit {self.proc.returncode}): "
                    f"{self.log_tail()}"
                )
            if select.select([self.proc.stdout], [], [], min(left, 0.5))[0]:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    continue
                line += chunk
        assert line.startswith(b"listening on "), line
        host, port = line.split()[-1].decode().rsplit(":", 1)
        self.address = (host, int(port))
        return self

    def __enter__(self) -> Serve:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.alive:
            self.kill9()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no drain, no writer shutdown, no flush of anything in memory."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM (drain) and the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"serve did not exit within {timeout:.0f} s of SIGTERM") from None

    def rss_kib(self) -> int:
        """The server's resident set (all its threads), from /proc."""
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


# ------------------------------------------------------------- a private PostgreSQL cluster


def postgres_bin() -> Path:
    """The folder of initdb/pg_ctl: $CONSENT_IVR_TEST_PG_BIN, the newest
    /usr/lib/postgresql/*/bin (Debian), or the one on PATH."""
    configured = os.environ.get("CONSENT_IVR_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise AssertionError(
        "the PostgreSQL outage test starts a private cluster and needs initdb and pg_ctl "
        "(Debian: postgresql; or set CONSENT_IVR_TEST_PG_BIN to their folder)"
    )


class PrivatePostgres:
    """A throw-away PostgreSQL cluster of the test's own (initdb in a temporary folder, a free
    loopback port, no Unix socket), so that it can be stopped and started mid-load without
    touching the shared server. initdb and postgres refuse to run as root: as root the cluster
    runs as the `postgres` OS user (runuser)."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.as_user: list[str] = []
        owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise AssertionError(
                    "running as root, the private PostgreSQL cluster needs the `postgres` OS "
                    "user (initdb refuses root)"
                ) from None
            owner = (user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="consent-ivr-pg-"))
        if owner is not None:
            os.chown(self.root, *owner)
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 120.0) -> None:
        done = subprocess.run(
            [*self.as_user, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
                f" {self.log_tail()}"
            )

    def __enter__(self) -> PrivatePostgres:
        try:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            for attempt in range(5):  # a free port may be taken between the probe and the bind
                self.port = free_port()
                try:
                    self.start()
                    break
                except AssertionError:
                    if attempt == 4:
                        raise
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.running():
                self.stop()
        finally:
            self._remove()

    def start(self) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "120",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster (`immediate`: like a crash — every connection cut, WAL replayed at
        the next start)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-1000:]
        except OSError:
            return ""

    def _remove(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # a stop that failed
        shutil.rmtree(self.root, ignore_errors=True)


# -------------------------------------------------------------------- misbehaving callers


class Vanished(Exception):
    """The simulated Asterisk dropped the connection instead of answering."""


@dataclass(frozen=True)
class Fault:
    """What a caller does wrong at its `at`-th command starting with `command`: `garbage`
    answers `data` instead of the real answer; `vanish` closes the connection unanswered."""

    kind: str  # "garbage" | "vanish"
    command: bytes = b""  # b"" = any command
    at: int = 1
    data: bytes = b""


#: Called with every command line a simulated Asterisk reads, before it answers it.
Watch = Callable[[bytes], None]


class FaultyAsterisk(SimulatedAsterisk):
    """The simulated Asterisk with one injected fault (see `Fault`) and an optional `watch`."""

    def __init__(self, fault: Fault | None = None, watch: Watch | None = None, **options: Any):
        super().__init__(**options)
        self.fault = fault
        self.watch = watch
        self.matched = 0
        self.injected = False

    def handle_line(self, line: bytes) -> list[Output]:
        if self.watch is not None:
            self.watch(line)
        fault = self.fault
        if fault is not None and not self.injected and line.startswith(fault.command):
            self.matched += 1
            if self.matched == fault.at:
                self.injected = True
                if fault.kind == "vanish":
                    raise Vanished(line[:40].decode(errors="replace"))
                return [fault.data]
        return super().handle_line(line)

    @property
    def key_delivered(self) -> bool:
        """Every scripted key was consumed (for a one-key script: the key reached the server)."""
        return not any(e.kind == "key" for e in self.remaining_events)


@dataclass(frozen=True)
class Behaviour:
    """One kind of caller: its DTMF script, an optional fault, and the record statuses it may
    end with (empty: no record at all, the call never got past its environment block)."""

    name: str
    dtmf: str
    expected: frozenset[str]
    fault: Fault | None = None
    env_only: bool = False  # vanishes in the middle of the environment block


def behaviour_mix(rng: random.Random) -> Behaviour:
    """One caller of the soak's mix: mostly honest callers, one in five misbehaving."""
    roll = rng.random()
    g = frozenset
    if roll < 0.28:
        return Behaviour("accept", "1", g({"granted"}))
    if roll < 0.36:
        return Behaviour("accept-then-hang-up", "1,h", g({"granted"}))
    if roll < 0.46:
        return Behaviour("decline", "2", g({"declined"}))
    if roll < 0.54:
        return Behaviour(
            "decline-during-notice", f"2@{rng.uniform(1.0, 20.0):.2f}", g({"declined"})
        )
    if roll < 0.59:
        return Behaviour("silent", "", g({"none"}))
    if roll < 0.67:
        return Behaviour("wrong-keys", "5,7,8", g({"none"}))
    if roll < 0.77:
        return Behaviour("hang-up", f"h@{rng.uniform(0.6, 40.0):.2f}", g({"none"}))
    if roll < 0.87:
        garbage = rng.choice(
            [
                b"200 result=\n",
                b"200 result=-\n",
                b"garbage\n",
                b"999 no such code\n",
                # results Asterisk never prints, once read as key 1 (issue 9, defect 2)
                "200 result=\u0664\u0669 endpos=0\n".encode(),
                "200 result=\uff14\uff19 endpos=0\n".encode(),
                b"200 result=49abc endpos=0\n",
                b"200 result=049 endpos=0\n",
                b"200 result=12345678901234567890 endpos=0\n",
            ]
        )
        fault = Fault("garbage", b"STREAM FILE", rng.randint(1, 2), garbage)
        return Behaviour("garbage-answer", "1", g({"error"}), fault)
    if roll < 0.97:
        # any command: before the key the record says none (a hang-up), after it granted
        fault = Fault("vanish", b"", rng.randint(1, 17))  # an accepting call has 17
        return Behaviour("vanishing-peer", "1", g({"none", "granted"}), fault)
    return Behaviour("vanish-in-env-block", "1", g(), env_only=True)


@dataclass
class Outcome:
    """What one simulated call saw."""

    index: int
    uniqueid: str
    behaviour: Behaviour
    server: int = 0
    started: float = 0.0
    ended: float = 0.0
    variables: dict[str, str] = field(default_factory=dict)
    agistatus: str = ""
    vanished: bool = False
    key_delivered: bool = False
    error: str | None = None  # the client could not run the call (refused, timed out)

    @property
    def told_granted(self) -> bool:
        return any(self.variables.get(v) == "granted" for v in CONSENT_VARIABLES)

    @property
    def record_id(self) -> str:
        return self.variables.get("CONSENT_RECORD_ID", "")

    @property
    def completed(self) -> bool:
        """The server ran the call to its end and the caller heard the outcome."""
        return self.error is None and not self.vanished and "CONSENT_RECORD_ID" in self.variables


_CALLERS = itertools.count(1)


async def run_call(
    address: tuple[str, int],
    index: int,
    behaviour: Behaviour,
    *,
    uniqueid: str,
    caller: str | None = None,
    pace: float = 0.0,
    timeout: float = 60.0,
    server: int = 0,
    watch: Watch | None = None,
) -> Outcome:
    """One call of `behaviour` against the FastAGI server at `address`."""
    host, port = address
    out = Outcome(index, uniqueid, behaviour, server=server, started=time.monotonic())
    # a number of its own unless given: the example flow honours a returning caller's decision,
    # and a caller whose accept follows another's decline must not hear that decline's reminder
    env = {"agi_uniqueid": uniqueid, "agi_callerid": caller or f"+49302{next(_CALLERS):07d}"}
    core = FaultyAsterisk(
        behaviour.fault,
        watch,
        network=True,
        network_script=FLOW,
        request=f"agi://{host}:{port}/{FLOW}",
        dtmf=behaviour.dtmf,
        sounds=SOUNDS,
        env=env,
    )
    try:
        if behaviour.env_only:
            await _vanish_in_env_block(host, port, core.env_block(), timeout)
            out.vanished = True
        else:
            await run_fastagi_async(host, port, FLOW, sim=core, timeout=timeout, pace=pace)
    except Vanished:
        out.vanished = True
    except (OSError, SimulationError, TimeoutError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    out.ended = time.monotonic()
    out.variables = dict(core.variables)
    out.agistatus = core.agistatus
    out.key_delivered = core.key_delivered
    return out


async def _vanish_in_env_block(host: str, port: int, block: bytes, timeout: float) -> None:
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(block[: len(block) // 2])
        await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


class Load:
    """Callers that keep calling: `workers` loops, each placing one call after the other until
    stopped, call i to server i % len(servers). Outcomes accumulate in `outcomes` (in the
    order the calls end)."""

    def __init__(
        self,
        servers: list[tuple[str, int]],
        behaviour: Behaviour | Callable[[int], Behaviour],
        *,
        workers: int,
        pace: float = 0.0,
        prefix: str = "load",
        timeout: float = 60.0,
        watch: Watch | None = None,
    ) -> None:
        self.servers = servers
        self.watch = watch
        self._behaviour = behaviour
        self.workers = workers
        self.pace = pace
        self.prefix = prefix
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self.started = 0
        self._next = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> Load:
        self._tasks = [asyncio.ensure_future(self._worker()) for _ in range(self.workers)]
        return self

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes

    @property
    def in_flight(self) -> int:
        return self.started - len(self.outcomes)

    def count(self, predicate: Callable[[Outcome], bool]) -> int:
        return sum(1 for o in self.outcomes if predicate(o))

    def check(self) -> None:
        """Raise if a caller task died (a bug in the test, not a server fault)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"a caller task failed: {task.exception()!r}")

    async def _worker(self) -> None:
        while not self._stop.is_set():
            index = self._next
            self._next += 1
            behaviour = self._behaviour(index) if callable(self._behaviour) else self._behaviour
            server = index % len(self.servers)
            self.started += 1
            outcome = await run_call(
                self.servers[server],
                index,
                behaviour,
                uniqueid=f"{self.prefix}.{index}",
                pace=self.pace,
                timeout=self.timeout,
                server=server,
                watch=self.watch,
            )
            self.outcomes.append(outcome)
            if outcome.error is not None:  # the server is gone: do not spin
                await asyncio.sleep(0.05)


async def run_until(
    loads: list[Load], condition: Callable[[], bool], timeout: float, what: str
) -> None:
    """Wait (polling) until `condition` holds, failing fast if every worker of `loads` died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        for load in loads:
            load.check()
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------- the store


def decision_records(store: str) -> dict[str, dict[str, Any]]:
    """Every decision record in the store by record id (the hash chain's decision entries)."""
    s = open_store(store, timeout=30.0)
    try:
        entries = s.entries_of_kind("decision")
        stored = s.count()
    finally:
        s.close()
    records = {str(e.record_id): e.body for e in entries if e.body is not None}
    assert len(records) == len(entries) == stored, (
        "a decision without its chain entry, or one purged"
    )
    return records


def by_uniqueid(records: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records.values():
        out.setdefault(record["call"]["uniqueid"], []).append(record)
    return out


def granted_without_record(
    outcomes: list[Outcome], records: dict[str, dict[str, Any]]
) -> list[str]:
    """Calls whose channel was told `granted` without a durable granted record of that call
    (the one thing that must never happen). A caller that vanished after the purpose variable
    but before CONSENT_RECORD_ID was set is matched to its record by the call's unique id."""
    calls = by_uniqueid(records)
    problems = []
    for o in outcomes:
        if not o.told_granted:
            continue
        record = records.get(o.record_id) if o.record_id else None
        if record is None and not o.record_id and len(calls.get(o.uniqueid, [])) == 1:
            record = calls[o.uniqueid][0]
        if record is None:
            problems.append(f"{o.uniqueid}: told granted, record {o.record_id!r} not in the store")
            continue
        outcome = {p["purpose"]: p["outcome"] for p in record["outcomes"]}
        if record["call"]["uniqueid"] != o.uniqueid or any(
            o.variables.get(name) == "granted" and recorded != "granted"
            for name, recorded in (
                ("CONSENT_STATUS", record["status"]),
                ("CONSENT_GA_LINKAGE", outcome.get("ga_linkage")),
            )
        ):
            problems.append(f"{o.uniqueid}: told granted, but record {o.record_id} says otherwise")
    return problems


def verify_chain(store: str) -> tuple[int, str]:
    """`consent-ivr evidence verify` as an operator runs it: (exit status, its output)."""
    done = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "evidence", "verify", "--store", store],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def entries_in_chain(verify_output: str) -> int:
    """The entry count of verify's ok line (`ok: N entries, chain unbroken; ...`)."""
    assert verify_output.startswith("ok: "), verify_output
    return int(verify_output.split()[1])


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on the shared test server (see storekit), dropped afterwards."""
    from storekit import pg_schema_url

    yield from pg_schema_url()


def dump(outcomes: list[Outcome]) -> str:
    """A compact description of some outcomes, for assertion messages."""
    return json.dumps(
        [
            {
                "id": o.uniqueid,
                "b": o.behaviour.name,
                "vars": {k: v for k, v in o.variables.items() if k in CONSENT_VARIABLES},
                "vanished": o.vanished,
                "error": o.error,
            }
            for o in outcomes[:10]
        ]
    )
