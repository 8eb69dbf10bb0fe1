"""The process-AGI flow argument names a flow in the flows folder and never any other file."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import resolve_flow_path
from consent_ivr.harness.asterisk import SimResult, WavSoundCatalog, run_process
from consent_ivr.paths import agi_script, flow_files, flows_dir
from flowkit import copy_example_flows

#: What a file outside the flows folder holds; it must never reach Asterisk's console.
SECRET = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
#: A YAML file in the flows folder that is no flow (the loader names its unknown keys).
NOTES = "SECRET-TOKEN: hunter2\nflow: notes\n"


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """tmp/flows (the flows folder, with the example flow), tmp/secret.yaml and tmp/secret."""
    copy_example_flows(tmp_path / "flows")  # with its withdrawal flow (R17)
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "secret.yaml").write_text(SECRET)
    return tmp_path


def call(root: Path, arg: str, *, cwd: Path | None = None) -> SimResult:
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": "k" * 32,
        "CONSENT_IVR_STORE": str(root / "evidence.sqlite3"),
        "CONSENT_IVR_FLOWS": str(root / "flows"),
        "CONSENT_IVR_CACHE": str(root / "cache"),
        "CONSENT_IVR_LOG": str(root / "agi.log"),
    }
    script = str(agi_script())
    return run_process(
        [sys.executable, script, arg],
        env=env,
        cwd=cwd or root,
        request=script,
        dtmf="1",
        sounds=WavSoundCatalog(),
        timeout=20,
    )


def assert_refused(result: SimResult, root: Path) -> str:
    """The call failed closed with one console line; neither it nor the log quotes the file."""
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.exit_code == 1, stderr
    assert result.variables["CONSENT_STATUS"] == "error"
    log = (root / "agi.log").read_text()
    for text in (stderr, log):
        assert "root:x" not in text and "SECRET-TOKEN" not in text and "hunter2" not in text
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    return stderr


@pytest.mark.parametrize(
    "arg",
    ["../secret", "../secret.yaml", "../../etc/passwd", "flows/../secret.yaml", "Call-Tracking"],
)
def test_a_relative_path_or_odd_name_is_refused_without_reading_the_file(
    setup: Path, arg: str
) -> None:
    stderr = assert_refused(call(setup, arg, cwd=setup / "flows"), setup)
    assert "expected a flow id" in stderr


def test_an_absolute_path_outside_the_flows_folder_is_refused(setup: Path) -> None:
    for arg in (str(setup / "secret"), str(setup / "secret.yaml")):
        stderr = assert_refused(call(setup, arg), setup)
        assert "refused" in stderr and str(setup / "flows") in stderr


def test_a_symlink_in_the_flows_folder_that_leads_outside_is_refused(setup: Path) -> None:
    (setup / "flows" / "evil.yaml").symlink_to(setup / "secret.yaml")
    for arg in ("evil", str(setup / "flows" / "evil.yaml")):
        stderr = assert_refused(call(setup, arg), setup)
        assert "outside the flows folder" in stderr


def test_a_file_in_the_flows_folder_that_is_not_a_flow_is_summarised_not_quoted(
    setup: Path,
) -> None:
    (setup / "flows" / "notes.yaml").write_text(NOTES)
    for arg in ("notes", str(setup / "flows" / "notes.yaml")):
        stderr = assert_refused(call(setup, arg), setup)
        assert "consent-ivr validate" in stderr and "notes.yaml" in stderr


def test_a_flow_id_and_a_yaml_path_inside_the_flows_folder_both_run_the_call(
    setup: Path,
) -> None:
    for arg in ("call-tracking", str(setup / "flows" / "call-tracking.yaml")):
        result = call(setup, arg)
        assert result.exit_code == 0, result.stderr
        assert result.variables["CONSENT_STATUS"] == "granted"


def test_an_unknown_flow_id_names_the_known_flows(setup: Path) -> None:
    stderr = assert_refused(call(setup, "call-trackin"), setup)
    assert "call-trackin" in stderr and "call-tracking" in stderr


def test_a_flow_test_file_is_refused_as_a_flow_and_never_listed_as_one(setup: Path) -> None:
    # `<flow>.test.yaml` sits beside its flow (consent-ivr test); it is not a flow to any command
    # or transport: process AGI refuses it by path, and the known ids never name it.
    shutil.copy(flows_dir() / "call-tracking.test.yaml", setup / "flows")
    stderr = assert_refused(call(setup, str(setup / "flows" / "call-tracking.test.yaml")), setup)
    assert "not a flow test file" in stderr
    stderr = assert_refused(call(setup, "call-trackin"), setup)
    assert "call-tracking.test" not in stderr


def test_a_flows_folder_lists_its_flows_not_their_tests_or_hidden_files(tmp_path: Path) -> None:
    for name in ("a.yaml", "b.yml", "a.test.yaml", "b.test.yml", ".#a.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [Path(p).name for p in flow_files(str(tmp_path))] == ["a.yaml", "b.yml"]
    with pytest.raises(FlowError, match="is a flow test file, not a flow"):
        resolve_flow_path(str(tmp_path / "a.test.yaml"))
