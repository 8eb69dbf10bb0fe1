"""An asyncio FastAGI client that plays Asterisk: the asyncio twin of :func:`run_fastagi`.

:func:`run_fastagi_async` moves the bytes of one :class:`SimulatedAsterisk` core over a TCP
connection to a FastAGI server, exactly like the synchronous runner (same :class:`SimResult`, same
log, same bytes): connect, write the env block, read LF-terminated lines, feed
:meth:`SimulatedAsterisk.handle_line`, write what it returns; on the server's EOF call
:meth:`SimulatedAsterisk.finish` and write its output (the final ``HANGUP`` line) while the socket
is still open; close. In FastAGI mode the core's hang-up notice is the ``HANGUP\\n`` line itself
(bytes), so there is no signal to deliver.

Unlike the synchronous runner it can keep thousands of calls open in one process
(:func:`place_calls`) and it can run in real time: with ``pace > 0`` it sleeps
``(virtual seconds the command took) * pace`` before writing each response, so a 5-second prompt
really takes 5 s at ``pace=1.0``. ``pace=0`` answers at once (the virtual clock still advances).

Benchmark hooks: ``turnarounds`` collects, for every line the server sends, the real time in
seconds from the client's previous write (the env block or a response) to the arrival of that
line; ``before_reply`` is awaited before a response is written (e.g. to park calls in a prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from consent_ivr.harness.core import SimulatedAsterisk
from consent_ivr.harness.runners import PeerTimeout, SimResult, network_sim
from consent_ivr.harness.wire import Control

#: The StreamReader buffer limit: longer than any line a sane server sends (Asterisk's own
#: AGI buffer is 8 KiB; the core splits longer lines as fgets would).
LINE_LIMIT = 1 << 20

#: Awaited before a response is written: (the core, the command line it answers).
BeforeReply = Callable[[SimulatedAsterisk, bytes], Awaitable[None]]


async def _readline(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """One line including its LF; the unterminated rest at EOF; None at EOF (like _LineReader)."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        # A line longer than LINE_LIMIT: hand over what is buffered; the core splits it.
        return await reader.readexactly(exc.consumed)
    except ConnectionResetError:
        return None
    except TimeoutError as exc:
        raise PeerTimeout(
            f"the AGI peer sent no complete command line within {timeout:.1f} s"
        ) from exc


async def run_fastagi_async(
    host: str,
    port: int,
    path: str,
    *,
    sim: SimulatedAsterisk | None = None,
    timeout: float = 20.0,
    pace: float = 0.0,
    turnarounds: list[float] | None = None,
    before_reply: BeforeReply | None = None,
    **sim_options: Any,
) -> SimResult:
    """Connect to a FastAGI server at ``host:port`` and run one call for script ``path``.

    Same contract as :func:`consent_ivr.harness.asterisk.run_fastagi`: the simulator gets
    ``network=True``, ``request="agi://host:port/path"`` and ``network_script=path`` unless
    ``sim`` is given (which must then be in network mode). ``timeout`` is the real-time limit for
    connecting and for each line. ``pace`` is real seconds per virtual second (0 = at once).
    ``turnarounds`` (if given) receives one float per line read: seconds from the previous
    write to the line's arrival. ``before_reply`` (if given) is awaited before each response.
    """
    if pace < 0:
        raise ValueError("pace must be >= 0")
    core = network_sim(host, port, path, sim, sim_options, "run_fastagi_async")
    result = SimResult(core, None, b"")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=LINE_LIMIT), timeout
        )
    except TimeoutError as exc:
        raise PeerTimeout(f"could not connect to {host}:{port} within {timeout:.1f} s") from exc
    open_for_write = True
    last_write = time.monotonic()

    async def write(data: bytes) -> None:
        nonlocal open_for_write, last_write
        result.log.append(("A>S", data))
        if open_for_write:
            if writer.is_closing():
                open_for_write = False
                return
            try:
                writer.write(data)
                await writer.drain()
            except OSError:  # ConnectionResetError, BrokenPipeError, ...
                open_for_write = False
        last_write = time.monotonic()

    async def reply(line: bytes, outputs: Sequence[bytes | Control], seconds: float) -> bool:
        """Write the outputs for ``line``; False once Asterisk closes the session."""
        if pace > 0 and seconds > 0:
            await asyncio.sleep(seconds * pace)
        if before_reply is not None:
            await before_reply(core, line)
        for out in outputs:
            if isinstance(out, bytes):
                await write(out)
            elif out is Control.CLOSE:
                result.log.append(("CLOSE", b""))
                return False
        return True

    try:
        await write(core.env_block())
        while True:
            line = await _readline(reader, timeout)
            if line is None:
                break
            if turnarounds is not None:
                turnarounds.append(time.monotonic() - last_write)
            result.log.append(("S>A", line))
            before = core.now
            outputs = core.handle_line(line)
            if not await reply(line, outputs, core.now - before):
                break
        for out in core.finish():
            if isinstance(out, bytes):
                await write(out)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return result


async def place_calls(
    host: str,
    port: int,
    calls: Sequence[tuple[str, dict[str, Any]]],
    concurrency: int,
    *,
    rate: float | None = None,
    **common: Any,
) -> list[SimResult | BaseException]:
    """Run many calls, at most ``concurrency`` at a time; results in the order of ``calls``.

    Each call is ``(path, options)``: ``options`` are keyword arguments of
    :func:`run_fastagi_async` (simulator options such as ``dtmf=``/``sounds=``, or ``sim=``,
    ``turnarounds=``...) and override ``common`` (e.g. ``timeout=``, ``pace=``). With ``rate``
    (calls per second) call *i* starts no earlier than ``i / rate`` seconds after the first.
    A call that raises gives its exception in the list instead of a result.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    semaphore = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(index: int, path: str, options: dict[str, Any]) -> SimResult:
        if rate is not None and rate > 0:
            delay = t0 + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        async with semaphore:
            return await run_fastagi_async(host, port, path, **{**common, **options})

    tasks = [one(i, path, dict(options)) for i, (path, options) in enumerate(calls)]
    return list(await asyncio.gather(*tasks, return_exceptions=True))
