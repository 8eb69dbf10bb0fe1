"""The FastAGI server over real TCP: the shared scenario table, hang-ups, limits, drain, reload."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.cli.sounds import approve_recordings
from consent_ivr.evidence.store import SqliteEvidenceStore
from consent_ivr.flow.loader import load_flow
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import WavSoundCatalog, run_fastagi
from consent_ivr.paths import PROJECT_ROOT, flows_dir
from consent_ivr.transports.fastagi import parse_allow
from fastagi_kit import KEY, RawPeer, ServerThread, fresh_caller
from flowkit import copy_example_flows
from scenarios import SCENARIOS, Scenario, check_scenario

CALLER = "+49891234567"


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(flows_dir() / "call-tracking.yaml")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with ServerThread(tmp_path_factory.mktemp("fastagi")) as srv:
        yield srv


def call(server: ServerThread, path: str, dtmf: str, **sim):
    """One call, from a caller of its own (unless `agi_env` names one): see `fresh_caller`."""
    sim.setdefault("sounds", WavSoundCatalog())
    sim["agi_env"] = {"agi_callerid": fresh_caller(), **sim.get("agi_env", {})}
    host, port = server.address
    return run_fastagi(host, port, path, dtmf=dtmf, **sim)


def evidence_of(server: ServerThread, record_id: str):
    store = SqliteEvidenceStore(server.config.store_path)
    try:
        return store.get(record_id)
    finally:
        store.close()


@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_over_fastagi(sc: Scenario, lang: str, flow: Flow, server: ServerThread) -> None:
    result = call(server, f"call-tracking?lang={lang}", sc.dtmf(flow, lang))
    ev = evidence_of(server, result.variables.get("CONSENT_RECORD_ID", ""))
    check_scenario(sc, lang, flow, result, ev)
    assert ev["call"]["transport"] == "fastagi"


def test_language_from_agi_argument_and_channel(server: ServerThread) -> None:
    r = call(server, "call-tracking", "2", args=["en"])
    assert evidence_of(server, r.variables["CONSENT_RECORD_ID"])["flow"]["language"] == "en"
    r = call(server, "call-tracking", "2", agi_env={"agi_language": "en_US"})
    assert evidence_of(server, r.variables["CONSENT_RECORD_ID"])["flow"]["language"] == "en"


def test_unknown_flow_sets_error_and_answers_failure(server: ServerThread) -> None:
    r = call(server, "no-such-flow", "1")
    assert r.agistatus == "FAILURE"
    # the same variables as process AGI's unknown flow (test_agi_calls)
    assert r.variables == {
        "CONSENT_REASON": "error",
        "CONSENT_RECORD_ID": "",
        "CONSENT_STATUS": "error",
    }
    assert server.server.metrics.value("consent_ivr_refusals_total", reason="unknown_flow") >= 1


@pytest.mark.parametrize(
    "route", ["../../etc/passwd", "etc/passwd", "call-tracking.yaml", "flows/call-tracking"]
)
def test_a_route_is_only_ever_a_loaded_flow_id_never_a_file(
    server: ServerThread, route: str
) -> None:
    # the route is looked up among the flows loaded from the flows folder (ids [a-z0-9-]+)
    r = call(server, route, "1")
    assert r.agistatus == "FAILURE" and r.variables["CONSENT_STATUS"] == "error"


def test_hangup_line_before_during_and_after_a_command(server: ServerThread, flow: Flow) -> None:
    # during: the STREAM FILE answers -1, then HANGUP follows on the wire
    during = call(server, "call-tracking", "h@2.0")
    assert during.variables["CONSENT_REASON"] == "hangup"
    # before: the caller hangs up while no command runs; HANGUP precedes the next response
    gap = call(server, "call-tracking", "h@0.5005", turnaround_ms=5)
    assert gap.variables["CONSENT_REASON"] == "hangup"
    assert b"HANGUP\n" in gap.sent()
    # after the decision: the closing prompt is cut, the decision stands
    after = call(server, "call-tracking", "1,h")
    assert after.variables["CONSENT_STATUS"] == "granted" and after.agistatus == "HANGUP"
    for r in (during, gap, after):
        ev = evidence_of(server, r.variables["CONSENT_RECORD_ID"])
        assert ev is not None and ev["status"] == r.variables["CONSENT_STATUS"]


def test_a_peer_that_disconnects_mid_command_still_gets_a_record(server: ServerThread) -> None:
    before = len(server.records())
    peer = RawPeer(server.address, "call-tracking", stall_at=b"STREAM FILE")
    peer.send_env()
    assert peer.run() is False  # the first prompt is "playing"
    peer.close()  # the caller's leg vanishes mid-command
    deadline = time.monotonic() + 5  # the record commits before the call has wound down
    while (len(server.records()) == before or server.server.calls_in_flight) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    rec = server.records()[-1]
    assert rec["status"] == "none" and rec["reason"] == "hangup"
    assert server.server.calls_in_flight == 0


def _next_record(server: ServerThread, before: int) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while len(server.records()) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    records = server.records()
    assert len(records) == before + 1
    return records[-1]


@pytest.mark.parametrize("bad", [b"200 result=\n", b"200 result=-\n"])
def test_a_malformed_response_ends_the_call_as_error_with_a_record(
    server: ServerThread, bad: bytes
) -> None:
    before = len(server.records())
    peer = RawPeer(server.address, "call-tracking", stall_at=b"STREAM FILE", dtmf="1")
    peer.send_env()
    assert peer.run() is False
    assert peer.answer_raw(bad) is True
    assert peer.sim.variables["CONSENT_STATUS"] == "error"
    rec = _next_record(server, before)
    assert rec["status"] == "error" and any("malformed result" in e for e in rec["errors"])


def test_a_partial_line_before_eof_is_a_hangup_not_a_response(server: ServerThread) -> None:
    # "200 result=50" (key 2) without its LF, then EOF: the caller hung up; a key that Asterisk
    # never finished reporting must not become a decision.
    before = len(server.records())
    peer = RawPeer(server.address, "call-tracking", stall_at=b"STREAM FILE")
    peer.send_env()
    assert peer.run() is False
    peer.sock.sendall(b"200 result=50 endpos=800")
    peer.close()
    rec = _next_record(server, before)
    assert (rec["status"], rec["reason"]) == ("none", "hangup")


def test_an_internal_error_fails_closed_on_the_channel(
    server: ServerThread,
    monkeypatch: pytest.MonkeyPatch,
    no_caller_number_in_logs: list[dict[str, object]],
) -> None:
    from consent_ivr.transports.runner import CallRunner

    def bug(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(CallRunner, "answered", bug)
    r = call(server, "call-tracking", "1")
    assert r.variables["CONSENT_STATUS"] == "error"
    assert r.variables["CONSENT_REASON"] == "error"
    assert r.variables["CONSENT_GA_LINKAGE"] == "error"
    assert r.variables["CONSENT_FLOW"] == "call-tracking@1"
    assert any(e["event"] == "call.internal_error" for e in no_caller_number_in_logs)


def test_200_concurrent_calls_with_mixed_behaviours_all_decide_correctly(
    tmp_path: Path, flow: Flow
) -> None:
    behaviours = [
        ("1", "granted"),
        ("2@3.0", "declined"),
        ("", "none"),
        ("h@6.0", "none"),
        ("9,1", "granted"),
        ("5,5,5", "none"),
        ("1@3.0,2", "declined"),
    ]
    with ServerThread(tmp_path) as srv:
        jobs = [behaviours[i % len(behaviours)] for i in range(200)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            results = list(pool.map(lambda b: call(srv, "call-tracking", b[0]), jobs))
        records = {r["record_id"]: r for r in srv.records()}
    assert len(records) == 200
    for (dtmf, expected), r in zip(jobs, results, strict=True):
        assert r.variables["CONSENT_STATUS"] == expected, dtmf
        assert records[r.variables["CONSENT_RECORD_ID"]]["status"] == expected
    assert srv.server.metrics.value(
        "consent_ivr_decisions_total", status="granted", reason="key"
    ) == sum(1 for _d, e in jobs if e == "granted")


def test_reload_mid_call_keeps_the_call_on_its_version(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    copy_example_flows(flows)
    with ServerThread(tmp_path, flows_dir=flows) as srv:
        peer = RawPeer(srv.address, "call-tracking", stall_at=b"STREAM FILE", dtmf="1")
        peer.send_env()
        assert peer.run() is False
        text = (flows / "call-tracking.yaml").read_text()
        (flows / "call-tracking.yaml").write_text(text.replace("version: 1 ", "version: 2 ", 1))
        srv.run(srv.server.reload())
        assert srv.server.flows.get("call-tracking").version == 2
        assert peer.resume() is True
        assert peer.sim.variables["CONSENT_FLOW"] == "call-tracking@1"
        assert peer.sim.variables["CONSENT_STATUS"] == "granted"
        new = call(srv, "call-tracking", "1")
        assert new.variables["CONSENT_FLOW"] == "call-tracking@2"
        # a broken edit is rejected and version 2 keeps serving
        (flows / "call-tracking.yaml").write_text(text.replace('accept: "1"', 'accept: "2"'))
        errors = srv.run(srv.server.reload())
        assert len(errors) == 1 and str(flows / "call-tracking.yaml") in errors[0]
        assert srv.server.flows.get("call-tracking").version == 2
        assert call(srv, "call-tracking", "1").variables["CONSENT_FLOW"] == "call-tracking@2"
        versions = [(r["flow"]["version"], r["status"]) for r in srv.records()]
    assert versions == [(1, "granted"), (2, "granted"), (2, "granted")]


def test_a_replaced_prompt_file_reloads_its_flow_and_new_calls_pin_the_new_audio(
    tmp_path: Path, own_sounds: Path
) -> None:
    import hashlib

    flows = own_sounds
    wav = tmp_path / "sounds" / "en" / "call-tracking" / "who.wav"  # the simulator's language
    with ServerThread(tmp_path, flows_dir=flows) as srv:
        assert not srv.server.flows.changed()
        st = os.stat(wav)
        data = bytearray(wav.read_bytes())
        data[-2:] = b"\x01\x02"  # a re-recorded prompt: same size, mtime kept (rsync -t)
        (tmp_path / "new.wav").write_bytes(bytes(data))
        os.utime(tmp_path / "new.wav", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp_path / "new.wav", wav)
        assert srv.server.flows.changed()
        # approved for its text, like a studio recording (R13: else the reload refuses it)
        approve_recordings(flows / "call-tracking.yaml", ["who"], "en", tmp_path / "sounds")
        srv.run(srv.server.reload())
        assert not srv.server.flows.changed()
        r = call(srv, "call-tracking", "1")
        assert r.variables["CONSENT_STATUS"] == "granted"
        plays = {p["prompt_id"]: p["audio_sha256"] for p in srv.records()[-1]["plays"]}
    assert plays["who"] == hashlib.sha256(bytes(data)).hexdigest()


@pytest.fixture
def own_sounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the example flow and its sounds; returns the flows folder."""
    flows = tmp_path / "flows"
    flows.mkdir()
    copy_example_flows(flows)
    shutil.copytree(PROJECT_ROOT / "sounds", tmp_path / "sounds")
    monkeypatch.setenv("CONSENT_IVR_SOUNDS", str(tmp_path / "sounds"))
    return flows


def _write_16k(path: Path) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * 1600)


@pytest.mark.parametrize("change", ["unusable_audio", "another_format"])
def test_a_flow_whose_audio_went_bad_is_dropped_once_not_kept_or_reloaded_forever(
    tmp_path: Path, own_sounds: Path, change: str
) -> None:
    # The old version may keep serving after a rejected reload only while its audio is what
    # it hashed; here it is not (a 16 kHz re-recording, or who.ulaw Asterisk would prefer).
    folder = tmp_path / "sounds" / "en" / "call-tracking"
    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"
        if change == "unusable_audio":
            _write_16k(tmp_path / "new.wav")
            os.replace(tmp_path / "new.wav", folder / "who.wav")
        else:
            (folder / "who.ulaw").write_bytes(b"\xff" * 8000)
        assert srv.server.flows.changed()
        errors = srv.run(srv.server.reload())
        assert len(errors) == 1 and "who" in errors[0]
        assert not srv.server.flows.changed()  # no reload loop: the stamp is what is on disk
        assert srv.server.flows.get("call-tracking") is None
        r = call(srv, "call-tracking", "1")
    assert r.variables["CONSENT_STATUS"] == "error" and r.agistatus == "FAILURE"


def test_a_kept_version_without_a_manifest_is_still_watched_for_another_format(
    tmp_path: Path, own_sounds: Path
) -> None:
    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:
        (tmp_path / "sounds" / "call-tracking.manifest.json").unlink()
        assert len(srv.run(srv.server.reload())) == 1  # rejected; the old version is intact
        assert srv.server.flows.get("call-tracking") is not None
        assert not srv.server.flows.changed()
        (tmp_path / "sounds" / "en" / "call-tracking" / "who.ulaw").write_bytes(b"\xff" * 800)
        assert srv.server.flows.changed()
        srv.run(srv.server.reload())
        assert srv.server.flows.get("call-tracking") is None


def test_a_yaml_mistake_keeps_the_old_version_while_its_audio_is_intact(
    tmp_path: Path, own_sounds: Path
) -> None:
    with ServerThread(tmp_path, flows_dir=own_sounds) as srv:
        path = own_sounds / "call-tracking.yaml"
        path.write_text(path.read_text().replace('accept: "1"', 'accept: "2"'))
        assert len(srv.run(srv.server.reload())) == 1
        assert not srv.server.flows.changed()
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"


def test_flows_are_loaded_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation and audio checks take milliseconds a flow: on the loop they would stall every
    # call in flight. The loading must happen in a worker thread; only the swap on the loop.
    import threading

    import consent_ivr.transports.fastagi.flows as fastagi_flows

    threads: list[int] = []
    real = fastagi_flows.load_checked

    def recording_load(path: Path, **options: Any) -> tuple[Flow, list[Any]]:
        threads.append(threading.get_ident())
        return real(path, **options)

    with ServerThread(tmp_path) as srv:
        monkeypatch.setattr(fastagi_flows, "load_checked", recording_load)
        assert srv.run(srv.server.reload()) == []
        loop_thread = srv.thread.ident
    assert threads and loop_thread not in threads


def test_sighup_reloads_and_a_failing_reload_keeps_the_old_flows_serving(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_caller_number_in_logs: list[dict[str, object]],
) -> None:
    import consent_ivr.transports.fastagi.flows as fastagi_flows

    flows = tmp_path / "flows"
    flows.mkdir()
    copy_example_flows(flows)
    text = (flows / "call-tracking.yaml").read_text()
    with ServerThread(tmp_path, flows_dir=flows) as srv:

        def broken_load(path: Path, **options: object) -> tuple[Flow, list[object]]:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(fastagi_flows, "load_checked", broken_load)
        (flows / "call-tracking.yaml").write_text(text.replace("version: 1 ", "version: 2 ", 1))
        srv.run(_sighup(srv))
        assert any(e["event"] == "flows.reload_failed" for e in no_caller_number_in_logs)
        assert call(srv, "call-tracking", "1").variables["CONSENT_FLOW"] == "call-tracking@1"
        monkeypatch.undo()
        srv.run(_sighup(srv))
        assert call(srv, "call-tracking", "1").variables["CONSENT_FLOW"] == "call-tracking@2"


async def _sighup(srv: ServerThread) -> None:
    """What the SIGHUP handler does, then wait for the reload it started."""
    srv.server.reload_flows()
    await asyncio.gather(*srv.server._reloads)


def test_a_changed_flow_file_is_picked_up_without_a_signal(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    copy_example_flows(flows)
    with ServerThread(tmp_path, flows_dir=flows, reload_interval=0.05) as srv:
        text = (flows / "call-tracking.yaml").read_text()
        # another size too: the change must not depend on the file system's mtime granularity
        (flows / "call-tracking.yaml").write_text(text.replace("version: 1 ", "version: 17 ", 1))
        deadline = time.monotonic() + 5
        while srv.server.flows.get("call-tracking").version != 17:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_peers_outside_the_allow_list_are_closed_before_anything_is_read(tmp_path: Path) -> None:
    with ServerThread(tmp_path, allow=parse_allow("10.9.9.9/32")) as srv:
        sock = socket.create_connection(srv.address, timeout=5)
        assert sock.recv(100) == b""  # closed at once, nothing read, nothing said
        sock.close()
        assert srv.server.metrics.value("consent_ivr_refusals_total", reason="not_allowed") == 1
        assert srv.records() == []
    with ServerThread(tmp_path, allow=parse_allow("127.0.0.0/8")) as srv:
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"


def test_beyond_max_calls_a_peer_gets_failure_and_others_are_unaffected(tmp_path: Path) -> None:
    with ServerThread(tmp_path, max_calls=2) as srv:
        held = [
            RawPeer(srv.address, "call-tracking", stall_at=b"STREAM FILE", dtmf="1")
            for _ in range(2)
        ]
        for p in held:
            p.send_env()
            assert p.run() is False
        refused = call(srv, "call-tracking", "1")
        assert refused.agistatus == "FAILURE" and "CONSENT_STATUS" not in refused.variables
        assert srv.server.metrics.value("consent_ivr_refusals_total", reason="capacity") == 1
        for p in held:
            assert p.resume() is True
            assert p.sim.variables["CONSENT_STATUS"] == "granted"


def test_a_silent_peer_is_closed_after_the_env_deadline_without_harming_others(
    tmp_path: Path,
) -> None:
    with ServerThread(tmp_path, env_timeout=0.3) as srv:
        silent = socket.create_connection(srv.address, timeout=5)
        assert call(srv, "call-tracking", "2").variables["CONSENT_STATUS"] == "declined"
        t0 = time.monotonic()
        assert silent.recv(100) == b""
        assert time.monotonic() - t0 < 2
        silent.close()
        assert srv.server.metrics.value("consent_ivr_refusals_total", reason="silent") == 1


def test_an_overlong_line_closes_that_call_only(tmp_path: Path) -> None:
    with ServerThread(tmp_path, max_line=1024) as srv:
        sock = socket.create_connection(srv.address, timeout=5)
        sock.sendall(b"agi_network: yes\nagi_request: " + b"x" * 5000 + b"\n\n")
        assert sock.recv(100) == b""
        sock.close()
        assert call(srv, "call-tracking", "1").variables["CONSENT_STATUS"] == "granted"


def test_call_deadline_ends_a_call_as_error(tmp_path: Path) -> None:
    with ServerThread(tmp_path, call_timeout=1.0) as srv:
        peer = RawPeer(srv.address, "call-tracking", stall_at=b"STREAM FILE")
        peer.send_env()
        assert peer.run() is False
        time.sleep(1.5)
        peer.resume()
        assert peer.sim.variables["CONSENT_STATUS"] == "error"
        assert srv.records()[-1]["errors"] == ["call deadline exceeded"] or any(
            "deadline" in e for e in srv.records()[-1]["errors"]
        )


def test_the_server_logs_the_chain_head_as_anchors_and_at_shutdown(
    tmp_path: Path, no_caller_number_in_logs: list[dict[str, Any]]
) -> None:
    from consent_ivr.evidence.store import open_store

    events = no_caller_number_in_logs
    with ServerThread(tmp_path, head_log_interval=0.05) as srv:
        call(srv, "call-tracking", "1")
        deadline = time.monotonic() + 10
        while not any(e["event"] == "evidence.head" for e in events):
            assert time.monotonic() < deadline, "no evidence.head logged"
            time.sleep(0.02)
        time.sleep(0.2)  # a few more rounds: nothing new to log
        call(srv, "call-tracking", "2")
    heads = [(int(e["seq"]), str(e["hash"])) for e in events if e["event"] == "evidence.head"]
    assert len(heads) == len(set(heads))  # logged only when the chain moved
    store = open_store(str(srv.config.store_path))
    try:
        assert heads[-1] == store.head()  # the last one, at shutdown, is the final head
        assert store.verify(anchors=dict(heads)).ok
    finally:
        store.close()


def test_metrics_endpoint_serves_prometheus_text(tmp_path: Path) -> None:
    with ServerThread(tmp_path, metrics_port=0) as srv:  # a free port, chosen by the kernel
        port = srv.server.metrics.port
        assert port
        call(srv, "call-tracking", "1")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    text = body.decode()
    assert 'consent_ivr_decisions_total{reason="key",status="granted"} 1.0' in text
    assert "consent_ivr_turnaround_seconds_bucket" in text
    assert "consent_ivr_evidence_write_seconds_count 1.0" in text


def serve_process(tmp: Path, *args: str) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": KEY.secret.decode(),
        "CONSENT_IVR_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consent_ivr.cli.main",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            str(tmp / "evidence.sqlite3"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("listening on "), proc.stderr.read() if proc.stderr else line
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def test_a_real_sighup_reloads_the_flows_of_a_running_server(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    copy_example_flows(flows)
    proc, (host, port) = serve_process(tmp_path, "--flows", str(flows), "--reload-interval", "0")
    try:
        sim = {"sounds": WavSoundCatalog(), "agi_env": {"agi_callerid": CALLER}}
        first = run_fastagi(host, port, "call-tracking", dtmf="1", **sim)
        assert first.variables["CONSENT_FLOW"] == "call-tracking@1"
        text = (flows / "call-tracking.yaml").read_text()
        (flows / "call-tracking.yaml").write_text(text.replace("version: 1 ", "version: 3 ", 1))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            label = run_fastagi(host, port, "call-tracking", dtmf="1", **sim).variables
            if label["CONSENT_FLOW"] == "call-tracking@3":
                break
            assert label["CONSENT_FLOW"] == "call-tracking@1"
            assert time.monotonic() < deadline, "SIGHUP did not reload the flows"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_drains_and_loses_no_record(tmp_path: Path) -> None:
    grace = 2.0  # long enough for two calls to finish on a slow CI machine
    proc, address = serve_process(tmp_path, "--grace", str(grace))
    try:
        held = [
            RawPeer(address, "call-tracking", stall_at=b"STREAM FILE", dtmf="1") for _ in range(5)
        ]
        for p in held:
            p.send_env()
            assert p.run() is False
        finished = [RawPeer(address, "call-tracking", dtmf="2") for _ in range(3)]
        for p in finished:
            p.send_env()
            assert p.run() is True
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # no new calls once draining (a connect that still got in sends nothing)
            try:
                socket.create_connection(address, timeout=2).close()
            except OSError:
                break
            assert time.monotonic() < deadline, "the server kept accepting after SIGTERM"
            time.sleep(0.05)
        for p in held[:2]:  # these finish within the grace period, normally
            assert p.resume() is True
        for p in held[2:]:  # past the grace the server ends them: it speaks first
            assert select.select([p.sock], [], [], 20)[0], "the grace period never ended"
            p.sock.settimeout(10)
            p.resume()
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    store = SqliteEvidenceStore(tmp_path / "evidence.sqlite3")
    try:
        rows = store._connect().execute("SELECT status, reason FROM evidence").fetchall()
    finally:
        store.close()
    expected = [("declined", "key")] * 3 + [("granted", "key")] * 2 + [("error", "error")] * 3
    assert sorted(rows) == sorted(expected)
    for p in held[2:]:
        assert p.sim.variables["CONSENT_STATUS"] == "error"
        assert p.sim.variables["CONSENT_GA_LINKAGE"] == "error"


def test_serve_refuses_a_network_address_without_an_allow_list(tmp_path: Path) -> None:
    env = {**os.environ, "CONSENT_IVR_HMAC_KEY": KEY.secret.decode()}
    r = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "serve", "--listen", "0.0.0.0:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 2 and "--allow" in r.stderr and "Traceback" not in r.stderr


def test_serve_without_a_key_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_IVR_HMAC")}
    r = subprocess.run(
        [sys.executable, "-m", "consent_ivr.cli.main", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert r.returncode == 2 and "CONSENT_IVR_HMAC_KEY" in r.stderr


def test_no_caller_number_in_server_logs(server: ServerThread, no_caller_number_in_logs) -> None:
    call(server, "call-tracking", "1")
    assert any(e["event"] == "call.start" for e in no_caller_number_in_logs)
    assert CALLER not in json.dumps(no_caller_number_in_logs, default=str)


async def committed_then_stop(
    srv: ServerThread, write: asyncio.Future[None]
) -> tuple[tuple[str | None, str | None], str]:
    """`CallPump.committed` as a call step: its result, and whether the held-back stop
    reaches the call's next await."""
    assert srv.server.pump is not None
    result = await srv.server.pump.committed(write, "rid")
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        return result, "stop delivered"
    return result, "stop lost"


@pytest.mark.parametrize("outcome", ["fails", "commits"])
def test_a_stop_in_the_same_turn_as_the_write_settling_never_hides_its_outcome(
    tmp_path: Path, outcome: str
) -> None:
    from consent_ivr.evidence.errors import EvidenceWriteError

    with ServerThread(tmp_path) as srv:

        async def scenario() -> tuple[tuple[str | None, str | None], str]:
            loop = asyncio.get_running_loop()
            write: asyncio.Future[None] = loop.create_future()
            task = asyncio.ensure_future(committed_then_stop(srv, write))
            await asyncio.sleep(0)

            def stop_and_settle() -> None:  # SIGTERM drain and the writer thread, one turn
                task.cancel()
                if outcome == "fails":
                    write.set_exception(EvidenceWriteError("disk full"))
                else:
                    write.set_result(None)

            loop.call_soon(stop_and_settle)
            return await task

        result, stop = srv.run(scenario())
    assert stop == "stop delivered"
    assert result == ((None, "disk full") if outcome == "fails" else ("rid", None))


def test_a_write_that_never_settles_after_a_stop_is_reported_failed_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import consent_ivr.transports.fastagi.call as fastagi_call

    monkeypatch.setattr(fastagi_call, "STOP_WRITE_WAIT", 0.2)
    with ServerThread(tmp_path) as srv:

        async def scenario() -> tuple[tuple[str | None, str | None], str]:
            write: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # never
            task = asyncio.ensure_future(committed_then_stop(srv, write))
            await asyncio.sleep(0.05)
            task.cancel()
            return await asyncio.wait_for(task, timeout=5)

        (record_id, error), stop = srv.run(scenario())
    assert record_id is None and error is not None and "did not finish" in error
    assert stop == "stop delivered"


def test_serve_raises_a_low_descriptor_limit_to_fit_max_calls() -> None:
    code = textwrap.dedent(
        """
        import resource, sys
        sys.path.insert(0, sys.argv[1])
        from consent_ivr.transports.fastagi.config import raise_fd_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        print(raise_fd_limit(2100), min(hard, 2100) if hard != resource.RLIM_INFINITY else 2100)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))  # a hard limit below the need
        print(raise_fd_limit(2100))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(PROJECT_ROOT / "agi")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    first, second = done.stdout.splitlines()
    got, expected = first.split()
    assert got == expected  # raised to what max_calls needs (or the hard limit)
    assert second == "512"  # as far as it goes; the server then logs server.fd_limit
