"""The benchmarks' floor (tests/bench/floor.py) is the same exchange as consent-ivr's: for an
accepting caller both send the same command lines in the same order, differing only in the
values that are unique per call (record id) or per build (the notice hash), and both name their
threads so the benchmarks can split CPU time by thread."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from consent_ivr.harness.aclient import run_fastagi_async
from consent_ivr.harness.asterisk import WavSoundCatalog
from consent_ivr.osthreads import name_this_thread
from consent_ivr.paths import sounds_dir
from consent_ivr.wav import read_wav_info

ROOT = Path(__file__).resolve().parents[1]
VARYING = re.compile(rb'"(__CONSENT_RECORD_ID|__CONSENT_NOTICE_SHA256)" "[0-9a-f]+"')


@contextmanager
def server(argv: list[str], env: dict[str, str]) -> Iterator[int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line.startswith(b"listening on "), line
        yield int(line.split()[-1].rsplit(b":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()


def commands(port: int, dtmf: str) -> list[bytes]:
    result = asyncio.run(
        run_fastagi_async(
            "127.0.0.1",
            port,
            "call-tracking",
            dtmf=dtmf,
            sounds=WavSoundCatalog(sounds_dir(), "en"),
            env={"agi_uniqueid": "1700000000.000001"},
        )
    )
    assert result.variables["CONSENT_STATUS"] == "granted"
    return [VARYING.sub(rb'"\1" "..."', data) for kind, data in result.log if kind == "S>A"]


def question_ends_at() -> float:
    """Virtual seconds from the call's start to the end of the English question (ANSWER takes
    0.5 s in the simulator, then the notice and the question play whole)."""
    folder = sounds_dir() / "en" / "call-tracking"
    prompts = ("who", "analytics", "google", "voluntary", "rights", "ask_ga_linkage")
    return 0.5 + sum(read_wav_info(folder / f"{p}.wav").seconds for p in prompts)


@pytest.mark.parametrize(
    ("dtmf", "waits"),
    [("1", False), (f"1@{question_ends_at() + 1:.2f}", True)],
    ids=["key during the question", "key during the wait after it"],
)
def test_floor_sends_the_servers_command_lines_in_the_servers_order(
    tmp_path: Path, dtmf: str, waits: bool
) -> None:
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": secrets.token_hex(16)}
    floor = [sys.executable, str(ROOT / "tests/bench/floor.py"), "--listen", "127.0.0.1:0"]
    serve = [sys.executable, "-m", "consent_ivr.cli", "serve", "--listen", "127.0.0.1:0"]
    serve += ["--store", str(tmp_path / "evidence.sqlite3")]
    with server(floor, env) as port:
        floor_lines = commands(port, dtmf)
    with server(serve, env) as port:
        server_lines = commands(port, dtmf)
    assert any(line.startswith(b"WAIT FOR DIGIT") for line in server_lines) is waits
    assert floor_lines == server_lines


def test_a_named_thread_shows_its_name_to_the_kernel() -> None:
    seen: list[str] = []

    def work() -> None:
        name_this_thread("evidence-writer-and-more")
        tid = threading.get_native_id()
        seen.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == ["evidence-writer"]  # the kernel keeps 15 bytes
