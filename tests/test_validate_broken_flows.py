"""`consent-ivr validate` on each broken flow prints exactly the lines of expected/<name>.txt."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from consent_ivr.cli.lint import run_validate

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "broken-flows"
#: Every broken flow; withdrawal.yaml is the (valid) withdrawal line beside them (R17).
CASES = sorted(p.stem for p in BROKEN.glob("*.yaml") if p.stem != "withdrawal")


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", "tests/broken-flows/sounds")


def test_there_are_enough_broken_flows() -> None:
    assert len(CASES) >= 12
    for name in CASES:
        assert (BROKEN / "expected" / f"{name}.txt").is_file(), name


@pytest.mark.parametrize("name", CASES)
def test_broken_flow_diagnostics(name: str, in_repo_root: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = run_validate([f"tests/broken-flows/{name}.yaml"], out, err)
    expected = (BROKEN / "expected" / f"{name}.txt").read_text(encoding="utf-8")
    assert err.getvalue() == expected
    lines = expected.splitlines()
    assert lines, "every broken flow shows at least one diagnostic"
    has_error = any(" warning: " not in line for line in lines)
    assert rc == (2 if has_error else 0)
    assert (out.getvalue() == "") == has_error


def test_the_fixture_base_flow_is_valid(in_repo_root: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = run_validate(["tests/broken-flows/sounds/broken.yaml"], out, err)
    assert (rc, err.getvalue()) == (0, "")
    assert out.getvalue() == "ok: tests/broken-flows/sounds/broken.yaml (broken@1, languages en)\n"


def test_all_files_in_one_run(in_repo_root: None) -> None:
    out, err = io.StringIO(), io.StringIO()
    given = [f"tests/broken-flows/{n}.yaml" for n in CASES] + [
        "tests/broken-flows/sounds/broken.yaml"
    ]
    rc = run_validate(given, out, err)
    expected = "".join((BROKEN / "expected" / f"{n}.txt").read_text() for n in CASES)
    assert rc == 2
    assert err.getvalue() == expected
    assert "ok: tests/broken-flows/sounds/broken.yaml" in out.getvalue()


def test_unknown_flow_name(
    in_repo_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "call-tracking.yaml").write_text("flow: x\n")
    monkeypatch.setenv("CONSENT_IVR_FLOWS", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    assert run_validate(["call-trackin", "nowhere/flow.yaml"], out, err) == 2
    assert err.getvalue() == (
        f"call-trackin:1:1: error: no flow named 'call-trackin' (looked for"
        f" {tmp_path}/call-trackin.yaml); did you mean 'call-tracking'?\n"
        "nowhere/flow.yaml:1:1: error: no flow file nowhere/flow.yaml; expected an existing .yaml"
        " file\n"
    )
