"""An in-process wire between an AGI client and the simulated Asterisk, for fast exact tests.

`Loopback` is a pair of byte streams: what the client writes is handed line by line to
`SimulatedAsterisk.handle_line`, and the bytes the simulator answers with become readable. So a
client (pyst2's `ConsentAGI`, the driver) talks the real wire protocol with no process or socket.
A SIGHUP the simulator would send is delivered by calling `on_sighup` (as a signal handler would).
"""

from __future__ import annotations

from collections.abc import Callable

from consent_ivr.harness.core import SimulatedAsterisk
from consent_ivr.harness.wire import Control


class Loopback:
    """`stdin`/`stdout` for an AGI client, backed by a `SimulatedAsterisk` core."""

    def __init__(self, sim: SimulatedAsterisk, on_sighup: Callable[[], None] | None = None) -> None:
        self.sim = sim
        self.on_sighup = on_sighup
        self._rx = bytearray(sim.env_block())
        self._partial = b""
        self.closed = False
        self.written: list[bytes] = []

    # the client's stdout: what it sends to Asterisk
    def write(self, data: bytes) -> int:
        if self.closed:
            raise BrokenPipeError("simulated Asterisk closed the connection")
        self._partial += data
        while b"\n" in self._partial:
            line, self._partial = self._partial.split(b"\n", 1)
            self.written.append(line + b"\n")
            self._deliver(self.sim.handle_line(line + b"\n"))
        return len(data)

    def flush(self) -> None:
        pass

    # the client's stdin: what Asterisk sends
    def readline(self) -> bytes:
        i = self._rx.find(b"\n")
        if i < 0:
            data = bytes(self._rx)
            self._rx.clear()
            return data  # b"" = EOF
        line = bytes(self._rx[: i + 1])
        del self._rx[: i + 1]
        return line

    def hang_up_now(self) -> None:
        """Inject an idle hang-up (as if the caller hung up between commands)."""
        self._deliver(self.sim.idle(0.0))

    def _deliver(self, outputs: list[bytes | Control]) -> None:
        for out in outputs:
            if isinstance(out, bytes):
                self._rx += out
            elif out is Control.SIGHUP:
                if self.on_sighup is not None:
                    self.on_sighup()
            elif out is Control.CLOSE:
                self.closed = True
