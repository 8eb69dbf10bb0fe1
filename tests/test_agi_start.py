"""Process-AGI start-up: the launcher's fast path, and what the first prompt may not import.

Each test runs a fresh interpreter (as Asterisk does per call), so what is imported is seen as on a
real call, not through this test process's already-loaded modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from consent_ivr.harness.asterisk import WavSoundCatalog, run_process
from consent_ivr.paths import PROJECT_ROOT, agi_script

SITE_PACKAGES = next(p for p in sys.path if p.endswith("site-packages"))

#: Modules the path to the first prompt must not import (each costs ms of dead air).
HEAVY = ("dataclasses", "typing", "pathlib", "hashlib", "sqlite3", "structlog", "yaml", "json",
         "pickle", "inspect", "pprint", "six", "uuid", "datetime", "phonenumbers")  # fmt: skip


def run_fresh(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run `code` in `python -S` with the paths the launcher sets; it prints one JSON line."""
    prelude = f"import sys; sys.path[:0] = [{str(PROJECT_ROOT / 'agi')!r}]; "
    prelude += f"sys.path.append({SITE_PACKAGES!r})\n"
    done = subprocess.run(
        [sys.executable, "-S", "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_path_to_the_first_prompt_imports_nothing_heavy(tmp_path: Path) -> None:
    code = """
        before = set(sys.modules)
        from consent_ivr.transports.process_agi import _configure_logging, _flow_path
        from consent_ivr.protocol.codec import parse_200
        from consent_ivr.transports.runner import CallRunner, choose_language
        from consent_ivr.transports.flowcache import load_flow_cached
        from consent_ivr.evidence.pseudonym import PseudonymKey

        _configure_logging({})  # as a call without CONSENT_IVR_LOG: errors only, to stderr
        flow = load_flow_cached(_flow_path("call-tracking"))
        key = PseudonymKey.from_environment()
        runner = CallRunner(flow, choose_language(flow, {}, None), {}, key, "agi")
        op = runner.start()
        while op.words != ("STREAM", "FILE"):  # answer like Asterisk up to the first prompt
            op = runner.answered(op, parse_200("200 result=1"), False)
        loaded = sorted(set(sys.modules) - before)
        import json
        print(json.dumps({"first_prompt": op.words, "loaded": loaded}))
    """
    env = {"CONSENT_IVR_HMAC_KEY": "k" * 32, "CONSENT_IVR_CACHE": str(tmp_path / "cache")}
    first = run_fresh(code, env)  # the first call after a change validates the flow: YAML
    assert "yaml" in first["loaded"]  # type: ignore[operator]
    result = run_fresh(code, env)  # every later call: from the cache
    assert result["first_prompt"] == ["STREAM", "FILE"]
    loaded = set(result["loaded"])  # type: ignore[arg-type]
    assert "consent_ivr.engine" in loaded  # the probe does see the imports
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_pyst2_stand_ins_load_the_real_modules_when_used() -> None:
    code = """
        import consent_ivr.transports.pyst2
        import asterisk.agi as pyst2_agi
        state = {"pprint": "pprint" in sys.modules, "six": "six" in sys.modules,
                 "PY3": pyst2_agi.PY3}
        text = pyst2_agi.pprint.pformat({"b": 1, "a": [1, 2]})  # pyst2's error-path use
        import pprint
        state.update(pformat=text, real=pprint.pformat is pyst2_agi.pprint.pformat,
                     stand_in_gone=type(sys.modules["pprint"]).__name__ == "module")
        import json
        print(json.dumps(state))
    """
    state = run_fresh(code)
    assert state == {
        "pprint": False,
        "six": False,
        "PY3": True,
        "pformat": "{'a': [1, 2], 'b': 1}",
        "real": True,
        "stand_in_gone": True,
    }


def test_the_script_runs_a_call_when_executed_through_a_symlink_as_asterisk_does(
    tmp_path: Path,
) -> None:
    agi_bin = tmp_path / "agi-bin"
    agi_bin.mkdir()
    link = agi_bin / "consent-ivr.agi"
    link.symlink_to(agi_script())
    store = tmp_path / "evidence.sqlite3"
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": "k" * 32,
        "CONSENT_IVR_STORE": str(store),
        "CONSENT_IVR_CACHE": str(tmp_path / "cache"),
    }
    result = run_process(
        [str(link), "call-tracking"],
        env=env,
        cwd=tmp_path,
        dtmf="1",
        sounds=WavSoundCatalog(),
        timeout=20,
    )
    assert result.exit_code == 0, result.stderr
    assert result.variables["CONSENT_STATUS"] == "granted"
    assert result.variables["CONSENT_FLOW"] == "call-tracking@1"
    assert store.exists()


def test_the_script_runs_when_started_as_sh_with_a_bare_file_name(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": "k" * 32,
        "CONSENT_IVR_STORE": str(tmp_path / "evidence.sqlite3"),
        "CONSENT_IVR_CACHE": str(tmp_path / "cache"),
    }
    result = run_process(
        ["sh", "consent-ivr.agi", "call-tracking"],
        env=env,
        cwd=agi_script().parent,
        dtmf="2",
        sounds=WavSoundCatalog(),
        timeout=20,
    )
    assert result.exit_code == 0, result.stderr
    assert result.variables["CONSENT_STATUS"] == "declined"
