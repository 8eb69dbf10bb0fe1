"""The `returning:` block in the loader and the linter: its shape, `{date}` refused with its
reason, the bound on max_age, the reminder that names the decision and offers the change with one
key, no re-use for recording unless stated; and the whole-flow proof over the reminder path."""

from __future__ import annotations

from pathlib import Path

import pytest

from consent_ivr.flow.diagnostics import Diagnostic, FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.lint.check import lint_file
from consent_ivr.lint.proof import prove
from consent_ivr.lint.rules_returning import MAX_AGE_DAYS
from consent_ivr.paths import flows_dir
from flowkit import make_flow

EXAMPLE = (flows_dir() / "call-tracking.yaml").read_text(encoding="utf-8")
WITHDRAWAL = (flows_dir() / "withdrawal.yaml").read_text(encoding="utf-8")
GRANTED_EN = (
    "On an earlier call you agreed that we link your calls with Google Analytics.\n"
    "        To withdraw now, press {decline}. For full information, press {full_notice}."
)


def edit(old: str, new: str, text: str = EXAMPLE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def findings(tmp_path: Path, text: str) -> list[Diagnostic]:
    (tmp_path / "call-tracking.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "withdrawal.yaml").write_text(WITHDRAWAL, encoding="utf-8")
    report = lint_file(str(tmp_path / "call-tracking.yaml"), run_proof=False)
    return [d for d in report.diagnostics if d.rule != "R13"]  # edited texts: audio is R13's


def load_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "call-tracking.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "call-tracking.yaml", check_audio=False)
    return str(info.value)


def test_the_example_flow_has_the_block_and_lints_clean(tmp_path: Path) -> None:
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    assert flow.returning is not None and flow.returning.max_age_days == 30
    assert flow.returning.remember == ("granted", "declined")
    assert findings(tmp_path, EXAMPLE) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_age: 30d", "max_age: 30", "returning.max_age is the number 30; expected a number"),
        ("max_age: 30d", "max_age: 0d", "expected a number of days, e.g. 30d"),
        (
            "remember: [granted, declined]",
            "remember: [granted, none]",
            "returning.remember lists 'none'; expected declined, granted",
        ),
        (
            "remember: [granted, declined]",
            "remember: [granted]",
            "returning.say has a reminder for 'declined', which remember does not list",
        ),
        ("  max_age: 30d", "  max_age: 30d\n  keep: forever", "unknown key 'keep' in returning"),
        (
            "link your calls with Google Analytics.\n        To withdraw",
            "link your calls with Google Analytics on {date}.\n        To withdraw",
            "cannot speak a per-call date",
        ),
    ],
)
def test_the_loader_checks_the_block_with_clear_messages(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    message = load_error(tmp_path, edit(old, new))
    assert expected in message, message
    assert "call-tracking.yaml:" in message  # file:line:col


def test_max_age_is_bounded(tmp_path: Path) -> None:
    found = findings(tmp_path, edit("max_age: 30d", f"max_age: {MAX_AGE_DAYS + 1}d"))
    assert [(d.rule, d.severity) for d in found] == [("R18", "error")]
    assert f"at most {MAX_AGE_DAYS}d" in found[0].expected
    assert findings(tmp_path, edit("max_age: 30d", f"max_age: {MAX_AGE_DAYS}d")) == []


def test_a_reminder_must_offer_the_change_key(tmp_path: Path) -> None:
    text = edit(GRANTED_EN, "On an earlier call you agreed that we link your calls.")
    found = findings(tmp_path, text)
    assert [d.rule for d in found] == ["R17"]
    assert "does not offer key 2" in found[0].message and "(en)" in found[0].message


def test_a_reminder_must_name_the_earlier_decision(tmp_path: Path) -> None:
    text = edit(GRANTED_EN, "We link your calls with Google Analytics. To stop, press {decline}.")
    found = findings(tmp_path, text)
    assert [d.rule for d in found] == ["R17"]
    assert "does not say what the caller decided" in found[0].message


def test_a_recording_purpose_is_not_reused_unless_stated(tmp_path: Path) -> None:
    recording = edit(
        "  ga_linkage:\n    basis: consent\n",
        "  ga_linkage:\n    basis: consent\n    kind: recording\n",
    )
    found = [d for d in findings(tmp_path, recording) if d.rule == "R19"]
    assert any("re-use the decision on the recording purpose" in d.message for d in found)
    allowed = edit("  max_age: 30d", "  max_age: 30d\n  allow_recording: true", recording)
    found = [d for d in findings(tmp_path, allowed) if "re-used" in d.message]
    assert [(d.rule, d.severity) for d in found] == [("R19", "warning")]


@pytest.mark.parametrize("lang", ["de", "en"])
def test_the_proof_covers_the_reminder_path(lang: str) -> None:
    flow = load_flow(flows_dir() / "call-tracking.yaml")
    result = prove(flow, lang)
    assert result.ok and result.violations == []
    assert result.terminal_statuses >= {"granted", "declined", "none", "error"}


def test_the_proof_finds_an_engine_that_would_honour_another_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consent_ivr.engine.call import Call

    monkeypatch.setattr(Call, "_refusal", lambda self, earlier: "")  # honours anything
    result = prove(make_flow(returning=True), "de")
    found = [v for v in result.violations if v.rule == "R1"]
    assert found and "reused without an earlier grant of this notice" in found[0].message
    assert found[0].dtmf is None  # needs an earlier decision in the store: no key script
