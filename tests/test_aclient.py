"""The asyncio FastAGI client (harness/aclient.py) against a tiny throwaway asyncio server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from consent_ivr.harness.aclient import place_calls, run_fastagi_async
from consent_ivr.harness.asterisk import (
    HANGUP_LINE,
    PeerTimeout,
    SimResult,
    SimulatedAsterisk,
    run_fastagi,
)

COMMANDS = (b"ANSWER\n", b'STREAM FILE x ""\n', b"SET VARIABLE __A b\n")
SOUNDS = {"x": 16000}  # 2 s at 8 kHz


class TinyServer:
    """Per connection: read the env block, send COMMANDS one by one (each answer read, a HANGUP
    line skipped), half-close, read to EOF. Records everything it read."""

    def __init__(self, *, barrier: int | None = None, silent: bool = False) -> None:
        self.barrier = barrier
        self.silent = silent
        self.connected = 0
        self.active = 0
        self.max_active = 0
        self.all_here = asyncio.Event()
        self.received: list[list[bytes]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TinyServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got: list[bytes] = []
        self.received.append(got)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            while (line := await reader.readline()) not in (b"\n", b""):
                got.append(line)
            got.append(line)
            self.connected += 1
            if self.barrier is not None:
                if self.connected >= self.barrier:
                    self.all_here.set()
                await self.all_here.wait()
            if self.silent:
                await reader.read()  # say nothing until the client gives up
                return
            for command in COMMANDS:
                writer.write(command)
                await writer.drain()
                while True:
                    answer = await reader.readline()
                    got.append(answer)
                    if answer != HANGUP_LINE:
                        break
            writer.write_eof()
            while rest := await reader.readline():
                got.append(rest)
        finally:
            self.active -= 1
            writer.close()


T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


def test_bytes_match_the_sync_runner() -> None:
    async def main() -> tuple[SimResult, SimResult, TinyServer]:
        async with TinyServer() as srv:
            options: dict[str, Any] = {"sounds": SOUNDS, "dtmf": ""}
            sync = await asyncio.to_thread(run_fastagi, "127.0.0.1", srv.port, "flow", **options)
            coro = await run_fastagi_async("127.0.0.1", srv.port, "flow", **options)
            return sync, coro, srv

    sync, coro, srv = run(main)
    assert coro.log == sync.log
    assert coro.sent() == sync.sent()
    assert coro.variables == sync.variables == {"PLAYBACKSTATUS": "SUCCESS", "A": "b"}
    assert coro.agistatus == sync.agistatus == "SUCCESS"
    env = coro.sim.env_block()
    assert b"agi_network: yes\nagi_network_script: flow\n" in env
    assert f"agi_request: agi://127.0.0.1:{srv.port}/flow\n".encode() in env
    # What the server read is what the client says it wrote, in both runs.
    assert b"".join(srv.received[0]) == sync.sent()
    assert b"".join(srv.received[1]) == coro.sent()
    assert [d for d, _ in coro.log if d == "S>A"] == ["S>A"] * len(COMMANDS)
    assert coro.sent().endswith(b"200 result=1\n" + HANGUP_LINE)  # finish(): the final notice


def test_hangup_line_delivered_on_timed_hangup() -> None:
    async def main() -> tuple[SimResult, TinyServer]:
        async with TinyServer() as srv:
            result = await run_fastagi_async(
                "127.0.0.1", srv.port, "flow", sounds=SOUNDS, dtmf="h@1.0"
            )
            return result, srv

    result, srv = run(main)
    got = b"".join(srv.received[0])
    # ANSWER at 0.5 s, the prompt is cut by the hang-up at 1.0 s (4000 samples in), the HANGUP
    # line follows; SET VARIABLE still works in dead mode; the final notice after EOF.
    tail = b"200 result=0\n200 result=-1 endpos=4000\nHANGUP\n200 result=1\nHANGUP\n"
    assert got.endswith(tail)
    assert result.sent().endswith(tail)
    assert result.agistatus == "HANGUP"
    assert result.variables["A"] == "b"
    assert result.sim.hangup_at == 1.0


def test_pace_sleeps_real_time() -> None:
    pace = 0.1
    expected = (0.5 + 2.0) * pace  # ANSWER (answer_ms=500) + the 2-s prompt

    async def main() -> tuple[float, float, list[float]]:
        async with TinyServer() as srv:
            t0 = time.monotonic()
            await run_fastagi_async("127.0.0.1", srv.port, "flow", sounds=SOUNDS)
            fast = time.monotonic() - t0
            turnarounds: list[float] = []
            t0 = time.monotonic()
            await run_fastagi_async(
                "127.0.0.1", srv.port, "flow", sounds=SOUNDS, pace=pace, turnarounds=turnarounds
            )
            return fast, time.monotonic() - t0, turnarounds

    fast, paced, turnarounds = run(main)
    assert paced >= 0.8 * expected
    assert paced < expected + 5.0
    assert fast < paced
    assert len(turnarounds) == len(COMMANDS)
    # The turnaround excludes the pacing sleep: the server answers at once.
    assert max(turnarounds) < expected


def test_fifty_concurrent_calls() -> None:
    n = 50

    async def main() -> tuple[list[SimResult | BaseException], TinyServer]:
        # The server makes every call wait until all 50 are connected: a client that ran them
        # one after another would time out.
        async with TinyServer(barrier=n) as srv:
            calls = [("flow", {"dtmf": "", "env": {"agi_uniqueid": f"1.{i}"}}) for i in range(n)]
            results = await place_calls(
                "127.0.0.1", srv.port, calls, concurrency=n, sounds=SOUNDS, timeout=10.0
            )
            return results, srv

    results, srv = run(main)
    assert srv.max_active == n
    assert len(results) == n
    for i, result in enumerate(results):
        assert isinstance(result, SimResult), result
        assert result.variables["A"] == "b"
        assert result.sim.env["agi_uniqueid"] == f"1.{i}"  # results keep the order of calls


def test_silent_server_gives_peer_timeout() -> None:
    async def main() -> list[SimResult | BaseException]:
        async with TinyServer(silent=True) as srv:
            with pytest.raises(PeerTimeout):
                await run_fastagi_async("127.0.0.1", srv.port, "flow", timeout=0.2)
            return await place_calls("127.0.0.1", srv.port, [("flow", {})], 1, timeout=0.2)

    [outcome] = run(main)
    assert isinstance(outcome, PeerTimeout)


def test_sim_must_be_in_network_mode() -> None:
    with pytest.raises(ValueError, match="network=True"):
        run(lambda: run_fastagi_async("127.0.0.1", 9, "x", sim=SimulatedAsterisk()))
