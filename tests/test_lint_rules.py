"""`consent-ivr lint`: each rule on edits of the example flow, the key placeholders, R13 on the
audio bytes, R18 against a real store, the output formats, and every load path refusing a flow
with a lint error (validate, simulate / process AGI, the FastAGI server's load and reload)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consent_ivr.cli.lint import run_lint
from consent_ivr.cli.simulate import simulate_call
from consent_ivr.cli.sounds import approve_recordings
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import Diagnostic, FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.lint.check import lint_file, load_checked
from consent_ivr.paths import flows_dir

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (flows_dir() / "call-tracking.yaml").read_text(encoding="utf-8")
WITHDRAWAL = (flows_dir() / "withdrawal.yaml").read_text(encoding="utf-8")


def edit(*changes: tuple[str, str], text: str = EXAMPLE) -> str:
    for old, new in changes:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def place(folder: Path, text: str, *, withdrawal: str | None = WITHDRAWAL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "call-tracking.yaml").write_text(text, encoding="utf-8")
    if withdrawal is not None:
        (folder / "withdrawal.yaml").write_text(withdrawal, encoding="utf-8")
    return folder / "call-tracking.yaml"


def findings(folder: Path, text: str, **options: object) -> list[Diagnostic]:
    """Every finding but R13's (an edited text no longer matches its audio: that is R13's job,
    tested on its own below)."""
    withdrawal = options.pop("withdrawal", WITHDRAWAL)
    path = place(folder, text, withdrawal=withdrawal)  # type: ignore[arg-type]
    report = lint_file(str(path), run_proof=False, **options)  # type: ignore[arg-type]
    return [d for d in report.diagnostics if d.rule != "R13"]


def rules(found: list[Diagnostic]) -> list[str]:
    return sorted({d.rule for d in found})


def test_both_example_flows_lint_clean_with_zero_warnings() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_lint(["flows"], out, err) == 0, out.getvalue()
    text = out.getvalue()
    assert " error: " not in text and " warning: " not in text
    assert "2 flows: 0 error(s), 0 warning(s)" in text
    assert text.count("proof (de): holds") == 2 and text.count("proof (en): holds") == 2


# ------------------------------------------------------------------------ rules moved here
def test_a_question_for_a_legitimate_interest_purpose_is_a_fake_choice(tmp_path: Path) -> None:
    text = edit(("  - purpose: ga_linkage\n", "  - purpose: call_analytics\n"))
    found = findings(tmp_path, text)
    assert "R10" in rules(found) and "R11" in rules(found)  # asked the wrong one, never ours
    (r10,) = [d for d in found if d.rule == "R10"]
    assert "asks about 'call_analytics', which is based on legitimate_interest" in r10.message


def test_a_first_layer_without_a_mandatory_item_names_it(tmp_path: Path) -> None:
    text = edit(("covers: [voluntary, withdrawal]", "covers: [voluntary]"))
    found = findings(tmp_path, text)
    assert [d.message for d in found if d.rule == "R9"] == [
        "the first layer (notice) does not cover: withdrawal"
    ]


def test_a_question_that_announces_only_the_accept_key_is_r2(tmp_path: Path) -> None:
    text = edit(
        (
            'en: "If you agree, press 1. If you do not agree, press 2. For full',
            'en: "If you agree, press 1. Otherwise just wait. For full',
        )
    )
    found = [d for d in findings(tmp_path, text) if d.rule == "R2"]
    assert any("does not announce key 2 for declining" in d.message for d in found)
    assert any("waiting or for hanging up" in d.message for d in found)


def test_a_digit_inside_a_number_is_not_a_key(tmp_path: Path) -> None:
    # "12" is a number, not key 2: the decline key is still not announced
    text = edit(
        (
            'de: "Einverstanden: Taste 1. Nicht einverstanden: Taste 2. Alle',
            'de: "Einverstanden: Taste 1. Nicht einverstanden: in 12 Sekunden. Alle',
        )
    )
    found = [d for d in findings(tmp_path, text) if d.rule == "R2"]
    assert any("'de' text of question" in d.message and "key 2" in d.message for d in found)


def test_the_policy_pointer_must_name_the_full_notice_key(tmp_path: Path) -> None:
    text = edit(("For full information,\n        press 9, or visit", "For full information, visit"))
    found = findings(tmp_path, text)
    (r7,) = [d for d in found if d.rule == "R7"]
    assert "does not say policy_pointer, which its 'de' text says" in r7.message
    assert "the key 9" in r7.expected


def test_a_full_notice_key_with_no_full_notice_is_r8(tmp_path: Path) -> None:
    start, end = EXAMPLE.index("full_notice:\n  - id:"), EXAMPLE.index("# How the caller answers.")
    found = findings(tmp_path, EXAMPLE[:start] + EXAMPLE[end:])
    assert any(d.rule == "R8" and "no full notice" in d.message for d in found)


# ----------------------------------------------------------------------------- placeholders
def test_key_placeholders_are_spoken_as_the_configured_keys(tmp_path: Path) -> None:
    text = edit(
        (
            'de: "Einverstanden: Taste 1. Nicht einverstanden: Taste 2. Alle Informationen:'
            " Taste 9.",
            'de: "Einverstanden: Taste {accept}. Nicht einverstanden: Taste {decline}. Alle'
            " Informationen: Taste {full_notice}.",
        ),
        ("Wiederholen: Taste 0.", "Wiederholen: Taste {repeat}. {{Klammer}}"),
    )
    path = place(tmp_path, text)
    flow = load_flow(path, check_audio=False)
    ask = flow.questions[0].prompt.text["de"]
    assert ask.startswith("Einverstanden: Taste 1. Nicht einverstanden: Taste 2.")
    assert ask.endswith("Wiederholen: Taste 0. {Klammer}")
    assert findings(tmp_path, text) == []


@pytest.mark.parametrize(
    ("placeholder", "problem"),
    [
        ("{acept}", "unknown placeholder {acept} (did you mean {accept}?)"),
        ("{full_notice}", "{full_notice}, but choice.keys.full_notice is null"),
        ("{ accept", "a lone '{' (write '{{' for a brace)"),
    ],
)
def test_a_bad_placeholder_is_a_positioned_error(
    tmp_path: Path, placeholder: str, problem: str
) -> None:
    text = edit(("Wiederholen: Taste 0.", f"Wiederholen: Taste 0. {placeholder}"))
    if placeholder == "{full_notice}":
        text = text.replace('full_notice: "9"', "full_notice: null")
    with pytest.raises(FlowError) as info:
        load_flow(place(tmp_path, text), check_audio=False)
    assert any(problem in d.message for d in info.value.diagnostics), info.value


# -------------------------------------------------------------------------------------- R13
@pytest.fixture
def own_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "sounds", tmp_path / "sounds")
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    return place(tmp_path / "flows", EXAMPLE)


def test_a_wav_swapped_for_another_prompts_audio_is_r13(own_copy: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sounds" / "de" / "call-tracking"
    shutil.copyfile(folder / "voluntary.wav", folder / "rights.wav")  # manifest left as it was
    report = lint_file(str(own_copy), run_proof=False)
    (r13,) = [d for d in report.diagnostics if d.rule == "R13"]
    assert "rights.wav is not the audio made or approved for this text" in r13.message
    with pytest.raises(FlowError, match="R13 error"):
        load_checked(own_copy)


def test_an_approved_recording_counts_and_a_build_keeps_it(own_copy: Path, tmp_path: Path) -> None:
    from consent_ivr.cli.sounds import build_sounds, read_manifest

    folder = tmp_path / "sounds" / "de" / "call-tracking"
    recording = (folder / "voluntary.wav").read_bytes()  # stands in for a studio recording
    (folder / "rights.wav").write_bytes(recording)
    assert approve_recordings(own_copy, ["rights"], "de", tmp_path / "sounds") == ["de/rights"]
    load_checked(own_copy)  # the recording is now the audio of that text
    manifest = read_manifest(tmp_path / "sounds" / "call-tracking.manifest.json")
    assert manifest["de/rights"]["generator"].startswith("recorded, approved ")
    if shutil.which("espeak-ng") and shutil.which("sox"):
        assert build_sounds(own_copy, tmp_path / "sounds") == []  # kept, not re-synthesised
        assert (folder / "rights.wav").read_bytes() == recording


# -------------------------------------------------------------------------------------- R18
def test_r18_refuses_the_same_version_with_a_new_recipient(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "evidence.sqlite3"))
    try:
        store.remember_flow(load_flow(flows_dir() / "call-tracking.yaml"))
        same = lint_file(str(flows_dir() / "call-tracking.yaml"), store=store, run_proof=False)
        assert same.diagnostics == [] and same.skipped == []
        text = edit(("    recipients: [Google]", "    recipients: [Google, Meta]"))
        found = [d for d in findings(tmp_path / "f", text, store=store) if d.rule == "R18"]
        assert len(found) == 1
        assert "call-tracking version 1 is already in the evidence store" in found[0].message
        assert "recipients of 'ga_linkage' changed" in found[0].message
        assert "raise `version` to 2" in found[0].expected
        bumped = text.replace("version: 1  ", "version: 2  ", 1)
        assert [d for d in findings(tmp_path / "g", bumped, store=store) if d.rule == "R18"] == []
        with pytest.raises(FlowError, match="R18 error"):
            load_checked(tmp_path / "f" / "call-tracking.yaml", store=store)
    finally:
        store.close()


def test_without_a_store_r18_says_it_was_skipped(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_lint([str(flows_dir() / "withdrawal.yaml")], out, err, run_proof=False) == 0
    assert "note: R18 not checked: no evidence store given (--store URL)" in out.getvalue()


# ---------------------------------------------------------------------------------- outputs
def test_text_findings_have_file_line_col_rule_and_severity(tmp_path: Path) -> None:
    path = place(tmp_path, edit(('accept: "1"', 'accept: "2"'), ('decline: "2"', 'decline: "1"')))
    out, err = io.StringIO(), io.StringIO()
    assert run_lint([str(path)], out, err, run_proof=False) == 1
    first = out.getvalue().splitlines()[0]
    assert first.startswith(f"{path}:") and ": R1 " in first
    line, col = first.split(":")[1:3]
    assert line.isdigit() and col.isdigit()
    assert err.getvalue() == ""


def test_json_output_lists_every_finding_and_the_proof(tmp_path: Path) -> None:
    path = place(tmp_path, edit(("accept_during_notice: false", "accept_during_notice: true")))
    out, err = io.StringIO(), io.StringIO()
    assert run_lint([str(path)], out, err, fmt="json") == 0  # warnings never block
    data = json.loads(out.getvalue())
    (entry,) = data["files"]
    assert entry["flow"] == "call-tracking@1" and entry["ok"] is True
    assert {f["rule"] for f in entry["findings"]} == {"R5"}
    assert all({"path", "line", "col", "rule", "severity", "message", "fix"} <= set(f)
               for f in entry["findings"])  # fmt: skip
    proof = {p["language"]: p for p in entry["proof"]}
    assert set(proof) == {"de", "en"}
    violation = proof["de"]["violations"][0]
    assert violation["rule"] == "R5" and violation["severity"] == "warning"
    assert violation["dtmf"] and violation["outcome"] == "granted"
    assert data["errors"] == 0 and data["warnings"] >= 2  # the setting and the proof's call


def test_the_command_line_exit_statuses(tmp_path: Path) -> None:
    def lint(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "consent_ivr.cli.main", "lint", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    ok = lint("flows", "--no-proof")
    assert ok.returncode == 0 and "Traceback" not in ok.stderr
    bad = place(tmp_path, edit(("basis: legitimate_interest", "basis: consent")))
    failed = lint(str(bad), "--no-proof")
    assert (
        failed.returncode == 1 and "R10 error" in failed.stdout and "Traceback" not in failed.stderr
    )
    (tmp_path / "a-file").write_text("not a folder")
    store = lint("flows", "--store", str(tmp_path / "a-file" / "e.sqlite3"), "--no-proof")
    assert store.returncode == 2 and "cannot read the evidence store" in store.stderr
    assert len(store.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------- load paths
LINT_ERROR = (
    ("Vielen Dank, Ihre Einwilligung", "Legen Sie jetzt auf. Vielen Dank, Ihre Einwilligung"),
)


def test_validate_refuses_a_flow_with_a_lint_error(tmp_path: Path) -> None:
    from consent_ivr.cli.lint import run_validate

    path = place(tmp_path, edit(*LINT_ERROR))
    out, err = io.StringIO(), io.StringIO()
    assert run_validate([str(path)], out, err) == 2
    assert "R3 error" in err.getvalue() and out.getvalue() == ""


def test_process_agi_never_serves_a_flow_with_a_lint_error(tmp_path: Path) -> None:
    path = place(tmp_path, edit(*LINT_ERROR))
    flow = load_flow(path, check_audio=False)
    call = simulate_call(flow, "1", flow_arg=str(path))
    assert call.variables["CONSENT_STATUS"] == "error"
    assert call.result.exit_code == 1 and "not a valid flow" in call.stderr


def test_the_server_refuses_a_flow_with_a_lint_error_and_a_reload_keeps_the_old_one(
    tmp_path: Path,
) -> None:
    from fastagi_kit import ServerThread
    from test_fastagi import call

    flows = tmp_path / "flows"
    place(flows, EXAMPLE)
    with ServerThread(tmp_path, flows_dir=flows) as srv:
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"
        (flows / "call-tracking.yaml").write_text(edit(*LINT_ERROR), encoding="utf-8")
        errors = srv.run(srv.server.reload())
        assert any("R3 error" in e for e in errors)
        # the previous version keeps serving (its audio is intact), never the unlawful one
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"
    (flows / "withdrawal.yaml").unlink()  # and at start: R17 refuses the consent flow
    with ServerThread(tmp_path, flows_dir=flows) as srv:
        assert srv.server.flows.get("call-tracking") is None


# -------------------------------------------------------------------- R17 and names (issue 11)
def test_r17_a_full_notice_key_beside_an_email_withdrawal_is_no_way_by_phone(
    tmp_path: Path,
) -> None:
    """The withdrawal sentence offers only e-mail; "press 9" for the full notice in the same
    segment is a key press for something else, not a way to withdraw by phone."""
    text = edit(
        (
            "jederzeit widerrufbar:\n        Rufen Sie dazu einfach diese Nummer erneut an.",
            "jederzeit per E-Mail widerrufbar.\n        Alle Informationen: Taste 9.",
        ),
        (
            "you can withdraw\n        at any time: simply call this number again.",
            "you can withdraw\n        at any time by e-mail. For full information, press 9.",
        ),
    )
    found = [d for d in findings(tmp_path, text) if d.rule == "R17"]
    assert sorted(d.message.split("'")[1] for d in found) == ["de", "en"], found
    assert all("withdrawal only by post, e-mail or the web" in d.message for d in found)


def test_r17_a_withdrawal_way_said_in_the_next_sentence_counts(tmp_path: Path) -> None:
    text = edit(
        (
            "you can withdraw\n        at any time: simply call this number again.",
            "you can change your mind\n        at any time. Simply call this number again.",
        )
    )
    assert [d for d in findings(tmp_path, text) if d.rule == "R17"] == []


def test_r17_a_withdrawal_flow_of_another_controller_does_not_serve(tmp_path: Path) -> None:
    other = WITHDRAWAL.replace("name: Muster Telefon GmbH", "name: Bäckerei Sonnenschein GmbH")
    assert other != WITHDRAWAL
    found = [d for d in findings(tmp_path, EXAMPLE, withdrawal=other) if d.rule == "R17"]
    assert len(found) == 1, found  # one finding for the purpose, both languages named
    assert "serves 'ga_linkage' in 'de', 'en'" in found[0].message
    assert (
        "withdrawal.yaml withdraws for Bäckerei Sonnenschein GmbH, not Muster Telefon GmbH"
        in found[0].message
    )
    assert "controller Muster Telefon GmbH" in found[0].expected


@pytest.mark.parametrize(
    ("name", "same"),
    [
        ("Muster Telefon", True),  # the legal form may be left out
        ("muster  TELEFON gmbh", True),  # case and spacing do not count
        ("Die Muster Telefon GmbH", True),  # nor a leading article
        ("Muster Telefon AG", False),  # another legal form: another company
        ("Muster Telefonie GmbH", False),
    ],
)
def test_r17_compares_the_controller_names_normalised(
    tmp_path: Path, name: str, same: bool
) -> None:
    other = WITHDRAWAL.replace("name: Muster Telefon GmbH", f"name: {name}")
    found = [d for d in findings(tmp_path, EXAMPLE, withdrawal=other) if d.rule == "R17"]
    assert (found == []) is same, found


@pytest.mark.parametrize(
    ("declared", "spoken"),
    [
        ("Bäckerei Müller Öko GmbH", "Baeckerei Mueller Oeko GmbH"),  # ä -> ae, ü -> ue, ö -> oe
        ("Baeckerei Mueller Oeko GmbH", "Bäckerei Müller Öko GmbH"),  # and back
        ("Großbäckerei Straße GmbH", "Grossbaeckerei Strasse GmbH"),  # ß -> ss
    ],
)
def test_r9_a_transliterated_name_names_the_controller(
    tmp_path: Path, declared: str, spoken: str
) -> None:
    text = EXAMPLE.replace("name: Muster Telefon GmbH", f"name: {declared}")
    text = text.replace("Muster Telefon GmbH", spoken)
    other = WITHDRAWAL.replace("name: Muster Telefon GmbH", f"name: {spoken}")
    found = findings(tmp_path, text, withdrawal=other)
    assert found == [], found


def test_a_key_error_is_not_buried_under_audio_of_texts_it_cannot_speak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accept and decline both "1": the texts that speak {accept}/{decline} cannot be built, so
    R13 does not call their audio stale; the key error alone refuses the flow."""
    shutil.copytree(ROOT / "sounds", tmp_path / "sounds")
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    with_placeholders = edit(
        (
            'de: "Einverstanden: Taste 1. Nicht einverstanden: Taste 2. Alle',
            'de: "Einverstanden: Taste {accept}. Nicht einverstanden: Taste {decline}. Alle',
        )
    )
    path = place(tmp_path / "flows", with_placeholders)
    assert lint_file(str(path), run_proof=False).diagnostics == []  # same words, same audio
    path = place(tmp_path / "flows", edit(('decline: "2"', 'decline: "1"'), text=with_placeholders))
    report = lint_file(str(path), run_proof=False)
    assert [d.message for d in report.diagnostics] == [
        "key '1' is used for both accept and decline"
    ], [str(d) for d in report.diagnostics]
    with pytest.raises(FlowError, match="used for both accept and decline"):
        load_checked(path)  # still refused: fail closed


def test_r8_names_the_claim_whose_words_leave_an_item_out(tmp_path: Path) -> None:
    """A retention claim the English words do not support: R9 and R7 at the claim and the text,
    and R8's completeness verdict says it is that claim, not a missing segment."""
    text = edit(("We keep call data for\n        90 days. ", ""))
    found = findings(tmp_path, text)
    assert rules(found) == ["R7", "R8", "R9"], [str(d) for d in found]
    (r8,) = [d for d in found if d.rule == "R8"]
    assert r8.message == (
        "notice and full notice together do not say: retention (en: claimed by"
        " 'details_processing', whose words do not say it)"
    )
