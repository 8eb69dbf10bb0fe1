"""One FastAGI connection's wire: commands out, answers in through the codec, the environment.

`AgiStream` sends a command and reads its response (lock-step, one line at a time, never half an
answer); `read_environment` reads the block Asterisk sends first.
"""

from __future__ import annotations

import asyncio
import time

from consent_ivr.protocol.codec import (
    AgiEnvironment,
    AgiProtocolError,
    Response,
    ResponseReader,
    format_command,
)
from consent_ivr.protocol.session import Command


class AgiStream:
    """One FastAGI connection: send a command, read its response through the codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = ResponseReader()
        self.eof = False
        self.last_response = time.perf_counter()

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
