"""The README stays true: its example flow is a valid flow, its two commands are the Makefile's."""

from __future__ import annotations

import re
from pathlib import Path

from consent_ivr.flow.loader import load_flow_with_warnings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_example_flow_validates(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(flow: hotline-consent.*?)```", README, re.DOTALL)
    assert block, "README lost its example flow"
    path = tmp_path / "hotline-consent.yaml"
    path.write_text(block.group(1), encoding="utf-8")
    flow, warnings = load_flow_with_warnings(path, sounds_root=tmp_path, check_audio=False)
    assert flow.id == "hotline-consent" and warnings == []
    assert [p.id for p in flow.consent_purposes] == ["ga_linkage"]


def test_the_two_commands_exist_and_ci_runs_the_test_command() -> None:
    commands = re.search(r"## The two commands\n\n```sh\n(.*?)```", README, re.DOTALL)
    assert commands
    lines = [line.split("#")[0].strip() for line in commands.group(1).strip().splitlines()]
    assert lines == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "make test" in ci
