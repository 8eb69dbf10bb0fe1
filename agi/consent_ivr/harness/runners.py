"""The runners: they move the simulated Asterisk's bytes over real pipes or a real socket.

:func:`run_process` starts an AGI script as Asterisk's process AGI does (pipes, environment
block, SIGHUP on hang-up) and :func:`run_fastagi` connects to a FastAGI server as a TCP client;
both feed each line the script sends to :meth:`SimulatedAsterisk.handle_line`, write back what it
answers, and return a :class:`SimResult` with the whole exchange. Real time enters only in the
runners (here and in ``aclient.py``, the asyncio twin): a peer that sends no complete line within
``timeout`` seconds raises :class:`PeerTimeout`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from consent_ivr.harness.core import SimulatedAsterisk, SimulationError
from consent_ivr.harness.transcript import TranscriptEntry
from consent_ivr.harness.wire import AgiStatus, Control, Output

Direction = Literal["A>S", "S>A", "SIG", "CLOSE"]


@dataclass
class SimResult:
    """The outcome of one simulated call."""

    sim: SimulatedAsterisk
    exit_code: int | None
    stderr: bytes
    #: Everything exchanged, in order: ("A>S", bytes written), ("S>A", line read),
    #: ("SIG", b"SIGHUP") and ("CLOSE", b"").
    log: list[tuple[Direction, bytes]] = field(default_factory=list)

    @property
    def agistatus(self) -> AgiStatus:
        return self.sim.agistatus

    @property
    def variables(self) -> dict[str, str]:
        return self.sim.variables

    @property
    def transcript(self) -> list[TranscriptEntry]:
        return self.sim.transcript

    def sent(self) -> bytes:
        """All bytes Asterisk wrote, concatenated."""
        return b"".join(data for direction, data in self.log if direction == "A>S")


class PeerTimeout(SimulationError):
    """The AGI peer sent no complete line in time."""


class _LineReader:
    """Read LF-terminated lines from a file descriptor with a real-time timeout."""

    def __init__(self, fd: int, timeout: float) -> None:
        self.fd = fd
        self.timeout = timeout
        self.buffer = b""
        self.eof = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(fd, selectors.EVENT_READ)

    def readline(self) -> bytes | None:
        """One line including its LF; the unterminated rest at EOF; None at EOF."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buffer and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                raise PeerTimeout(
                    f"the AGI peer sent no complete command line within {self.timeout:.1f} s "
                    f"(partial data: {self.buffer!r})"
                )
            try:
                chunk = os.read(self.fd, 65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk
        if b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            return line + b"\n"
        if self.buffer:
            line, self.buffer = self.buffer, b""
            return line
        return None

    def close(self) -> None:
        self.selector.close()


def _build_sim(sim: SimulatedAsterisk | None, options: dict[str, Any]) -> SimulatedAsterisk:
    if sim is not None:
        if options:
            raise TypeError("pass either sim= or simulator options, not both")
        return sim
    if "agi_env" in options:
        options["env"] = options.pop("agi_env")
    return SimulatedAsterisk(**options)


def network_sim(
    host: str,
    port: int,
    path: str,
    sim: SimulatedAsterisk | None,
    sim_options: dict[str, Any],
    caller: str,
) -> SimulatedAsterisk:
    """The simulator for a FastAGI call: `sim` (which must be in network mode), or one built
    from `sim_options` with ``network=True``, ``request="agi://host:port/path"`` and
    ``network_script=path`` unless given."""
    if sim is not None and not sim.network:
        raise ValueError(f"{caller} needs a SimulatedAsterisk built with network=True")
    sim_options.setdefault("network", True)
    sim_options.setdefault("request", f"agi://{host}:{port}/{path}")
    sim_options.setdefault("network_script", path or None)
    return _build_sim(sim, sim_options) if sim is None else sim


def run_process(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
    sim: SimulatedAsterisk | None = None,
    **sim_options: Any,
) -> SimResult:
    """Run ``argv`` as a process AGI script against the simulator.

    ``env``/``cwd`` are the child's OS environment and working directory. Simulator options
    (``dtmf=``, ``sounds=``, ``agi_env=`` for the AGI env overrides, ``sighup=``...) build a
    :class:`SimulatedAsterisk` with ``request=argv[0]`` and ``args=argv[1:]``, unless ``sim`` is
    given. ``timeout`` is the real-time limit for each line and for the final exit.
    """
    sim_options.setdefault("request", argv[0])
    sim_options.setdefault("args", list(argv[1:]))
    core = _build_sim(sim, sim_options) if sim is None else sim
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=env,
        cwd=cwd,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []
    stderr_pipe = proc.stderr

    def drain() -> None:
        for chunk in iter(lambda: stderr_pipe.read(65536), b""):
            stderr_chunks.append(chunk)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    result = SimResult(core, None, b"")
    stdin = proc.stdin
    stdin_open = True

    def write(data: bytes) -> None:
        nonlocal stdin_open
        result.log.append(("A>S", data))
        if stdin_open:
            try:
                stdin.write(data)
            except (BrokenPipeError, OSError):
                stdin_open = False

    def emit(outputs: list[Output]) -> bool:
        """Apply outputs; False once the session is closed by Asterisk."""
        nonlocal stdin_open
        for out in outputs:
            if isinstance(out, bytes):
                write(out)
            elif out is Control.SIGHUP:
                result.log.append(("SIG", b"SIGHUP"))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGHUP)
            else:
                result.log.append(("CLOSE", b""))
                if stdin_open:
                    stdin_open = False
                    stdin.close()
                return False
        return True

    reader = _LineReader(proc.stdout.fileno(), timeout)
    sent_final_sighup = False
    try:
        write(core.env_block())
        while True:
            line = reader.readline()
            if line is None:
                break
            result.log.append(("S>A", line))
            if not emit(core.handle_line(line)):
                break
        if not core.closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            finals = core.finish()
            sent_final_sighup = proc.poll() is None and Control.SIGHUP in finals
            emit(finals)
        if stdin_open:
            stdin_open = False
            stdin.close()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PeerTimeout(f"the AGI script did not exit within {timeout:.1f} s") from exc
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        reader.close()
        proc.stdout.close()
        drainer.join(timeout=5)
    if not (sent_final_sighup and code == -signal.SIGHUP):
        core.record_exit_status(code)
    result.exit_code = code
    result.stderr = b"".join(stderr_chunks)
    return result


def run_fastagi(
    host: str,
    port: int,
    path: str,
    *,
    timeout: float = 20.0,
    sim: SimulatedAsterisk | None = None,
    **sim_options: Any,
) -> SimResult:
    """Connect to a FastAGI server at ``host:port`` and run one call for script ``path``.

    The simulator gets ``network=True``, ``request="agi://host:port/path"`` and
    ``network_script=path`` unless ``sim`` is given (which must then be in network mode).
    """
    core = network_sim(host, port, path, sim, sim_options, "run_fastagi")
    result = SimResult(core, None, b"")
    conn = socket.create_connection((host, port), timeout=timeout)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # like Asterisk: no Nagle delay
    conn.settimeout(timeout)
    open_for_write = True

    def write(data: bytes) -> None:
        nonlocal open_for_write
        result.log.append(("A>S", data))
        if open_for_write:
            try:
                conn.sendall(data)
            except OSError:
                open_for_write = False

    reader = _LineReader(conn.fileno(), timeout)
    try:
        write(core.env_block())
        closed = False
        while not closed:
            line = reader.readline()
            if line is None:
                break
            result.log.append(("S>A", line))
            for out in core.handle_line(line):
                if isinstance(out, bytes):
                    write(out)
                elif out is Control.CLOSE:
                    result.log.append(("CLOSE", b""))
                    closed = True
        for out in core.finish():
            if isinstance(out, bytes):
                write(out)
    finally:
        reader.close()
        conn.close()
    return result
