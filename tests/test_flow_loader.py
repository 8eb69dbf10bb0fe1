"""The flow loader: the example flow loads completely; every validation rule reports exactly
`file:line:col: what; expected`, all at once."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path

import pytest

from consent_ivr.flow.diagnostics import Diagnostic, FlowError
from consent_ivr.flow.loader import load_flow, load_flow_with_warnings, resolve_flow_path
from consent_ivr.flow.model import Basis
from consent_ivr.wav import is_telephony_format, read_wav_info

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "flows" / "call-tracking.yaml"
SOUNDS = ROOT / "sounds"
Q = '"'

BASE = textwrap.dedent(
    """\
    flow: tiny
    version: 2
    languages: [de, en]
    controller: {name: Muster GmbH, contact: dsb@muster.example}
    policy_url: muster.example/ds
    purposes:
      call_analytics:
        basis: legitimate_interest
        description: {de: Anrufauswertung., en: Call analysis.}
      ga_linkage:
        basis: consent
        description: {de: Google-Verknüpfung., en: Google linkage.}
        recipients: [Google]
        third_countries: [USA]
    notice:
      - id: who
        covers: [controller, purposes, data, recipients, third_country]
        say: {de: "Hier ist Muster.", en: "This is Muster."}
      - id: rights
        covers: [rights, objection, voluntary, withdrawal, policy_pointer]
        say: {de: "Widerspruch jederzeit. Infos: Taste 9.", en: "Object any time. Info: press 9."}
    full_notice:
      - id: details
        covers: [dpo, legal_basis, retention, complaint]
        say: {de: "Details.", en: "Details."}
    choice:
      keys: {accept: "1", decline: "2", repeat: "0", full_notice: "9"}
      timeout: 6s
      noinput:
        - {de: "Bitte 1 oder 2.", en: "Please 1 or 2."}
      nomatch:
        - {de: "Nur 1 oder 2.", en: "Only 1 or 2."}
    questions:
      - purpose: ga_linkage
        say: {de: "Ja: Taste 1. Nein: Taste 2.", en: "Yes: press 1. No: press 2."}
    close:
      granted: {de: Danke., en: Thanks.}
      declined: {de: Gut., en: Fine.}
      none: {de: Nichts., en: Nothing.}
    """
)


def write(tmp_path: Path, text: str, name: str = "tiny.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def variant(*replacements: tuple[str, str]) -> str:
    text = BASE
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def at(text: str, needle: str, nth: int = 1) -> str:
    """`line:col` (1-based) of the nth occurrence of needle in text."""
    index = -1
    for _ in range(nth):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    col = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{line}:{col}"


def diagnostics(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(FlowError) as info:
        load_flow(path, check_audio=False)
    return [str(d).replace(str(path), "F") for d in info.value.diagnostics]


def only(tmp_path: Path, text: str) -> str:
    found = diagnostics(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# -- the example flow ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example() -> object:
    return load_flow(EXAMPLE, sounds_root=SOUNDS)


def test_example_flow_loads(example: object) -> None:
    flow = load_flow(EXAMPLE, sounds_root=SOUNDS)
    assert flow.label == "call-tracking@1"
    assert flow.languages == ("de", "en")
    assert flow.default_language == "de"
    assert flow.notice_version == "2026-11"
    assert [p.id for p in flow.consent_purposes] == ["ga_linkage"]
    assert flow.purpose("call_analytics").basis is Basis.LEGITIMATE_INTEREST
    assert flow.purpose("ga_linkage").recipients == ("Google",)
    assert [q.purpose for q in flow.questions] == ["ga_linkage"]
    assert flow.choice.keys.accept == "1" and flow.choice.keys.decline == "2"
    assert flow.choice.keys.full_notice == "9" and flow.choice.keys.repeat == "0"
    assert flow.choice.timeout_ms == 6000
    assert set(flow.close) == {"granted", "declined", "none", "partial", "error"}
    assert flow.source_sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    ids = [p.id for p in flow.all_prompts()]
    assert len(ids) == len(set(ids))


def test_example_every_prompt_has_telephony_audio() -> None:
    flow = load_flow(EXAMPLE, sounds_root=SOUNDS)
    for prompt in flow.all_prompts():
        for lang in flow.languages:
            audio = Path(prompt.audio[lang])
            assert audio.is_absolute()
            assert audio == (SOUNDS / lang / "call-tracking" / f"{prompt.id}.wav").resolve()
            info = read_wav_info(audio)
            assert is_telephony_format(info)
            assert prompt.samples[lang] == info.frames > 0
            assert prompt.audio_sha256[lang] == hashlib.sha256(audio.read_bytes()).hexdigest()


def test_example_first_layer_is_30_to_45_seconds() -> None:
    flow = load_flow(EXAMPLE, sounds_root=SOUNDS)
    for lang in flow.languages:
        seconds = sum(p.samples[lang] for p in flow.notice) / 8000
        assert 30 <= seconds <= 45, (lang, seconds)


def test_notice_hash_differs_per_language_and_follows_the_text(tmp_path: Path) -> None:
    flow = load_flow(EXAMPLE, sounds_root=SOUNDS)
    assert set(flow.notice_sha256) == {"de", "en"}
    assert flow.notice_sha256["de"] != flow.notice_sha256["en"]
    changed = EXAMPLE.read_text(encoding="utf-8").replace(
        "Hier ist die Muster Telefon GmbH.", "Hier ist die Muster Telefon AG."
    )
    copy = write(tmp_path, changed, "call-tracking.yaml")
    other = load_flow(copy, check_audio=False)
    same = load_flow(EXAMPLE, check_audio=False)
    assert other.notice_sha256["de"] != same.notice_sha256["de"]
    assert other.notice_sha256["en"] == same.notice_sha256["en"]


def test_notice_hash_is_the_documented_canonical_json() -> None:
    import json

    flow = load_flow(EXAMPLE, sounds_root=SOUNDS)
    doc = {
        "flow": "call-tracking",
        "version": 1,
        "notice_version": "2026-11",
        "language": "en",
        "prompts": [[p.id, p.text["en"], p.audio_sha256["en"]] for p in flow.all_prompts()],
        # the example has more formats than the WAV: Asterisk may play any of them
        "audio_formats": {p.id: p.format_sha256["en"] for p in flow.all_prompts()},
    }
    assert set(doc["audio_formats"]["who"]) == {"alaw", "g722"}
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert flow.notice_sha256["en"] == hashlib.sha256(canon.encode()).hexdigest()


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("de_DE", "de"),
        ("en", "en"),
        ("en-GB", "en"),
        ("EN_us", "en"),
        ("fr", "de"),
        (None, "de"),
        ("", "de"),
    ],
)
def test_select_language(requested: str | None, expected: str) -> None:
    flow = load_flow(EXAMPLE, check_audio=False)
    assert flow.select_language(requested) == expected


def test_without_audio_check_paths_are_still_known(tmp_path: Path) -> None:
    flow = load_flow(write(tmp_path, BASE), sounds_root=tmp_path / "snd", check_audio=False)
    assert flow.notice[0].audio["en"] == str(
        (tmp_path / "snd" / "en" / "tiny" / "who.wav").resolve()
    )
    assert flow.notice[0].samples == {"de": 0, "en": 0}
    assert flow.notice[0].covers == frozenset(
        {"controller", "purposes", "data", "recipients", "third_country"}
    )
    assert flow.notice_version == "2"  # default: str(version)
    assert [p.id for p in flow.all_prompts()] == [
        "who", "rights", "details", "ask_ga_linkage", "noinput_1", "nomatch_1",
        "close_granted", "close_declined", "close_none",
    ]  # fmt: skip


def test_resolve_flow_path(tmp_path: Path) -> None:
    write(tmp_path, BASE, "tiny.yaml")
    assert resolve_flow_path("tiny", tmp_path) == tmp_path / "tiny.yaml"
    assert resolve_flow_path(str(tmp_path / "tiny.yaml")) == tmp_path / "tiny.yaml"
    with pytest.raises(FlowError) as info:
        resolve_flow_path("tinny", tmp_path)
    assert str(info.value) == (
        f"tinny:1:1: error: no flow named 'tinny' (looked for {tmp_path}/tinny.yaml); did you"
        " mean 'tiny'?"
    )


# -- one test per rule -----------------------------------------------------------------------


def test_syntax_error(tmp_path: Path) -> None:
    text = variant(("timeout: 6s", "timeout: [6s"))
    assert only(tmp_path, text) == (
        "F:29:10: error: YAML syntax error: did not find expected ',' or ']'"
        f" (while parsing a flow sequence that starts at line {at(text, '[6s').split(':')[0]},"
        f" column 12); expected valid YAML (check indentation, colons and quotes)"
    )


def test_empty_file(tmp_path: Path) -> None:
    assert only(tmp_path, "# nothing\n") == (
        "F:1:1: error: the flow file is empty; expected flow, version, languages, ..."
    )


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    text = variant(("policy_url:", "polcy_url:"))
    assert diagnostics(tmp_path, text) == [
        "F:1:1: error: missing 'policy_url' in the flow file; expected policy_url: the short web"
        " address"
        " of the written privacy policy",
        f"F:{at(text, 'polcy_url')}: error: unknown key 'polcy_url' in the flow file;"
        " did you mean 'policy_url'?",
    ]


def test_unknown_key_without_suggestion(tmp_path: Path) -> None:
    text = variant(("timeout: 6s", "timeout: 6s\n  colour: red"))
    assert only(tmp_path, text) == (
        f"F:{at(text, 'colour')}: error: unknown key 'colour' in choice; expected one of:"
        " accept_during_notice, keys, max, noinput, nomatch, timeout"
    )


def test_duplicate_key(tmp_path: Path) -> None:
    text = variant(("version: 2\n", "version: 2\nversion: 3\n"))
    assert only(tmp_path, text) == (
        f"F:{at(text, 'version: 3')}: error: duplicate key 'version' in the flow file (first at"
        " line 2);"
        " expected each key once"
    )


def test_missing_field_is_reported_at_the_parent(tmp_path: Path) -> None:
    text = variant(
        (
            "controller: {name: Muster GmbH, contact: dsb@muster.example}",
            "controller: {name: Muster GmbH}",
        )
    )
    assert only(tmp_path, text) == (
        f"F:{at(text, '{name')}: error: missing 'contact' in controller; expected contact: a"
        " contact address, e.g. an e-mail address"
    )


def test_wrong_types(tmp_path: Path) -> None:
    text = variant(
        ("version: 2", "version: zwei"),
        ("languages: [de, en]", "languages: [de, en]\nnotice_version: [x]"),
    )
    assert diagnostics(tmp_path, text) == [
        f"F:{at(text, 'zwei')}: error: version is the text 'zwei'; expected a whole number >= 1",
        f"F:{at(text, '[x]')}: error: notice_version is a list; expected a version label, e.g."
        " '2026-11'",
    ]


def test_bad_flow_id_and_version(tmp_path: Path) -> None:
    text = variant(("flow: tiny", "flow: Tiny Flow"), ("version: 2", "version: 0"))
    assert diagnostics(tmp_path, text) == [
        "F:1:7: error: flow id 'Tiny Flow' has characters other than lowercase letters, digits"
        " and '-';"
        " expected an id like call-tracking",
        "F:2:10: error: version is 0; expected a whole number >= 1",
    ]


def test_dangling_purpose_reference(tmp_path: Path) -> None:
    text = variant(("- purpose: ga_linkage", "- purpose: ga_link"))
    assert diagnostics(tmp_path, text) == [
        f"F:{at(text, 'ga_link', 2)}: error: question asks about purpose 'ga_link', which is not"
        " defined"
        " in purposes; did you mean 'ga_linkage'?",
    ]


def test_unknown_basis(tmp_path: Path) -> None:
    text = variant(("basis: consent", "basis: consens"))
    found = diagnostics(tmp_path, text)
    assert found[0] == (
        f"F:{at(text, 'consens')}: error: unknown basis 'consens' for purpose 'ga_linkage';"
        " did you mean 'consent'?"
    )


def test_accept_equals_decline(tmp_path: Path) -> None:
    text = variant(('decline: "2"', 'decline: "1"'))
    found = diagnostics(tmp_path, text)
    assert found[0] == (
        "F:27:32: error:"
        " key '1' is used for both accept and decline; expected a different key for each action"
        " (the caller must have a real choice)"
    )


def test_any_two_keys_equal(tmp_path: Path) -> None:
    text = variant(('repeat: "0"', 'repeat: "9"'))
    assert only(tmp_path, text) == (
        f"F:{at(text, Q + '9' + Q, 2)}: error: key '9' is used for both repeat and full_notice;"
        " expected a"
        " different key for each action (the caller must have a real choice)"
    )


@pytest.mark.parametrize("bad", ['"10"', '"a"', "''", "[1]"])
def test_key_not_on_a_phone(tmp_path: Path, bad: str) -> None:
    text = variant(('accept: "1"', f"accept: {bad}"))
    found = diagnostics(tmp_path, text)
    shown = {"[1]": "a list", "''": "''"}.get(bad, bad.replace('"', "'"))
    assert found[0] == (
        f"F:{at(text, bad)}: error: the accept key {shown} is not a single telephone key;"
        " expected exactly one of 0123456789*#"
    )


def test_unquoted_digit_keys_and_null_disable(tmp_path: Path) -> None:
    text = variant(
        (
            '{accept: "1", decline: "2", repeat: "0", full_notice: "9"}',
            "{accept: 1, decline: 2, repeat: null, full_notice: 9}",
        )
    )
    flow = load_flow(write(tmp_path, text), check_audio=False)
    assert (flow.choice.keys.accept, flow.choice.keys.decline) == ("1", "2")
    assert flow.choice.keys.repeat is None


def test_unknown_cover_tag(tmp_path: Path) -> None:
    text = variant(("covers: [controller,", "covers: [controler,"))
    assert diagnostics(tmp_path, text) == [
        f"F:{at(text, 'controler')}: error: unknown cover tag 'controler'; did you mean"
        " 'controller'?",
    ]


def test_plain_string_in_a_two_language_flow(tmp_path: Path) -> None:
    text = variant(
        ('say: {de: "Hier ist Muster.", en: "This is Muster."}', 'say: "Hier ist Muster."')
    )
    assert only(tmp_path, text) == (
        f"F:{at(text, Q + 'Hier ist Muster.' + Q)}: error: say of notice segment 'who' is a single"
        " text, but this flow serves 2 languages (de, en); expected one text per language, e.g."
        " {de: ..., en: ...}"
    )


def test_missing_language_text(tmp_path: Path) -> None:
    text = variant(("granted: {de: Danke., en: Thanks.}", "granted: {de: Danke.}"))
    assert only(tmp_path, text) == (
        f"F:{at(text, '{de: Danke.}')}: error: close granted has no 'en' text; expected a text"
        " for every"
        " language of the flow (de, en)"
    )


def test_language_without_any_text(tmp_path: Path) -> None:
    text = variant(("languages: [de, en]", "languages: [de, en, fr]"))
    assert only(tmp_path, text) == (
        f"F:{at(text, 'fr]')}: error: language 'fr' is served but has no texts at all; expected a"
        " 'fr'"
        " text in every say and description, or remove 'fr' from languages"
    )


def test_say_for_a_language_not_served(tmp_path: Path) -> None:
    text = variant(
        ("none: {de: Nichts., en: Nothing.}", "none: {de: Nichts., en: Nothing., fr: Rien.}")
    )
    assert only(tmp_path, text) == (
        f"F:{at(text, 'fr: Rien')}: error: close none has a text for language 'fr', which this"
        " flow does"
        " not serve; expected only the languages listed in languages (de, en)"
    )


def test_empty_text(tmp_path: Path) -> None:
    text = variant(('en: "This is Muster."', 'en: " "'))
    assert only(tmp_path, text) == (
        f"F:{at(text, Q + ' ' + Q)}: error: the 'en' text of say of notice segment 'who' is empty;"
        " expected spoken words"
    )


def test_duplicate_prompt_id(tmp_path: Path) -> None:
    text = variant(("- id: details", "- id: who"))
    assert only(tmp_path, text) == (
        f"F:{at(text, 'who', 2)}: error: duplicate prompt id 'who' (first used at line 16);"
        " expected a"
        " unique id for every prompt (it names the audio file; noinput_N, nomatch_N and"
        " close_KIND are taken)"
    )


def test_derived_prompt_id_collides(tmp_path: Path) -> None:
    text = variant(("- id: details", "- id: close_none"))
    assert only(tmp_path, text) == (
        f"F:{at(text, 'none:', 1)}: error: duplicate prompt id 'close_none' (first used at line"
        " 23);"
        " expected a unique id for every prompt (it names the audio file; noinput_N, nomatch_N"
        " and close_KIND are taken)"
    )


@pytest.mark.parametrize(
    ("value", "ms"), [("6s", 6000), ("6.5s", 6500), ("500ms", 500), ("'10 s'", 10000)]
)
def test_durations(tmp_path: Path, value: str, ms: int) -> None:
    flow = load_flow(
        write(tmp_path, variant(("timeout: 6s", f"timeout: {value}"))), check_audio=False
    )
    assert flow.choice.timeout_ms == ms


def test_bad_durations(tmp_path: Path) -> None:
    text = variant(("timeout: 6s", "timeout: 6"))
    assert only(tmp_path, text) == (
        "F:28:12: error: timeout is the number 6; expected a duration with unit, e.g. 6s, 6.5s or"
        " 500ms"
    )
    text = variant(("timeout: 6s", "timeout: 100ms"))
    assert only(tmp_path, text) == (
        f"F:{at(text, '100ms')}: error: timeout 100ms is out of range; expected between 500ms and"
        " 60s"
    )


def test_caps(tmp_path: Path) -> None:
    text = variant(("timeout: 6s", "timeout: 6s\n  max: {noinput: 12, total: 0, replays: 1}"))
    assert diagnostics(tmp_path, text) == [
        f"F:{at(text, '12')}: error: max noinput is 12; expected a whole number between 0 and 9",
        f"F:{at(text, '0,')}: error: max total is 0; expected a whole number between 1 and 9",
    ]
    flow = load_flow(
        write(tmp_path, variant(("timeout: 6s", "timeout: 6s\n  max: {replays: 1}"))),
        check_audio=False,
    )
    assert (flow.choice.caps.replays, flow.choice.caps.total, flow.choice.caps.noinput) == (1, 3, 2)


def test_accept_during_notice_is_a_warning(tmp_path: Path) -> None:
    text = variant(("timeout: 6s", "timeout: 6s\n  accept_during_notice: true"))
    path = write(tmp_path, text)
    flow, warnings = load_flow_with_warnings(path, check_audio=False)
    assert flow.choice.accept_during_notice is True
    assert [str(w) for w in warnings] == [
        f"{path}:{at(text, 'true')}: R5 warning: accept_during_notice is true: an accept pressed"
        " before the notice has played completely will count; expected false unless there"
        " is a documented reason"
    ]
    assert warnings[0].severity == "warning"


def test_warnings_travel_with_errors(tmp_path: Path) -> None:
    text = variant(
        ("timeout: 6s", "timeout: 6s\n  accept_during_notice: yes"), ("version: 2", "version: -1")
    )
    found = diagnostics(tmp_path, text)
    assert len(found) == 2
    assert "version is the number -1" in found[0]
    assert ": R5 warning: accept_during_notice is true" in found[1]


def test_all_errors_at_once(tmp_path: Path) -> None:
    text = variant(
        ("flow: tiny", "flow: Tiny"),
        ("policy_url: muster.example/ds\n", ""),
        ('decline: "2"', 'decline: "1"'),
        ("timeout: 6s", "timeout: soon"),
        ("covers: [dpo,", "covers: [dpp,"),
        ("granted: {de: Danke., en: Thanks.}", "granted: {de: Danke.}"),
        ("basis: consent", "basis: consent\n    colour: blue"),
    )
    found = diagnostics(tmp_path, text)
    assert len(found) == 7, "\n".join(found)
    lines = [int(d.split(":")[1]) for d in found]
    assert lines == sorted(lines)
    for fragment in (
        "flow id 'Tiny'",
        "missing 'policy_url'",
        "key '1' is used for both accept and decline",
        "timeout is the text 'soon'",
        "unknown cover tag 'dpp'; did you mean 'dpo'?",
        "close granted has no 'en' text",
        "unknown key 'colour' in purpose 'ga_linkage'",
    ):
        assert any(fragment in d for d in found), fragment


def test_single_language_flow_accepts_plain_strings(tmp_path: Path) -> None:
    text = (ROOT / "tests" / "broken-flows" / "sounds" / "broken.yaml").read_text()
    flow = load_flow(write(tmp_path, text), check_audio=False)
    assert flow.languages == ("en",)
    assert flow.questions[0].prompt.id == "ask_ga_linkage"


def test_no_traceback_for_unreadable_input(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"flow: \xff\xfe\x00bad")
    with pytest.raises(FlowError) as info:
        load_flow(path, check_audio=False)
    assert len(info.value.diagnostics) == 1
    assert str(info.value).startswith(f"{path}:1:")
    with pytest.raises(FlowError) as info:
        load_flow(tmp_path / "absent.yaml")
    assert str(info.value) == (
        f"{tmp_path}/absent.yaml:1:1: error: no flow file {tmp_path}/absent.yaml; expected a path"
        " to a"
        " flow .yaml file"
    )


def test_unexpected_exception_becomes_a_diagnostic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_ivr.flow.loader as loader

    def boom(*_a: object) -> object:
        raise RuntimeError("kaputt")

    monkeypatch.setattr(loader, "check_document", boom)
    with pytest.raises(FlowError) as info:
        load_flow(write(tmp_path, BASE), check_audio=False)
    assert info.value.diagnostics == [
        Diagnostic(
            str(tmp_path / "tiny.yaml"),
            1,
            1,
            "internal error while loading the flow: RuntimeError: kaputt",
            "expected a loadable flow; please report this",
        )
    ]


# -- audio checks ----------------------------------------------------------------------------


@pytest.fixture
def example_copy(tmp_path: Path) -> tuple[Path, Path]:
    """The example flow with a private copy of its sounds."""
    sounds = tmp_path / "sounds"
    shutil.copytree(SOUNDS, sounds)
    flow = tmp_path / "call-tracking.yaml"
    shutil.copy(EXAMPLE, flow)
    return flow, sounds


def _errors(flow: Path, sounds: Path) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow(flow, sounds_root=sounds)
    return [str(d) for d in info.value.diagnostics]


def test_missing_audio(example_copy: tuple[Path, Path]) -> None:
    flow, sounds = example_copy
    (sounds / "en" / "call-tracking" / "who.wav").unlink()
    text = flow.read_text()
    assert _errors(flow, sounds) == [
        f"{flow}:{at(text, Q + 'This is Muster')}: R13 error: missing audio"
        f" {sounds}/en/call-tracking/who.wav"
        " for the 'en' text of prompt 'who'; expected an 8 kHz mono 16-bit PCM WAV file; run"
        f" `consent-ivr sounds build {flow}`"
    ]


def test_wrong_sample_rate(example_copy: tuple[Path, Path]) -> None:
    import wave

    flow, sounds = example_copy
    target = sounds / "de" / "call-tracking" / "close_none.wav"
    with wave.open(str(target), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 160)
    text = flow.read_text()
    assert _errors(flow, sounds) == [
        f"{flow}:{at(text, Q + 'Wir haben keine Entscheidung')}: R13 error: audio"
        f" {sounds}/de/call-tracking/close_none.wav is 16000 Hz, 1 channel, 16-bit; expected"
        f" 8000 Hz, 1 channel, 16-bit PCM (telephone audio); run `consent-ivr sounds build {flow}`"
    ]


def test_another_format_of_a_prompt_is_refused(example_copy: tuple[Path, Path]) -> None:
    # `who.ulaw` next to `who.wav`: Asterisk would play the cheaper ulaw file, whose content the
    # evidence does not hash (R13) — a common speed-up that must not go unnoticed. The example's
    # own formats (sounds: formats: [wav, alaw, g722]) are hashed; ulaw is not one of them.
    flow, sounds = example_copy
    (sounds / "en" / "call-tracking" / "who.ulaw").write_bytes(b"\xff" * 800)
    for harmless in ("who.wav~", "who.wav.bak", ".who.swp"):  # no name Asterisk would open
        (sounds / "en" / "call-tracking" / harmless).write_bytes(b"x")
    text = flow.read_text()
    folder = sounds / "en" / "call-tracking"
    assert _errors(flow, sounds) == [
        f"{flow}:{at(text, Q + 'This is Muster')}: R13 error: audio {folder}/who.ulaw could be"
        " played"
        f" instead of {folder}/who.wav, who.alaw, who.g722 (Asterisk picks among the files of a"
        " prompt's name), and its content is not checked; expected only the files of the flow's"
        f" sounds formats (wav, alaw, g722) of the prompts; remove {folder}/who.ulaw"
    ]


@pytest.mark.parametrize("ext", ["m4a", "aac16", "gsm", "sln16", "txt"])
def test_any_extension_next_to_a_prompt_wav_is_refused(
    example_copy: tuple[Path, Path], ext: str
) -> None:
    # format modules (add-ons too) register any extension: only the WAV is known to be safe
    flow, sounds = example_copy
    (sounds / "de" / "call-tracking" / f"rights.{ext}").write_bytes(b"\0" * 64)
    (error,) = _errors(flow, sounds)
    assert f"rights.{ext} could be played instead of" in error


def test_a_sub_folder_in_an_audio_folder_is_refused(example_copy: tuple[Path, Path]) -> None:
    # For an absolute name Asterisk tries <folder>/<channel language>/<prompt>.* first.
    flow, sounds = example_copy
    folder = sounds / "de" / "call-tracking"
    (folder / "de").mkdir()
    (folder / "de" / "who.gsm").write_bytes(b"\0" * 330)
    errors = _errors(flow, sounds)
    assert errors and all(f"{folder}/de inside the audio folder is not a file" in e for e in errors)
    assert f"remove {folder}/de" in errors[0]


def test_a_dangling_link_in_an_audio_folder_is_refused(example_copy: tuple[Path, Path]) -> None:
    # `en -> /srv/later`: once its target exists Asterisk would look in it first, and the
    # folder's own mtime would not change
    flow, sounds = example_copy
    folder = sounds / "en" / "call-tracking"
    (folder / "en").symlink_to(sounds / "not-yet")
    errors = _errors(flow, sounds)
    assert errors and f"{folder}/en inside the audio folder is not a file" in errors[0]


def test_an_unlistable_audio_folder_is_a_validation_error_not_a_crash(
    example_copy: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    flow, sounds = example_copy
    real = os.scandir

    def scandir(path: object) -> object:  # mode 0711: enterable, not listable (not as root)
        if str(path).endswith("/en/call-tracking"):
            raise PermissionError(13, "Permission denied")
        return real(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", scandir)
    errors = _errors(flow, sounds)
    assert len(errors) == 1 and "cannot list the audio folder" in errors[0], errors
    assert f"{sounds}/en/call-tracking (Permission denied)" in errors[0]


def test_stale_audio(example_copy: tuple[Path, Path]) -> None:
    flow, sounds = example_copy
    text = flow.read_text().replace("This is Muster Telefon GmbH.", "This is Muster Telefon Ltd.")
    flow.write_text(text)
    assert _errors(flow, sounds) == [
        f"{flow}:{at(text, Q + 'This is Muster')}: R13 error: audio"
        f" {sounds}/en/call-tracking/who.wav no"
        f" longer matches its text; run `consent-ivr sounds build {flow}`"
    ]


def test_missing_manifest(example_copy: tuple[Path, Path]) -> None:
    flow, sounds = example_copy
    (sounds / "call-tracking.manifest.json").unlink()
    assert _errors(flow, sounds) == [
        f"{flow}:14:7: R13 error: no audio manifest {sounds}/call-tracking.manifest.json, so the"
        " audio cannot"
        " be matched to the texts; expected the manifest written by sounds build; run"
        f" `consent-ivr sounds build {flow}`"
    ]
