"""An SQLite evidence store on a network file system is refused where the store connects (serve's
start check, process AGI, every command), naming the file system; the mount table decides, with
the longest mount point containing the store's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.evidence import localdisk
from consent_ivr.evidence.errors import StoreError
from consent_ivr.evidence.localdisk import filesystem_type, network_filesystem
from consent_ivr.evidence.store import open_store
from consent_ivr.paths import PROJECT_ROOT
from fastagi_kit import KEY


def mountinfo(tmp_path: Path, *mounts: tuple[str, str]) -> Path:
    """A mount table in /proc/self/mountinfo's format: (mount point, type) per line."""
    lines = ["22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw"]
    for n, (point, kind) in enumerate(mounts, start=30):
        escaped = point.replace(" ", "\\040")
        lines.append(f"{n} 22 0:{n} / {escaped} rw,relatime shared:{n} - {kind} server:/x rw")
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_folder_under_an_nfs_mount_is_on_a_network_file_system(tmp_path: Path) -> None:
    table = mountinfo(tmp_path, ("/srv/evidence", "nfs4"))
    assert network_filesystem(Path("/srv/evidence/pbx1/e.sqlite3"), table) == "nfs4"
    assert network_filesystem(Path("/srv/evidence"), table) == "nfs4"
    assert network_filesystem(Path("/srv/evidence-local/e.sqlite3"), table) is None  # not a prefix
    assert network_filesystem(Path("/var/lib/consent-ivr/e.sqlite3"), table) is None


def test_the_longest_mount_point_decides(tmp_path: Path) -> None:
    table = mountinfo(tmp_path, ("/srv", "cifs"), ("/srv/local disk", "xfs"))
    assert filesystem_type(Path("/srv/local disk/e.sqlite3"), table) == "xfs"
    assert network_filesystem(Path("/srv/local disk/e.sqlite3"), table) is None
    assert network_filesystem(Path("/srv/other/e.sqlite3"), table) == "cifs"


def test_without_a_readable_mount_table_nothing_is_refused(tmp_path: Path) -> None:
    assert filesystem_type(Path("/srv/e.sqlite3"), tmp_path / "missing") is None
    assert network_filesystem(Path("/srv/e.sqlite3"), tmp_path / "missing") is None


def test_this_machines_test_folder_is_local(tmp_path: Path) -> None:
    kind = filesystem_type(tmp_path)
    assert kind is not None and kind not in localdisk.NETWORK_TYPES


def test_the_store_refuses_an_nfs_path_and_creates_nothing_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(localdisk, "MOUNTINFO", mountinfo(tmp_path, (str(tmp_path / "nfs"), "nfs")))
    (tmp_path / "nfs").mkdir()
    store_path = tmp_path / "nfs" / "pbx" / "evidence.sqlite3"
    store = open_store(str(store_path))
    with pytest.raises(StoreError) as caught:
        store.verify()
    store.close()
    message = str(caught.value)
    assert str(store_path) in message and "network file system (nfs)" in message
    assert "local disk" in message and "PostgreSQL" in message
    assert not (tmp_path / "nfs" / "pbx").exists()


def test_serve_refuses_to_start_on_an_nfs_store_with_one_line(tmp_path: Path) -> None:
    table = mountinfo(tmp_path, (str(tmp_path), "nfs4"))
    store = tmp_path / "evidence.sqlite3"
    script = (
        "import sys; from pathlib import Path; import consent_ivr.evidence.localdisk as d; "
        f"d.MOUNTINFO = Path({str(table)!r}); from consent_ivr.cli.main import main; "
        f"sys.exit(main(['serve', '--listen', '127.0.0.1:0', '--store', {str(store)!r}]))"
    )
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": KEY.secret.decode()}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("consent-ivr serve: evidence store: "), lines[0]
    assert str(store) in lines[0] and "network file system (nfs4)" in lines[0]
    assert not store.exists()
