"""`consent-ivr serve` runs on uvloop by default where it is installed (a dependency on Linux),
on asyncio's own loop with ``--loop asyncio`` or without uvloop; ``--loop uvloop`` without it is
a one-line refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop

from consent_ivr.cli.serve import event_loop
from consent_ivr.paths import PROJECT_ROOT
from fastagi_kit import KEY

SERVE = [sys.executable, "-m", "consent_ivr.cli.main", "serve"]


def test_the_default_loop_is_uvloop_where_it_is_installed() -> None:
    assert event_loop(None) == (uvloop.new_event_loop, None)
    assert event_loop("uvloop") == (uvloop.new_event_loop, None)


def test_loop_asyncio_uses_asyncios_own_loop() -> None:
    assert event_loop("asyncio") == (None, None)


def test_without_uvloop_the_default_is_asyncio_and_asking_for_it_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop(None) == (None, None)
    assert event_loop("uvloop") == (None, "--loop uvloop, but uvloop is not installed")


def uvloop_mapped(extra: list[str], tmp_path: Path) -> bool:
    """Start `serve` (with `extra` options) until it listens; whether uvloop's extension module
    is mapped into the process then (it is imported only to run the loop)."""
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": KEY.secret.decode()}
    argv = [*SERVE, "--listen", "127.0.0.1:0", "--store", str(tmp_path / "e.sqlite3"), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on ")
        return "/uvloop/loop." in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_runs_on_uvloop_unless_told_asyncio(tmp_path: Path) -> None:
    assert uvloop_mapped([], tmp_path)
    assert not uvloop_mapped(["--loop", "asyncio"], tmp_path)
