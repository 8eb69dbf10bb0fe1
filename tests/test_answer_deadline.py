"""Per-answer deadlines: a peer that dribbles an answer ends its call as error, with a record.

The deadline of each command is computed once, in the session (its own time plus a margin); the
FastAGI server and the process-AGI script both enforce it. The peers here answer one byte every
100 ms, as a slow or hostile Asterisk (or a stalled network path) would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consent_ivr.engine import Call, NoEarlierDecision
from consent_ivr.evidence.store import SqliteEvidenceStore
from consent_ivr.flow.loader import load_flow
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import SimulatedAsterisk, WavSoundCatalog
from consent_ivr.paths import PROJECT_ROOT, agi_script, flows_dir
from consent_ivr.protocol.codec import parse_200
from consent_ivr.protocol.session import ANSWER_MARGIN_S, CallSession, Command, RecallEarlier
from fastagi_kit import KEY, ServerThread
from slowpeer import DribblingPeer

CALLER = "+49891234567"
#: How much later than the deadline a transport may notice it on a loaded test machine.
SLACK = 3.0


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(flows_dir() / "call-tracking.yaml")


def _until_stream_file(session: CallSession) -> Command:
    op = session.start()
    while not (isinstance(op, Command) and op.words == ("STREAM", "FILE")):
        assert isinstance(op, Command)
        assert op.answer_within == ANSWER_MARGIN_S  # SET VARIABLE, ANSWER: the margin alone
        op = session.on_response(parse_200("200 result=1"), hangup_seen=False, at_ms=0)
    return op


def test_a_prompt_may_take_its_length_from_its_offset_plus_the_margin(flow: Flow) -> None:
    session = CallSession(Call(flow, "de"))
    play = _until_stream_file(session)
    samples = flow.notice[0].samples["de"]
    assert play.budget_ms == -(-samples // 8)  # 8 kHz: samples / 8 = ms, rounded up
    assert play.answer_within == pytest.approx(samples / 8000 + ANSWER_MARGIN_S, abs=0.001)
    # key 1 during the notice: an early accept; the segment resumes where it stopped
    resumed = session.on_response(
        parse_200("200 result=49 endpos=8000"), hangup_seen=False, at_ms=1000
    )
    assert isinstance(resumed, Command) and resumed.args[-1] == "8000"
    assert resumed.budget_ms == -(-(samples - 8000) // 8)


def test_a_digit_wait_may_take_its_timeout_plus_the_margin(flow: Flow) -> None:
    session = CallSession(Call(flow, "de"))
    op = _until_stream_file(session)
    while op.words == ("STREAM", "FILE"):  # every prompt to its end, no key
        endpos = int(op.budget_ms * 8)
        op = session.on_response(
            parse_200(f"200 result=0 endpos={endpos}"), hangup_seen=False, at_ms=0
        )
        if isinstance(op, RecallEarlier):  # a returning caller's look-up: nothing found
            op = session.on_recall(NoEarlierDecision(why="none"))
        assert isinstance(op, Command)
    assert op.words == ("WAIT", "FOR", "DIGIT")
    timeout_ms = flow.choice.timeout_ms
    assert op.args == (str(timeout_ms),) and op.budget_ms == timeout_ms
    assert op.answer_within == timeout_ms / 1000 + ANSWER_MARGIN_S


def test_a_fastagi_peer_that_dribbles_an_answer_loses_its_call_at_the_deadline_with_a_record(
    tmp_path: Path,
) -> None:
    with ServerThread(tmp_path, call_timeout=120.0) as srv:
        sock = socket.create_connection(srv.address, timeout=10)
        sim = SimulatedAsterisk(
            network=True,
            network_script="call-tracking",
            sounds=WavSoundCatalog(),
            dtmf="1",
            env={"agi_callerid": CALLER},
        )
        peer = DribblingPeer(sock.fileno(), sock.fileno(), sim, dribble_at=b"ANSWER")
        peer.run(limit=ANSWER_MARGIN_S + 15)
        sock.close()
        assert peer.gave_up_after is not None, "the server waited for the whole answer"
        assert ANSWER_MARGIN_S - 0.5 <= peer.gave_up_after <= ANSWER_MARGIN_S + SLACK
        assert sim.variables["CONSENT_STATUS"] == "error"
        assert sim.variables["CONSENT_GA_LINKAGE"] == "error"
        record = srv.records()[-1]
        assert record["status"] == "error" and record["reason"] == "error"
        assert any(e.startswith("ANSWER: no complete answer within") for e in record["errors"])
        deadline = time.monotonic() + 5
        while srv.server.calls_in_flight:  # the slot is free again
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_fastagi_answer_dribbled_within_its_deadline_is_read_as_usual(tmp_path: Path) -> None:
    with ServerThread(tmp_path) as srv:
        sock = socket.create_connection(srv.address, timeout=10)
        sim = SimulatedAsterisk(
            network=True,
            network_script="call-tracking",
            sounds=WavSoundCatalog(),
            dtmf="1",
            env={"agi_callerid": CALLER},
        )
        peer = DribblingPeer(sock.fileno(), sock.fileno(), sim, dribble_at=b"ANSWER", endless=False)
        peer.run(limit=30)
        sock.close()
        assert peer.dribbled == len(b"200 result=0\n")
        assert sim.variables["CONSENT_STATUS"] == "granted"
        assert srv.records()[-1]["status"] == "granted"


def test_a_process_agi_peer_that_dribbles_an_answer_ends_the_call_at_the_deadline_with_a_record(
    tmp_path: Path,
) -> None:
    store = tmp_path / "evidence.sqlite3"
    env = {
        **os.environ,
        "CONSENT_IVR_HMAC_KEY": KEY.secret.decode(),
        "CONSENT_IVR_STORE": str(store),
        "CONSENT_IVR_CACHE": str(tmp_path / "cache"),
    }
    script = str(agi_script())
    proc = subprocess.Popen(
        [sys.executable, script, "call-tracking"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    sim = SimulatedAsterisk(
        request=script,
        args=["call-tracking"],
        sounds=WavSoundCatalog(),
        dtmf="1",
        env={"agi_callerid": CALLER},
    )
    try:
        peer = DribblingPeer(proc.stdout.fileno(), proc.stdin.fileno(), sim, dribble_at=b"ANSWER")
        peer.run(limit=ANSWER_MARGIN_S + 15)
        proc.stdin.close()
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert peer.gave_up_after is not None, "the script waited for the whole answer"
    assert ANSWER_MARGIN_S - 0.5 <= peer.gave_up_after <= ANSWER_MARGIN_S + SLACK
    assert code == 0
    assert sim.variables["CONSENT_STATUS"] == "error"
    ev = SqliteEvidenceStore(store)
    try:
        ids = [r[0] for r in ev._connect().execute("SELECT record_id FROM evidence")]
        assert len(ids) == 1
        record = ev.get(ids[0])
    finally:
        ev.close()
    assert record is not None and record["status"] == "error"
    assert any(e.startswith("ANSWER: no complete answer within") for e in record["errors"])
