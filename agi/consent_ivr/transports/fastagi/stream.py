"""One FastAGI connection's wire: commands out, answers in through the codec, the environment.

`AgiStream` sends a command and reads its response (lock-step, one line at a time, never half an
answer); `read_environment` reads the block Asterisk sends first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import SupportsIndex

from consent_ivr.protocol.codec import (
    AgiEnvironment,
    AgiProtocolError,
    Response,
    ResponseReader,
    format_command,
)
from consent_ivr.protocol.session import Command


class StampedReader(asyncio.StreamReader):
    """A `StreamReader` that notes when bytes last came off the socket (`time.monotonic()`):
    a response read later was sent before then (`flow.audiowatch`'s one poll per loop turn)."""

    fed_at: float | None = None

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        self.fed_at = time.monotonic()
        super().feed_data(data)


async def start_agi_server(
    accept: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    host: str,
    port: int,
    *,
    limit: int,
    backlog: int,
) -> asyncio.Server:
    """`asyncio.start_server`, its connections read through a `StampedReader`."""
    loop = asyncio.get_running_loop()

    def protocol() -> asyncio.StreamReaderProtocol:
        reader = StampedReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, accept, loop=loop)

    return await loop.create_server(protocol, host, port, backlog=backlog)


class AgiStream:
    """One FastAGI connection: send a command, read its response through the codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = ResponseReader()
        self.eof = False
        self.last_response = time.perf_counter()

    @property
    def arrived(self) -> float | None:
        """When bytes last came off the socket (a `StampedReader`), or None."""
        return getattr(self.reader, "fed_at", None)

    @property
    def hangup_seen(self) -> bool:
        return self.codec.hangup_seen or self.eof

    async def readline(self) -> bytes:
        """One whole line, or b"" at EOF (a partial line before EOF is EOF too: the peer went
        away mid-write, and half an answer must never be read as one)."""
        try:
            raw = await self.reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            raise AgiProtocolError("line longer than the maximum line length") from None
        return raw if raw.endswith(b"\n") else b""

    async def exchange(self, command: Command) -> Response | None:
        # No drain(): one short line, and lock-step means the next write waits for an answer.
        self.writer.write(format_command(*command.words, args=command.args))
        self.codec.expect(command.words)
        while True:
            raw = await self.readline()
            if not raw:  # EOF: a hang-up
                self.eof = True
                return None
            resp = self.codec.feed(raw.decode("utf-8", errors="replace"))
            if resp is not None:
                self.last_response = time.perf_counter()
                return resp

    async def exchange_within(self, command: Command) -> Response | None:
        """`exchange` with the command's answer deadline (for the steps outside a call's pump:
        gate, tracking, the error variables); raises `AnswerTimeout` (an `AgiProtocolError`)."""
        try:
            async with asyncio.timeout(command.answer_within):
                return await self.exchange(command)
        except TimeoutError:
            raise command.late() from None


async def read_environment(stream: AgiStream) -> dict[str, str] | None:
    """The environment block, or None if the peer closed before its end."""
    env = AgiEnvironment()
    try:  # the whole block at once (it arrives in one segment); line by line if it is huge
        block = await stream.reader.readuntil(b"\n\n")
    except asyncio.IncompleteReadError:  # the peer closed before the block ended
        return None
    except asyncio.LimitOverrunError:
        block = b""
    if block:
        for line in block.decode("utf-8", errors="replace").split("\n")[:-1]:
            if env.feed(line):
                return env.values
    while True:
        raw = await stream.readline()
        if not raw:
            return None
        if env.feed(raw.decode("utf-8", errors="replace")):
            return env.values
