"""Run the FastAGI server in-process on its own event-loop thread, and drive raw peers at it."""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.evidence.store import SqliteEvidenceStore
from consent_ivr.harness.asterisk import Control, SimulatedAsterisk, WavSoundCatalog, run_fastagi
from consent_ivr.transports.fastagi import FastAgiServer, ServerConfig

T = TypeVar("T")
KEY = PseudonymKey.from_bytes(b"fastagi-test-key-0123456789")
_NUMBERS = itertools.count(1)


def fresh_caller() -> str:
    """A caller number no other call of this test run has: the example flow honours a returning
    caller's decision (its `returning:` block), so calls that test anything else must not share
    a number on one server's store, or the second would hear the reminder."""
    return f"+49301{next(_NUMBERS):07d}"


class ServerThread:
    def __init__(self, tmp: Path, **overrides: Any) -> None:
        overrides.setdefault("flows_dir", Path(__file__).resolve().parents[1] / "flows")
        overrides.setdefault("store_path", tmp / "evidence.sqlite3")
        overrides.setdefault("port", 0)
        overrides.setdefault("reload_interval", 0)
        self.config = ServerConfig(**overrides)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = FastAgiServer(self.config, KEY)
        self.address: tuple[str, int] = ("", 0)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        self.address = self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.run(self.server.drain())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def records(self) -> list[dict[str, Any]]:
        store = SqliteEvidenceStore(self.config.store_path)
        try:
            conn = store._connect()
            ids = [r[0] for r in conn.execute("SELECT record_id FROM evidence ORDER BY rowid")]
            return [r for r in (store.get(i) for i in ids) if r is not None]
        finally:
            store.close()


class RawPeer:
    """A simulated Asterisk on a plain socket that answers until told to stall at a command."""

    def __init__(
        self, address: tuple[str, int], path: str, *, stall_at: bytes | None = None, **sim: Any
    ) -> None:
        sim.setdefault("sounds", WavSoundCatalog())
        sim["env"] = {"agi_callerid": fresh_caller(), **sim.get("env", {})}
        self.sim = SimulatedAsterisk(network=True, network_script=path, **sim)
        self.sock = socket.create_connection(address, timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.stall_at = stall_at
        self.pending: bytes | None = None
        self.commands: list[bytes] = []

    def send_env(self) -> None:
        self.sock.sendall(self.sim.env_block())

    def run(self) -> bool:
        """Answer commands until EOF (True) or the stall command arrives (False, unanswered)."""
        while True:
            line = self.file.readline()
            if not line:
                return True
            self.commands.append(line)
            if self.stall_at is not None and line.startswith(self.stall_at):
                self.pending = line
                self.stall_at = None
                return False
            self._answer(line)

    def resume(self) -> bool:
        """Finish the stalled command and go on. If the server sent something meanwhile, the
        command was interrupted: like Asterisk (AGI-PROTOCOL.md §5.5) it then gets no answer."""
        assert self.pending is not None
        line, self.pending = self.pending, None
        readable, _, _ = select.select([self.sock], [], [], 0.05)
        if not readable:
            self._answer(line)
        return self.run()

    def answer_raw(self, data: bytes) -> bool:
        """Answer the stalled command with `data` instead of the simulator's answer; go on."""
        assert self.pending is not None
        self.pending = None
        self.sock.sendall(data)
        return self.run()

    def _answer(self, line: bytes) -> None:
        for out in self.sim.handle_line(line):
            if isinstance(out, bytes):
                try:
                    self.sock.sendall(out)
                except OSError:
                    return
            elif out is Control.CLOSE:
                self.sock.close()
                return

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def gate_reason(srv: ServerThread, variables: dict[str, str]) -> str:
    """Run the `gate` route for ga_linkage on a channel holding the consent variables of
    `variables` (as a forwarded leg inherits them); its CONSENT_GATE_GA_LINKAGE_REASON."""
    host, port = srv.address
    sim = SimulatedAsterisk(network=True, network_script="gate?purpose=ga_linkage", answered=True)
    for name, value in variables.items():
        if name.startswith("CONSENT_"):
            sim.set_variable("__" + name, value)
    r = run_fastagi(host, port, "gate?purpose=ga_linkage", sim=sim)
    return str(r.variables["CONSENT_GATE_GA_LINKAGE_REASON"])
