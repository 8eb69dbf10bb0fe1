"""A simulated Asterisk that answers one command a byte at a time: a slow or hostile peer.

`DribblingPeer` speaks the AGI wire over a pair of file descriptors (a socket for FastAGI, the
script's pipes for process AGI): it answers every command through a `SimulatedAsterisk` core,
except the first command starting with `dribble_at`, whose answer it writes one byte every
`interval` seconds. With ``endless`` the answer never ends (spaces follow it, no line feed): the
peer stops dribbling only when the engine gives up and sends its next command (or closes), and
`gave_up_after` says how long that took. Otherwise the answer (with its line feed) is dribbled
in full and the call goes on.
"""

from __future__ import annotations

import os
import select
import time

from consent_ivr.harness.asterisk import Control, SimulatedAsterisk


class DribblingPeer:
    def __init__(
        self,
        rfd: int,
        wfd: int,
        sim: SimulatedAsterisk,
        *,
        dribble_at: bytes,
        interval: float = 0.1,
        endless: bool = True,
    ) -> None:
        self.rfd, self.wfd, self.sim = rfd, wfd, sim
        self.dribble_at = dribble_at
        self.interval = interval
        self.endless = endless
        self.buffer = b""
        self.commands: list[bytes] = []
        self.dribbled = 0
        #: Seconds from the dribbled command's arrival until the engine sent something else
        #: (None: it never did within the limit).
        self.gave_up_after: float | None = None

    def run(self, limit: float = 30.0) -> None:
        """Send the environment, then answer until the engine closes (or `limit` s pass)."""
        self.deadline = time.monotonic() + limit
        os.write(self.wfd, self.sim.env_block())
        while True:
            line = self._readline()
            if line is None:
                return
            self.commands.append(line)
            outputs = self.sim.handle_line(line)
            if self.dribble_at is not None and line.startswith(self.dribble_at):
                self.dribble_at = None  # type: ignore[assignment]
                self._dribble(b"".join(o for o in outputs if isinstance(o, bytes)))
                continue
            for out in outputs:
                if isinstance(out, bytes):
                    self._write(out)
                elif out is Control.CLOSE:
                    return

    def _dribble(self, answer: bytes) -> None:
        t0 = time.monotonic()
        data = answer[:-1] if self.endless else answer
        i = 0
        while time.monotonic() < self.deadline:
            if select.select([self.rfd], [], [], self.interval)[0]:  # the engine moved on
                self.gave_up_after = time.monotonic() - t0
                return
            if i < len(data):
                byte = data[i : i + 1]
            elif self.endless:
                byte = b" "
            else:
                return
            i += 1
            if not self._write(byte):
                return
            self.dribbled += 1

    def _write(self, data: bytes) -> bool:
        try:
            os.write(self.wfd, data)
        except OSError:  # the engine closed its end
            return False
        return True

    def _readline(self) -> bytes | None:
        while b"\n" not in self.buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.rfd], [], [], remaining)[0]:
                return None
            try:
                chunk = os.read(self.rfd, 65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"
