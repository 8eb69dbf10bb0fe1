"""The driver in-process over the loopback wire: one log event per step, no caller number."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.engine import EarlierDecision, NoEarlierDecision
from consent_ivr.evidence.pseudonym import PseudonymKey
from consent_ivr.evidence.store import SqliteEvidenceStore
from consent_ivr.flow.loader import load_flow
from consent_ivr.harness.asterisk import SimulatedAsterisk, WavSoundCatalog
from consent_ivr.harness.loopback import Loopback
from consent_ivr.paths import PROJECT_ROOT, flows_dir
from consent_ivr.protocol.codec import Response, ResponseReader
from consent_ivr.protocol.session import Command
from consent_ivr.transports.consent_agi import ConsentAGI
from consent_ivr.transports.runner import CallResult, run_call
from flowkit import copy_example_flows

NUMBER = "+4930987654321"
KEY = PseudonymKey.from_bytes(b"0123456789abcdef-test-key")


def loopback_call(store: SqliteEvidenceStore, uniqueid: str, **options: Any) -> CallResult:
    """The example flow in German over the loopback wire, the caller pressing 1."""
    sim = SimulatedAsterisk(
        dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER, "agi_uniqueid": uniqueid}
    )
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)
    return run_call(
        flow=load_flow(flows_dir() / "call-tracking.yaml"),
        language="de",
        env=dict(agi.env),
        key=KEY,
        store=store,
        exchange=agi.exchange,
        hangup_seen=lambda: agi.hangup_seen,
        **options,
    )


def test_a_call_logs_each_step_keyed_by_uniqueid_and_never_the_number(
    tmp_path, no_caller_number_in_logs
):
    store = SqliteEvidenceStore(tmp_path / "ev.db")
    result = loopback_call(store, "42.7")
    assert result.status == "granted"
    events = no_caller_number_in_logs
    names = [e["event"] for e in events]
    assert names[0] == "call.start" and names[-1] == "call.finish"
    assert "evidence.written" in names
    assert all(e.get("call") == "42.7" for e in events)
    record = store.get(result.record_id)
    assert record is not None
    assert record["call"]["caller_pseudonym"] == KEY.pseudonym(NUMBER)
    assert NUMBER not in repr(record) and NUMBER[1:] not in repr(record)


@pytest.mark.parametrize("why", ["none", "anonymous", "store_error"])
def test_the_finish_line_says_what_the_returning_look_up_found(
    tmp_path, no_caller_number_in_logs, why: str
):
    assert load_flow(flows_dir() / "call-tracking.yaml").returning is not None  # it remembers
    result = loopback_call(
        SqliteEvidenceStore(tmp_path / "ev.db"),
        "42.8",
        recall=lambda wait_ms: NoEarlierDecision(why=why),
    )
    assert result.status == "granted"
    events = no_caller_number_in_logs
    (finish,) = [e for e in events if e["event"] == "call.finish"]
    assert finish["returning"] == why
    # one line per call at info: the look-up's own line is for debugging
    assert [e["log_level"] for e in events if e["event"] == "returning.recalled"] == ["debug"]


def test_the_finish_line_says_what_the_engine_made_of_an_earlier_decision(
    tmp_path, no_caller_number_in_logs
):
    # the store found a grant, but of another notice: the engine honours nothing, and the log
    # line says so (it once said "honoured" from the store's answer alone)
    other_notice = EarlierDecision(
        outcome="granted",
        record_id="rec-0",
        notice_sha256="b" * 64,
        decided_at="2026-12-01T10:00:00.000Z",
    )
    result = loopback_call(
        SqliteEvidenceStore(tmp_path / "ev.db"), "42.9", recall=lambda wait_ms: other_notice
    )
    assert result.status == "granted"  # by the key, after the full flow
    (finish,) = [e for e in no_caller_number_in_logs if e["event"] == "call.finish"]
    assert finish["returning"] == "notice_changed"


def test_pseudonyms_are_keyed_and_normalised():
    a = PseudonymKey.from_bytes(b"key-one-0123456789")
    b = PseudonymKey.from_bytes(b"key-two-0123456789")
    assert a.pseudonym("+49 89 1234") == a.pseudonym("+49891234")
    assert a.pseudonym("+49891234") != b.pseudonym("+49891234")
    assert a.pseudonym("unknown") is None and a.pseudonym("") is None
    assert a.key_id != b.key_id


def _run_wrapped(
    flow_path: Path, store_path: Path, wrap: Callable[[Command, Response | None], Response | None]
) -> tuple[CallResult, dict | None, SimulatedAsterisk]:
    """A call with key 1 over the loopback wire; `wrap(command, None)` runs before each command
    is sent and `wrap(command, response)` may replace the response."""
    flow = load_flow(flow_path)
    sim = SimulatedAsterisk(dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER})
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)

    def exchange(command: Command) -> Response | None:
        wrap(command, None)
        return wrap(command, agi.exchange(command))

    store = SqliteEvidenceStore(store_path)
    try:
        result = run_call(
            flow=flow,
            language="de",
            env=dict(agi.env),
            key=PseudonymKey.from_bytes(b"0123456789abcdef-test-key"),
            store=store,
            exchange=exchange,
            hangup_seen=lambda: agi.hangup_seen,
        )
        return result, store.get(result.record_id) if result.record_id else None, sim
    finally:
        store.close()


def _first_play(command: Command, seen: list[Command]) -> bool:
    """True once: for the call's first STREAM FILE."""
    if command.words != ("STREAM", "FILE") or seen:
        return False
    seen.append(command)
    return True


@pytest.mark.parametrize("bad", ["200 result=", "200 result=-"])
def test_a_malformed_response_ends_the_call_as_error_with_a_record(tmp_path, bad):
    # "200 result=" has no integer result: the call must end as error, evidence written and
    # the variables set, never as an uncaught exception that leaves no record.
    seen: list[Command] = []

    def malformed(command: Command, resp: Response | None) -> Response | None:
        if resp is not None and _first_play(command, seen):
            return ResponseReader().feed(bad)  # raises, as the transport's reader would
        return resp

    result, record, sim = _run_wrapped(
        flows_dir() / "call-tracking.yaml", tmp_path / "ev.db", malformed
    )
    assert seen and result.status == "error"
    assert record is not None and record["status"] == "error"
    assert any("malformed result" in e for e in record["errors"]), record["errors"]
    assert sim.variables["CONSENT_STATUS"] == "error"


def _call_replacing_audio(flow_path, replace) -> tuple[CallResult, dict | None, SimulatedAsterisk]:
    """A granted-by-key call whose first prompt's file `replace(wav)` changes as it starts."""
    seen: list[Command] = []

    def rebuild(command: Command, resp: Response | None) -> Response | None:
        if resp is None and _first_play(command, seen):
            replace(Path(command.args[0] + ".wav"))  # a sound rebuild while the prompt plays
        return resp

    return _run_wrapped(flow_path, flow_path.parent / "ev.db", rebuild)


def _replace_with_other_audio(wav: Path) -> None:
    data = bytearray(wav.read_bytes())
    data[-2:] = b"\x01\x02"
    new = wav.with_suffix(".new")
    new.write_bytes(bytes(data))
    os.replace(new, wav)


@pytest.fixture
def flow_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(PROJECT_ROOT / "sounds", tmp_path / "sounds")
    copy_example_flows(tmp_path)
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    return tmp_path / "call-tracking.yaml"


def test_audio_replaced_while_a_call_plays_it_ends_the_call_as_error(flow_copy: Path):
    # R13: the evidence pins the hash of every audio file played; after a rebuild under a live
    # call the loaded hash would name other audio than Asterisk played, so the call fails closed.
    result, record, sim = _call_replacing_audio(flow_copy, _replace_with_other_audio)
    assert result.status == "error" and sim.variables["CONSENT_STATUS"] == "error"
    assert record is not None and record["status"] == "error"
    assert any("changed on disk" in e for e in record["errors"]), record["errors"]


def _rewrite_in_place(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0x55
    path.write_bytes(bytes(data))  # same inode and size, new mtime


@pytest.mark.parametrize(
    "change",
    [
        lambda wav: _replace_with_other_audio(wav.with_suffix(".g722")),  # renamed over
        lambda wav: _rewrite_in_place(wav.with_suffix(".alaw")),
    ],
    ids=["g722-replaced", "alaw-rewritten-in-place"],
)
def test_another_format_of_the_prompt_changed_during_a_call_ends_it_as_error(
    flow_copy: Path, change
):
    # the example has sounds: formats: [wav, alaw, g722]: on an A-law trunk Asterisk plays
    # who.alaw, not who.wav, so its file is held to its load-time identity too (R13)
    result, record, sim = _call_replacing_audio(flow_copy, change)
    assert result.status == "error" and sim.variables["CONSENT_STATUS"] == "error"
    assert record is not None and record["status"] == "error"
    assert any("who." in e and "changed on disk" in e for e in record["errors"]), record["errors"]


def test_audio_left_alone_lets_the_same_call_be_granted(flow_copy: Path):
    result, record, _sim = _call_replacing_audio(flow_copy, lambda wav: None)
    assert result.status == "granted" and record is not None and not record["errors"]


@pytest.mark.parametrize(
    "change",
    [
        lambda wav: wav.with_suffix(".gsm").write_bytes(b"\0" * 330),  # played from now on
        lambda wav: (wav.with_suffix(".gsm").write_bytes(b"\0"), wav.with_suffix(".gsm").unlink()),
        lambda wav: (wav.parent / "README.txt").write_text("recorded 2026-11"),
    ],
    ids=["another-format", "added-and-removed-during-the-play", "any-file"],
)
def test_any_change_to_the_prompt_folder_during_a_call_ends_it_as_error(flow_copy: Path, change):
    # Asterisk picks the file when the play starts: a folder that changed at all may have
    # offered it another file, even one gone again when the play ended.
    result, record, _sim = _call_replacing_audio(flow_copy, change)
    assert result.status == "error" and record is not None
    assert any("audio folder" in e and "changed" in e for e in record["errors"]), record["errors"]


def test_a_bug_reading_an_answer_ends_the_call_as_error_with_a_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from consent_ivr.protocol.session import CallSession

    real = CallSession.on_response
    raised: list[bool] = []

    def first_play_breaks(self: CallSession, resp: object, **kw: object) -> object:
        if not raised and self.current_play() is not None:
            raised.append(True)
            raise RuntimeError("a bug")
        return real(self, resp, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(CallSession, "on_response", first_play_breaks)
    result, record, sim = _run_wrapped(
        flows_dir() / "call-tracking.yaml", tmp_path / "ev.db", lambda c, r: r
    )
    assert raised and result.status == "error" and sim.variables["CONSENT_STATUS"] == "error"
    assert record is not None and record["status"] == "error"
    assert any("internal error: RuntimeError: a bug" in e for e in record["errors"])


def test_a_store_that_cannot_even_give_a_record_id_is_a_failed_write_not_a_crash(tmp_path):
    class Unopenable:
        def new_record_id(self) -> str:
            raise OSError("no such database host")

        def write(self, record: dict) -> str:
            raise AssertionError("never reached")

    flow = load_flow(flows_dir() / "call-tracking.yaml")
    sim = SimulatedAsterisk(dtmf="1", sounds=WavSoundCatalog(), env={"agi_callerid": NUMBER})
    lb = Loopback(sim)
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    result = run_call(
        flow=flow,
        language="de",
        env=dict(agi.env),
        key=PseudonymKey.from_bytes(b"0123456789abcdef-test-key"),
        store=Unopenable(),
        exchange=agi.exchange,
        hangup_seen=lambda: agi.hangup_seen,
    )
    assert result.status == "error" and sim.variables["CONSENT_STATUS"] == "error"
    assert sim.variables["CONSENT_GA_LINKAGE"] == "error"


def test_audio_changed_under_the_closing_prompt_is_not_checked_and_changes_nothing(
    flow_copy: Path, no_caller_number_in_logs
):
    # the closing prompt plays after the record is written and is not in it: nothing to pin
    def rebuild_the_closing_prompt(command: Command, resp: Response | None) -> Response | None:
        closing = command.words == ("STREAM", "FILE") and command.args[0].endswith("/close_granted")
        if resp is None and closing:
            _replace_with_other_audio(Path(command.args[0] + ".wav"))
        return resp

    result, record, sim = _run_wrapped(
        flow_copy, flow_copy.parent / "ev.db", rebuild_the_closing_prompt
    )
    assert result.status == "granted" and sim.variables["CONSENT_STATUS"] == "granted"
    assert record is not None and record["status"] == "granted" and not record["errors"]
    assert not any(e["event"] == "call.audio_changed" for e in no_caller_number_in_logs)
