"""Building prompt audio with espeak-ng + sox, and the manifest that ties audio to its text."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from consent_ivr.cli.main import main
from consent_ivr.cli.sounds import SoundsError, build_sounds, run_sounds_build
from consent_ivr.cli.speech import voice_for
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_flow, text_sha256
from consent_ivr.wav import WavError, is_telephony_format, read_wav_info

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    (ROOT / "tests" / "broken-flows" / "sounds" / "broken.yaml")
    .read_text(encoding="utf-8")
    .replace("flow: broken", "flow: tiny")
)
PROMPTS = [
    "who", "rights", "details", "ask_ga_linkage", "noinput_1", "nomatch_1",
    "close_granted", "close_declined", "close_none",
]  # fmt: skip


@pytest.fixture
def audio_tools() -> None:
    """`make test` installs espeak-ng and sox; without them these tests fail, never skip."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} needed to build audio (make test installs them)")


needs_tools = pytest.mark.usefixtures("audio_tools")


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    flow = tmp_path / "tiny.yaml"
    flow.write_text(TINY, encoding="utf-8")
    return flow, tmp_path / "sounds"


@needs_tools
def test_build_then_load(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    written = build_sounds(flow_path, sounds)
    assert written == [sounds / "en" / "tiny" / f"{p}.wav" for p in PROMPTS]
    for wav in written:
        info = read_wav_info(wav)
        assert is_telephony_format(info)
        assert (info.rate, info.channels, info.sample_width) == (8000, 1, 2)
        assert info.frames > 800  # more than 0.1 s of speech
    manifest_file = sounds / "tiny.manifest.json"
    raw = manifest_file.read_text(encoding="utf-8")
    manifest = json.loads(raw)
    assert sorted(manifest) == sorted(f"en/{p}" for p in PROMPTS)
    assert raw == json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    entry = manifest["en/who"]
    assert set(entry) == {"text_sha256", "audio_sha256", "generator"}
    assert entry["generator"].startswith("espeak-ng ")
    assert entry["generator"].endswith(" voice en-gb speed 170")
    flow = load_flow(flow_path, sounds_root=sounds)
    assert entry["text_sha256"] == text_sha256(flow.notice[0].text["en"])
    assert entry["audio_sha256"] == flow.notice[0].audio_sha256["en"]
    # Nothing changed: nothing rebuilt, and the manifest is byte-identical.
    assert build_sounds(flow_path, sounds) == []
    assert manifest_file.read_text(encoding="utf-8") == raw


@needs_tools
def test_build_is_repeatable(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    build_sounds(flow_path, sounds)
    first = (sounds / "en" / "tiny" / "who.wav").read_bytes()
    build_sounds(flow_path, sounds, only_changed=False)
    assert (sounds / "en" / "tiny" / "who.wav").read_bytes() == first


@needs_tools
def test_changed_text_makes_audio_stale_until_rebuilt_and_never_rewritten_in_place(
    tiny: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_path, sounds = tiny

    def cross_device(src: object, dst: object) -> None:  # the temp folder on another file system
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    build_sounds(flow_path, sounds)
    text = TINY.replace("for 90 days.", "for 60 days.")
    flow_path.write_text(text, encoding="utf-8")
    line = text[: text.index("for 60 days.")].count("\n") + 1
    with pytest.raises(FlowError) as info:
        load_flow(flow_path, sounds_root=sounds)
    assert [str(d) for d in info.value.diagnostics] == [
        f"{flow_path}:{line}:10: R13 error: audio {sounds}/en/tiny/details.wav no longer matches"
        " its text;"
        f" run `consent-ivr sounds build {flow_path}`"
    ]
    details = sounds / "en" / "tiny" / "details.wav"
    live = os.open(details, os.O_RDONLY)  # a call playing the old audio meanwhile
    try:
        old_bytes = details.read_bytes()
        assert build_sounds(flow_path, sounds) == [details]
        # replaced by a rename, never rewritten in place: the open file still reads old audio
        assert os.pread(live, len(old_bytes) + 1, 0) == old_bytes != details.read_bytes()
    finally:
        os.close(live)
    assert sorted(p.name for p in details.parent.iterdir() if p.name.startswith(".")) == []
    load_flow(flow_path, sounds_root=sounds)


@needs_tools
def test_a_replaced_file_is_rebuilt(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    build_sounds(flow_path, sounds)
    wav = sounds / "en" / "tiny" / "who.wav"
    wav.write_bytes(b"junk")
    with pytest.raises(FlowError, match=r"who\.wav is not usable: not a PCM WAV file"):
        load_flow(flow_path, sounds_root=sounds)
    assert build_sounds(flow_path, sounds) == [wav]
    assert is_telephony_format(read_wav_info(wav))


@needs_tools
def test_run_sounds_build_reports(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    out, err = io.StringIO(), io.StringIO()
    assert run_sounds_build(str(flow_path), sounds, out, err) == 0
    assert err.getvalue() == ""
    assert out.getvalue().splitlines()[-1] == f"ok: 9 audio file(s) built for {flow_path}"


def test_missing_espeak_is_a_clear_error(
    tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow_path, sounds = tiny
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SoundsError) as info:
        build_sounds(flow_path, sounds)
    assert str(info.value) == (
        "espeak-ng not found on PATH; install it (Debian/Ubuntu: apt-get install espeak-ng)"
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_sounds_build(str(flow_path), sounds, out, err) == 1
    assert err.getvalue() == (
        "error: espeak-ng not found on PATH; install it (Debian/Ubuntu: apt-get install"
        " espeak-ng)\n"
    )
    assert not sounds.exists()


def test_invalid_flow_is_not_built(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    flow_path.write_text(TINY.replace("version: 1", "version: x"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert run_sounds_build(str(flow_path), sounds, out, err) == 2
    assert err.getvalue() == (
        f"{flow_path}:6:10: error: version is the text 'x'; expected a whole number >= 1\n"
    )
    assert not sounds.exists()


def test_voices() -> None:
    assert voice_for("de") == "de"
    assert voice_for("en") == "en-gb"
    assert voice_for("pt_br") == "pt-br"


def test_read_wav_info_errors(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="no such file"):
        read_wav_info(tmp_path / "absent.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF")
    with pytest.raises(WavError, match="not a PCM WAV file"):
        read_wav_info(bad)


@needs_tools
def test_a_rebuild_with_the_same_bytes_keeps_the_live_files(tiny: tuple[Path, Path]) -> None:
    flow_path, sounds = tiny
    build_sounds(flow_path, sounds)
    files = sorted((sounds / "en" / "tiny").glob("*.wav"))
    before = {f: os.stat(f).st_ino for f in files}
    assert build_sounds(flow_path, sounds, only_changed=False) == []  # made again, none written
    assert {f: os.stat(f).st_ino for f in files} == before  # no call loses the file it plays
    load_flow(flow_path, sounds_root=sounds)


@needs_tools
def test_a_build_that_fails_half_way_changes_no_live_file_and_no_manifest(
    tiny: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_ivr.cli.sounds as sounds_module

    flow_path, sounds = tiny
    build_sounds(flow_path, sounds)
    folder = sounds / "en" / "tiny"
    manifest = (sounds / "tiny.manifest.json").read_bytes()
    live = {f: f.read_bytes() for f in folder.glob("*.wav")}
    text = TINY.replace("for 90 days.", "for 60 days.")
    text = text.replace("Disagree: press 2.", "Decline: press 2.")
    flow_path.write_text(text, encoding="utf-8")
    real = sounds_module.synthesize
    calls: list[Path] = []

    def second_fails(text: str, lang: str, out: Path, **tools: str) -> None:
        calls.append(out)
        if len(calls) == 2:
            raise SoundsError("espeak-ng failed")
        real(text, lang, out, **tools)

    monkeypatch.setattr(sounds_module, "synthesize", second_fails)
    with pytest.raises(SoundsError):
        build_sounds(flow_path, sounds)
    assert len(calls) == 2
    assert all(out.parent == sounds / ".building" for out in calls)  # never in a prompt folder
    assert {f: f.read_bytes() for f in folder.glob("*.wav")} == live
    assert (sounds / "tiny.manifest.json").read_bytes() == manifest
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def sounds_build(*args: str) -> tuple[int, str, str]:
    """`consent-ivr sounds build ARGS` through the command line's parser: status, out, err."""
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(["sounds", "build", *args], out, err)
    except SystemExit as exc:  # argparse refuses the arguments (its message is on stderr)
        status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


@needs_tools
def test_build_prints_the_voice_of_each_language_and_how_to_choose_another(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    status, out, err = sounds_build(str(flow_path), "--sounds", str(sounds))
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == [
        "voice en: espeak-ng en-gb",
        "  another voice: --voice LANG=VOICE, a voice espeak-ng --voices=LANG lists"
        " (e.g. --voice en=en-us)",
    ]


@needs_tools
def test_build_with_a_chosen_voice_speaks_in_it_and_the_default_rebuilds(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    wav = sounds / "en" / "tiny" / "who.wav"
    manifest_file = sounds / "tiny.manifest.json"
    assert sounds_build(str(flow_path), "--sounds", str(sounds))[0] == 0
    british = wav.read_bytes()

    status, out, err = sounds_build(str(flow_path), "--sounds", str(sounds), "--voice", "en=en-us")
    assert (status, err) == (0, ""), err
    assert out.splitlines()[0] == "voice en: espeak-ng en-us (--voice)"
    assert out.splitlines()[-1] == f"ok: 9 audio file(s) built for {flow_path}"  # a new voice
    assert wav.read_bytes() != british
    generator = json.loads(manifest_file.read_text(encoding="utf-8"))["en/who"]["generator"]
    assert generator.endswith(" voice en-us speed 170")
    load_flow(flow_path, sounds_root=sounds)  # the manifest matches the new audio (R13)

    # the same voice again: nothing to do; the default again: all rebuilt, as before
    assert sounds_build(str(flow_path), "--sounds", str(sounds), "--voice", "en=en-us")[1].endswith(
        "ok: 0 audio file(s) built for " + str(flow_path) + "\n"
    )
    assert sounds_build(str(flow_path), "--sounds", str(sounds))[0] == 0
    assert wav.read_bytes() == british


@pytest.mark.parametrize("choice", ["en", "=en-us", "en=", "en=en us"])
def test_a_voice_that_is_not_lang_equals_voice_is_refused(
    tiny: tuple[Path, Path], choice: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flow_path, sounds = tiny
    status, out, _err = sounds_build(str(flow_path), "--sounds", str(sounds), "--voice", choice)
    err = capsys.readouterr().err  # argparse's own message
    assert status == 2 and out == ""
    assert f"argument --voice: {choice!r}: expected LANG=VOICE" in err
    assert "Traceback" not in err and not sounds.exists()


def test_a_voice_for_a_language_the_flow_does_not_speak_is_refused(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    status, out, err = sounds_build(str(flow_path), "--sounds", str(sounds), "--voice", "fr=fr")
    assert (status, out) == (2, "")
    assert err == f"error: --voice fr=...: {flow_path} does not speak 'fr'; expected one of en\n"
    assert not sounds.exists()


@needs_tools
@pytest.mark.parametrize("voice", ["no-such-voice", "xx-nope"])
def test_a_voice_espeak_does_not_have_is_refused_before_any_audio(
    tiny: tuple[Path, Path], voice: str
) -> None:
    # espeak-ng itself speaks `no-such-voice` in Norwegian (the prefix `no`) and fails on `xx-nope`
    flow_path, sounds = tiny
    status, _out, err = sounds_build(
        str(flow_path), "--sounds", str(sounds), "--voice", f"en={voice}"
    )
    assert status == 2
    assert err == (
        f"error: espeak-ng has no voice {voice!r} (for en); `espeak-ng --voices=en` lists the"
        " voices for that language\n"
    )
    assert not (sounds / "en" / "tiny" / "who.wav").exists()
    assert not (sounds / "tiny.manifest.json").exists()


@needs_tools
@pytest.mark.parametrize("voice", ["en-us", "gmw/en-US", "en-US", "en-us+f3"])
def test_a_voice_by_language_file_or_with_a_variant_is_taken(
    tiny: tuple[Path, Path], voice: str
) -> None:
    flow_path, sounds = tiny
    status, out, err = sounds_build(
        str(flow_path), "--sounds", str(sounds), "--voice", f"en={voice}"
    )
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == f"voice en: espeak-ng {voice} (--voice)"
    load_flow(flow_path, sounds_root=sounds)


@needs_tools
def test_a_build_reports_only_the_files_it_wrote_not_the_ones_it_left_alone(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    build_sounds(flow_path, sounds)
    folder = sounds / "en" / "tiny"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.wav")}
    # a new format: the prompts are made again, their WAVs come out byte for byte the same
    flow_path.write_text(TINY + "sounds:\n  formats: [wav, alaw]\n", encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert run_sounds_build(str(flow_path), sounds, out, err) == 0, err.getvalue()
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.wav")} == before
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("built ")] == [
        f"built {folder / p}.alaw" for p in PROMPTS
    ]
    assert lines[-1] == f"ok: 9 audio file(s) built for {flow_path}"
