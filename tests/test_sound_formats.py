"""Prompts in the PBX's codecs (``sounds: formats:``) with R13 intact: every format file is built,
hashed in the manifest, checked by the loader and pinned by the record; anything else is refused."""

from __future__ import annotations

import array
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import G722
import pytest

from consent_ivr.cli.lint import run_lint
from consent_ivr.cli.simulate import simulate_call
from consent_ivr.cli.sounds import approve_recordings, build_sounds
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import load_flow
from consent_ivr.paths import PROJECT_ROOT, flows_dir
from consent_ivr.wav import read_wav_info
from flowkit import copy_example_flows

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    (ROOT / "tests" / "broken-flows" / "sounds" / "broken.yaml")
    .read_text(encoding="utf-8")
    .replace("flow: broken", "flow: tiny")
)
ALL = "sounds:\n  formats: [wav, ulaw, alaw, g722]\n"
RAW16 = ["-t", "raw", "-e", "signed", "-b", "16", "-L"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pcm(path: Path, sox_type: str) -> array.array[int]:
    """A G.711 file decoded by sox (an independent decoder) to 16-bit samples."""
    out = subprocess.run(
        ["sox", "-t", sox_type, "-r", "8000", "-c", "1", str(path), *RAW16, "-"],
        capture_output=True,
        check=True,
    ).stdout
    return array.array("h", out)


def _wav_pcm(path: Path) -> array.array[int]:
    return array.array("h", path.read_bytes()[44:])  # sox writes the plain 44-byte header


def _snr_db(reference: array.array[int], other: array.array[int]) -> float:
    signal = sum(v * v for v in reference)
    noise = sum((a - b) ** 2 for a, b in zip(reference, other, strict=True))
    return 10 * math.log10(signal / max(noise, 1))


def _high_band_db(g722: Path) -> float:
    """The level (dB FS) of the decoded G.722 audio above 4.5 kHz, measured by sox."""
    pcm = bytes(G722.G722(16000, 64000).decode(g722.read_bytes()))
    stats = subprocess.run(
        ["sox", *RAW16, "-c", "1", "-r", "16000", "-", "-n", "sinc", "4500", "stats"],
        input=pcm,
        capture_output=True,
        check=True,
    ).stderr.decode()
    line = next(x for x in stats.splitlines() if x.startswith("RMS lev dB"))
    return float(line.split()[-1])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny flow in every format, built once (each test copies it)."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} needed to build audio (make test installs them)")
    folder = tmp_path_factory.mktemp("formats")
    (folder / "tiny.yaml").write_text(TINY + ALL, encoding="utf-8")
    build_sounds(folder / "tiny.yaml", folder / "sounds")
    return folder


@pytest.fixture
def tiny(built: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(built, tmp_path / "t")
    return tmp_path / "t" / "tiny.yaml", tmp_path / "t" / "sounds"


# -- sounds build ------------------------------------------------------------------------------


def test_build_writes_every_format_as_long_as_the_wav_and_the_manifest_hashes_each(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    manifest = json.loads((sounds / "tiny.manifest.json").read_text(encoding="utf-8"))
    folder = sounds / "en" / "tiny"
    flow = load_flow(flow_path, sounds_root=sounds)
    assert flow.sound_formats == ("wav", "ulaw", "alaw", "g722")
    for prompt in flow.all_prompts():
        wav = folder / f"{prompt.id}.wav"
        frames = read_wav_info(wav).frames
        entry = manifest[f"en/{prompt.id}"]
        assert entry["audio_sha256"] == _sha(wav)
        assert entry["formats"] == {
            f: _sha(wav.with_suffix(f".{f}")) for f in ("ulaw", "alaw", "g722")
        }
        assert prompt.format_sha256["en"] == entry["formats"]
        for fmt in ("ulaw", "alaw", "g722"):  # one byte per 8 kHz sample: endpos means the same
            assert wav.with_suffix(f".{fmt}").stat().st_size == frames, (prompt.id, fmt)
    # the G.711 files are the WAV's audio: sox decodes them back to within companding noise
    who = folder / "who.wav"
    assert _snr_db(_wav_pcm(who), _pcm(who.with_suffix(".ulaw"), "ul")) > 30
    assert _snr_db(_wav_pcm(who), _pcm(who.with_suffix(".alaw"), "al")) > 30
    # G.722 decodes to 16 kHz audio of the WAV's length and loudness
    decoded = G722.G722(16000, 64000).decode(who.with_suffix(".g722").read_bytes())
    assert len(decoded) == 2 * read_wav_info(who).frames
    rms = [math.sqrt(sum(v * v for v in x) / len(x)) for x in (_wav_pcm(who), decoded)]
    assert 0.75 < rms[1] / rms[0] < 1.33, rms
    # nothing changed: nothing rebuilt
    assert build_sounds(flow_path, sounds) == []


def test_g722_of_speech_carries_the_wide_band_and_of_a_recording_only_what_it_has(
    tiny: tuple[Path, Path],
) -> None:
    # synthesised: made from espeak-ng's 22 kHz output, so it has sound above 4 kHz (HD voice);
    # a recording is an 8 kHz WAV, so its G.722 is that band upsampled ("where the source allows")
    flow_path, sounds = tiny
    g722 = sounds / "en" / "tiny" / "rights.g722"
    assert _high_band_db(g722) > -60
    approve_recordings(flow_path, ["rights"], "en", sounds)
    assert _high_band_db(g722) < _high_band_db(sounds / "en" / "tiny" / "who.g722") - 20


def test_approve_makes_a_recordings_formats_from_it_and_the_manifest_pins_them(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    wav = sounds / "en" / "tiny" / "who.wav"
    before = {f: _sha(wav.with_suffix(f".{f}")) for f in ("ulaw", "alaw", "g722")}
    shutil.copyfile(sounds / "en" / "tiny" / "rights.wav", wav)  # "the studio's recording"
    with pytest.raises(FlowError):  # not approved yet: no format of it is trusted
        load_flow(flow_path, sounds_root=sounds)
    approve_recordings(flow_path, ["who"], "en", sounds)
    entry = json.loads((sounds / "tiny.manifest.json").read_text(encoding="utf-8"))["en/who"]
    assert entry["generator"].startswith("recorded, approved ")
    after = {f: _sha(wav.with_suffix(f".{f}")) for f in ("ulaw", "alaw", "g722")}
    assert entry["formats"] == after and all(after[f] != before[f] for f in after)
    assert _snr_db(_wav_pcm(wav), _pcm(wav.with_suffix(".alaw"), "al")) > 30
    who = next(p for p in load_flow(flow_path, sounds_root=sounds).all_prompts() if p.id == "who")
    assert who.format_sha256["en"] == after
    # a build keeps the recording and its formats
    assert build_sounds(flow_path, sounds) == [] and _sha(wav.with_suffix(".g722")) == after["g722"]


def test_a_format_the_flow_no_longer_lists_loses_its_files_and_hashes_at_the_next_build(
    tiny: tuple[Path, Path],
) -> None:
    flow_path, sounds = tiny
    flow_path.write_text(TINY + "sounds:\n  formats: [wav, alaw]\n", encoding="utf-8")
    with pytest.raises(
        FlowError, match=r"who\.g722 could be played instead of .*who\.wav, who\.alaw"
    ):
        load_flow(flow_path, sounds_root=sounds)
    build_sounds(flow_path, sounds)
    folder = sounds / "en" / "tiny"
    assert sorted(p.suffix for p in folder.glob("who.*")) == [".alaw", ".wav"]
    entry = json.loads((sounds / "tiny.manifest.json").read_text(encoding="utf-8"))["en/who"]
    assert set(entry["formats"]) == {"alaw"}
    load_flow(flow_path, sounds_root=sounds)
    flow_path.write_text(TINY, encoding="utf-8")  # back to the WAV alone
    build_sounds(flow_path, sounds)
    assert [p.suffix for p in folder.glob("who.*")] == [".wav"]
    entry = json.loads((sounds / "tiny.manifest.json").read_text(encoding="utf-8"))["en/who"]
    assert set(entry) == {"text_sha256", "audio_sha256", "generator"}


# -- the flow file -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("formats", "message"),
    [
        (
            "[wav, sln]",
            "format 'sln' is the WAV's own codec (8 kHz signed linear); expected it left out: it"
            " saves no transcoding, and with two files of one codec which one Asterisk opens"
            " depends on the order its format modules loaded in",
        ),
        ("[wav, alw]", "unknown audio format 'alw'; did you mean 'alaw'?"),
        ("[wav, gsm]", "unknown audio format 'gsm'; expected one of: alaw, g722, ulaw, wav"),
        ("[wav, alaw, alaw]", "format 'alaw' is listed twice; expected each format once"),
        (
            "[alaw]",
            "sounds formats has no wav; expected wav in the list: every other format is made"
            " from the prompt's WAV, whose length is the prompt's length, e.g. formats: [wav,"
            " alaw]",
        ),
    ],
)
def test_sounds_formats_are_checked(tmp_path: Path, formats: str, message: str) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY + f"sounds:\n  formats: {formats}\n", encoding="utf-8")
    with pytest.raises(FlowError) as info:
        load_flow(path, check_audio=False)
    assert [d.message + "; " + d.expected for d in info.value.diagnostics] == [message]


def test_without_sounds_formats_a_flow_has_only_the_wav(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    assert load_flow(path, check_audio=False).sound_formats == ("wav",)
    assert load_flow(flows_dir() / "withdrawal.yaml").sound_formats == ("wav",)


# -- the loader (R13) on the shipped example (wav, alaw, g722) ---------------------------------


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    shutil.copytree(PROJECT_ROOT / "sounds", tmp_path / "sounds")
    copy_example_flows(tmp_path)
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    return tmp_path / "call-tracking.yaml", tmp_path / "sounds"


def _errors(flow: Path, sounds: Path) -> list[str]:
    with pytest.raises(FlowError) as info:
        load_flow(flow, sounds_root=sounds)
    return [str(d) for d in info.value.diagnostics]


def test_a_changed_alaw_file_with_its_manifest_unchanged_is_an_r13_lint_error(
    example: tuple[Path, Path],
) -> None:
    flow, sounds = example
    alaw = sounds / "de" / "call-tracking" / "who.alaw"
    data = bytearray(alaw.read_bytes())
    data[100] ^= 0x55  # other audio, same length: only the hash tells
    alaw.write_bytes(bytes(data))
    out, err = io.StringIO(), io.StringIO()
    assert run_lint([str(flow)], out, err, run_proof=False) == 1
    (finding,) = [line for line in out.getvalue().splitlines() if "R13 error" in line]
    assert "R13 error: audio" in finding and f"{alaw} is not the audio made or approved" in finding
    assert f"differ from the manifest's formats.alaw in {sounds}/call-tracking.manifest.json" in (
        finding
    )


def test_a_format_file_the_manifest_does_not_hash_is_refused(example: tuple[Path, Path]) -> None:
    flow, sounds = example
    mpath = sounds / "call-tracking.manifest.json"
    manifest = json.loads(mpath.read_text(encoding="utf-8"))
    del manifest["en/who"]["formats"]["g722"]  # a g722 file put in place by hand
    mpath.write_text(json.dumps(manifest), encoding="utf-8")
    (error,) = _errors(flow, sounds)
    assert f"{sounds}/en/call-tracking/who.g722 is not the audio made or approved" in error


def test_a_missing_format_file_is_refused(example: tuple[Path, Path]) -> None:
    flow, sounds = example
    (sounds / "en" / "call-tracking" / "google.g722").unlink()
    (error,) = _errors(flow, sounds)
    assert f"R13 error: missing audio {sounds}/en/call-tracking/google.g722: the flow's sounds" in (
        error
    )
    assert "formats list g722; expected the g722 file made with the WAV; run" in error


def test_a_format_file_of_another_length_than_the_wav_is_refused(
    example: tuple[Path, Path],
) -> None:
    flow, sounds = example
    alaw = sounds / "de" / "call-tracking" / "rights.alaw"
    frames = read_wav_info(alaw.with_suffix(".wav")).frames
    alaw.write_bytes(alaw.read_bytes() + b"\xd5" * 80)
    (error,) = _errors(flow, sounds)
    assert f"audio {alaw} is {frames + 80} bytes long, its WAV {frames} samples" in error


def test_a_served_language_without_its_files_is_a_validation_error_not_a_fallback(
    example: tuple[Path, Path],
) -> None:
    # Asterisk would fall back to another language's file (or none) mid-call; the loader refuses
    # the flow instead, naming every prompt of the language whose audio is missing
    flow, sounds = example
    shutil.rmtree(sounds / "en" / "call-tracking")
    errors = _errors(flow, sounds)
    prompts = load_flow(flow, sounds_root=sounds, check_audio=False).all_prompts()
    expected = {
        f"missing audio {sounds}/en/call-tracking/{p.id}.wav for the 'en' text of prompt '{p.id}'"
        for p in prompts
    }
    assert (
        len(errors) == len(expected)
        and {e.split("R13 error: ")[1].split(";")[0] for e in errors} == expected
    )


# -- the evidence record -----------------------------------------------------------------------


def test_every_play_pins_the_hash_of_every_format_asterisk_could_have_played(
    example: tuple[Path, Path],
) -> None:
    flow_path, sounds = example
    flow = load_flow(flow_path, sounds_root=sounds)
    prompts = {p.id: p for p in flow.all_prompts()}
    call = simulate_call(flow, "1", language="en")
    plays = call.evidence["plays"]
    assert call.evidence["status"] == "granted" and plays
    assert call.evidence["flow"]["language"] == "en"  # the language played
    for play in plays:
        prompt = prompts[play["prompt_id"]]
        folder = sounds / "en" / "call-tracking"
        assert play["audio_formats"] == {
            "wav": play["audio_sha256"],
            "alaw": _sha(folder / f"{prompt.id}.alaw"),
            "g722": _sha(folder / f"{prompt.id}.g722"),
        }
        assert play["audio_sha256"] == _sha(folder / f"{prompt.id}.wav")


def test_a_wav_only_flows_plays_are_recorded_as_before() -> None:
    flow = load_flow(flows_dir() / "withdrawal.yaml")
    call = simulate_call(flow, "1", language="de")
    assert call.evidence["plays"]
    assert all("audio_formats" not in play for play in call.evidence["plays"])
    assert all(not os.path.exists(p.audio["de"][:-4] + ".alaw") for p in flow.all_prompts())
