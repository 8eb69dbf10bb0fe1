"""A simulated Asterisk that answers one command with bytes of the test's choosing, on both
transports: the real process-AGI script over pipes, and the FastAGI server over TCP."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from consent_ivr.harness.asterisk import (
    Output,
    SimResult,
    SimulatedAsterisk,
    WavSoundCatalog,
    run_fastagi,
    run_process,
)
from consent_ivr.paths import agi_script, flows_dir
from fastagi_kit import ServerThread

#: The caller of these calls (in conftest's list: never in a log).
CALLER = "+49891234567"


class TamperedAsterisk(SimulatedAsterisk):
    """Runs every command as Asterisk would, but answers the first one whose line starts with
    `at` with `answer` instead (its own reply is dropped)."""

    def __init__(self, *, at: bytes, answer: bytes, **options: Any) -> None:
        options.setdefault("sounds", WavSoundCatalog())
        super().__init__(**options)
        self.at = at
        self.answer: bytes | None = answer
        self.last_stream = b""
        #: The STREAM FILE line played just before the tampered command (None: not reached).
        self.tampered_after: bytes | None = None

    def handle_line(self, line: bytes) -> list[Output]:
        out = super().handle_line(line)
        if line.startswith(b"STREAM FILE"):
            self.last_stream = line
        if self.answer is not None and line.startswith(self.at):
            answer, self.answer = self.answer, None
            self.tampered_after = self.last_stream
            return [answer]
        return out


def channel(uniqueid: str = "1700000000.77") -> dict[str, str]:
    return {"agi_language": "de", "agi_callerid": CALLER, "agi_uniqueid": uniqueid}


def process_call(
    tmp: Path,
    sim_args: list[str],
    *,
    at: bytes,
    answer: bytes,
    log_file: Path | None = None,
    dtmf: str = "",
) -> tuple[SimResult, TamperedAsterisk]:
    """One call through the real agi/consent-ivr.agi; without `log_file` errors go to stderr."""
    script = agi_script()
    sim = TamperedAsterisk(
        at=at, answer=answer, request=str(script), args=sim_args, env=channel(), dtmf=dtmf
    )
    env = dict(os.environ)
    env["CONSENT_IVR_HMAC_KEY"] = "peer-test-" + secrets.token_hex(8)
    env["CONSENT_IVR_STORE"] = str(tmp / "evidence.sqlite3")
    for name in ("CONSENT_IVR_LOG", "CONSENT_IVR_LOG_LEVEL"):
        env.pop(name, None)
    if log_file is not None:
        env["CONSENT_IVR_LOG"] = str(log_file)
        env["CONSENT_IVR_LOG_LEVEL"] = "debug"
    result = run_process([sys.executable, str(script), *sim_args], env=env, sim=sim, timeout=30)
    return result, sim


def fastagi_call(
    server: ServerThread, path: str, *, at: bytes, answer: bytes, dtmf: str = ""
) -> tuple[SimResult, TamperedAsterisk]:
    sim = TamperedAsterisk(
        at=at,
        answer=answer,
        network=True,
        network_script=path,
        request=f"agi://{server.address[0]}:{server.address[1]}/{path}",
        env=channel(),
        dtmf=dtmf,
    )
    return run_fastagi(*server.address, path, sim=sim, timeout=30), sim


def flow_file() -> str:
    return str(flows_dir() / "call-tracking.yaml")
