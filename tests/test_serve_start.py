"""`consent-ivr serve` opens and checks its evidence store before it listens: a store it cannot
use stops the start with one clear line (exit status 2), instead of failing every call."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from consent_ivr.paths import PROJECT_ROOT
from fastagi_kit import KEY
from storekit import PG_URL

SERVE = [sys.executable, "-m", "consent_ivr.cli.main", "serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(store: str) -> tuple[int, str, str]:
    """Run `serve --store STORE`; (exit status, stdout, stderr) if it exits on its own. A server
    that starts listening instead fails the test (it is stopped first)."""
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": KEY.secret.decode()}
    proc = subprocess.Popen(
        [*SERVE, "--listen", "127.0.0.1:0", "--store", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    if first.startswith("listening on "):
        proc.kill()
        proc.wait()
        pytest.fail(f"serve started on a store it cannot use ({store}): {first.strip()}")
    out, err = proc.communicate(timeout=60)
    return proc.returncode, first + out, err


def assert_one_clear_line(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 2, (code, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("consent-ivr serve: evidence store: "), lines[0]
    for part in expected:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in err


def test_a_store_below_a_file_refuses_to_start_naming_the_path_and_the_real_cause(
    tmp_path: Path,
) -> None:
    (tmp_path / "plain-file").write_text("")  # as /dev/null in /dev/null/x.sqlite3
    store = tmp_path / "plain-file" / "x.sqlite3"
    code, out, err = start_serve(str(store))
    assert_one_clear_line(code, out, err, str(store), "Not a directory")
    assert "File exists" not in err


def test_a_folder_as_the_store_refuses_to_start(tmp_path: Path) -> None:
    code, out, err = start_serve(str(tmp_path))
    assert_one_clear_line(code, out, err, str(tmp_path), "Is a directory")


def test_a_file_that_is_no_database_refuses_to_start(tmp_path: Path) -> None:
    store = tmp_path / "evidence.sqlite3"
    store.write_bytes(b"this is not an SQLite database, only text\n" * 200)
    code, out, err = start_serve(str(store))
    assert_one_clear_line(code, out, err, str(store), "not an SQLite evidence store")
    assert store.read_bytes().startswith(b"this is not")  # nothing was written over it


def test_an_unreachable_postgresql_server_refuses_to_start_with_a_redacted_url() -> None:
    port = free_port()  # nobody listens there
    url = f"postgresql://consent:s3cret-pw@127.0.0.1:{port}/test"
    code, out, err = start_serve(url)
    redacted = f"postgresql://consent:***@127.0.0.1:{port}/test"
    assert_one_clear_line(code, out, err, redacted, "Connection refused")
    assert "s3cret-pw" not in err


def test_a_missing_postgresql_database_refuses_to_start() -> None:
    url = urlunsplit(urlsplit(PG_URL)._replace(path="/consent_ivr_no_such_database"))
    code, out, err = start_serve(url)
    assert_one_clear_line(code, out, err, "consent_ivr_no_such_database", "does not exist")
