"""Behaviour of the simulated Asterisk: DTMF script semantics, hang-ups, variables, AGISTATUS,
and the two runners (process AGI over pipes, FastAGI over TCP)."""

from __future__ import annotations

import socket
import sys
import textwrap
import threading
import wave
from pathlib import Path

import pytest

_AGI_DIR = Path(__file__).resolve().parents[1] / "agi"
if str(_AGI_DIR) not in sys.path:
    sys.path.insert(0, str(_AGI_DIR))

from consent_ivr.harness.asterisk import (  # noqa: E402
    DEAD_511,
    HANGUP_LINE,
    Control,
    DtmfEvent,
    HangupEntry,
    KeyEntry,
    PlayEntry,
    SimulatedAsterisk,
    SimulationError,
    WaitEntry,
    WavSoundCatalog,
    format_transcript,
    parse_dtmf_script,
    run_fastagi,
    run_process,
)

SOUNDS = {"hello": 5732, "notice": 80000, "question": 16000}
ALL = '"0123456789*#"'


def make(dtmf: str = "", **kwargs: object) -> SimulatedAsterisk:
    """An already answered channel (no ANSWER delay) unless told otherwise."""
    kwargs.setdefault("answered", True)
    kwargs.setdefault("sounds", SOUNDS)
    return SimulatedAsterisk(dtmf=dtmf, **kwargs)  # type: ignore[arg-type]


def keys(sim: SimulatedAsterisk) -> list[tuple[str, str, str | None]]:
    return [(e.digit, e.fate, e.by) for e in sim.transcript if isinstance(e, KeyEntry)]


# ---- DTMF script grammar ------------------------------------------------------------------


def test_parse_dtmf_script_keeps_events_inspectable() -> None:
    script = parse_dtmf_script(" 1 , 2@4.5,-, h , h@30, *, #@0.25, a ")
    assert script.events == (
        DtmfEvent("key", "1", None, "1"),
        DtmfEvent("key", "2", 4.5, "2@4.5"),
        DtmfEvent("silence", None, None, "-"),
        DtmfEvent("hangup", None, None, "h"),
        DtmfEvent("hangup", None, 30.0, "h@30"),
        DtmfEvent("key", "*", None, "*"),
        DtmfEvent("key", "#", 0.25, "#@0.25"),
        DtmfEvent("key", "A", None, "a"),
    )
    assert script.events[1].tick == 36000
    assert parse_dtmf_script("").events == ()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1,x", "#2 'x'"),
        ("1,,2", "empty event"),
        ("12", "'12'"),
        ("1@", "time in seconds"),
        ("1@-2", "time in seconds"),
        ("1@abc", "'abc'"),
        ("-@3", "cannot be timed"),
        ("E", "0-9"),
    ],
)
def test_parse_dtmf_script_rejects_bad_events_with_a_clear_message(
    text: str, fragment: str
) -> None:
    with pytest.raises(ValueError, match="DTMF script event") as info:
        parse_dtmf_script(text)
    assert fragment in str(info.value)


# ---- untimed keys and input points --------------------------------------------------------


def test_untimed_key_waits_through_a_narrow_barge_in_playback_for_the_next_input_point() -> None:
    sim = make("1")
    assert sim.handle_line(b'STREAM FILE hello "12"\n') == [b"200 result=0 endpos=5732\n"]
    assert sim.handle_line(b"WAIT FOR DIGIT 5000\n") == [b"200 result=49\n"]
    assert sim.now == pytest.approx(5732 / 8000)
    assert keys(sim) == [("1", "taken", "WAIT FOR DIGIT")]


def test_untimed_key_interrupts_an_open_question_playback_at_its_start() -> None:
    sim = make("2")
    out = sim.handle_line(b"STREAM FILE question " + ALL.encode() + b" 800\n")
    assert out == [b"200 result=50 endpos=800\n"]
    assert sim.now == 0.0


def test_untimed_keys_fill_get_data_and_hash_ends_it() -> None:
    sim = make("1,2,#")
    assert sim.handle_line(b"GET DATA question 3000 4\n") == [b"200 result=12\n"]
    assert sim.now == 0.0


def test_get_data_hash_first_gives_an_empty_result_without_timeout() -> None:
    sim = make("#")
    assert sim.handle_line(b"GET DATA question 3000 4\n") == [b"200 result=\n"]


def test_get_data_default_timeouts_are_6_s_then_2_s_after_the_prompt() -> None:
    sim = make("")
    assert sim.handle_line(b"GET DATA question\n") == [b"200 result= (timeout)\n"]
    assert sim.now == pytest.approx(2.0 + 6.0)
    sim = make("5@2.5")
    assert sim.handle_line(b"GET DATA question\n") == [b"200 result=5 (timeout)\n"]
    assert sim.now == pytest.approx(2.5 + 2.0)


def test_get_option_untimed_non_escape_key_is_discarded_by_the_prompt() -> None:
    sim = make("5,9")
    out = sim.handle_line(b'GET OPTION hello "9" 3000\n')
    # Both are pressed at the prompt start (an input point): '5' is discarded, '9' escapes.
    assert out == [b"200 result=57 endpos=0\n"]
    assert keys(sim) == [("5", "ignored", "GET OPTION"), ("9", "taken", "GET OPTION")]


def test_get_option_non_escape_key_in_the_wait_ends_it_with_zero_and_is_lost() -> None:
    sim = make("5@2.0")
    assert sim.handle_line(b'GET OPTION hello "9" 6000\n') == [b"200 result=0 endpos=5732\n"]
    assert sim.now == pytest.approx(2.0)
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]


# ---- timed keys ---------------------------------------------------------------------------


def test_timed_key_outside_a_narrow_escape_set_is_ignored_and_not_buffered() -> None:
    sim = make("5@0.3")
    assert sim.handle_line(b'STREAM FILE hello "12"\n') == [b"200 result=0 endpos=5732\n"]
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]
    assert keys(sim) == [("5", "ignored", "STREAM FILE")]


def test_timed_escape_key_stops_playback_at_the_exact_sample() -> None:
    sim = make("1@0.25")
    assert sim.handle_line(b'STREAM FILE notice "1" 1000\n') == [b"200 result=49 endpos=3000\n"]
    plays = [e for e in sim.transcript if isinstance(e, PlayEntry)]
    assert plays[0].interrupted_by == "1" and not plays[0].completed


def test_timed_key_in_the_turnaround_gap_is_dropped() -> None:
    sim = make("1@1.7", turnaround_ms=500)
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]  # 0.5 .. 1.5
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]  # 2.0 .. 3.0
    assert keys(sim) == [("1", "dropped", None)]


def test_timed_key_already_past_when_it_becomes_head_is_dropped() -> None:
    sim = make("1, 2@0.1")
    sim.handle_line(b"EXEC Wait 1\n")
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=49\n"]
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]
    assert ("2", "dropped", None) in keys(sim)


def test_key_during_idle_time_is_dropped() -> None:
    sim = make("3@1.0")
    assert sim.idle(2.0) == []
    assert sim.handle_line(b"WAIT FOR DIGIT 500\n") == [b"200 result=0\n"]
    assert keys(sim) == [("3", "dropped", None)]


# ---- silence ------------------------------------------------------------------------------


def test_silence_is_consumed_by_a_wait_timeout_not_by_an_open_question_playback() -> None:
    sim = make("-,1")
    assert sim.handle_line(b"STREAM FILE hello " + ALL.encode() + b"\n") == [
        b"200 result=0 endpos=5732\n"
    ]
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=49\n"]
    waits = [e for e in sim.transcript if isinstance(e, WaitEntry)]
    assert [(w.outcome, w.key) for w in waits] == [("timeout", None), ("key", "1")]


def test_exhausted_script_means_silence_until_max_call_seconds() -> None:
    sim = make("", max_call_seconds=10)
    assert sim.handle_line(b"WAIT FOR DIGIT -1\n") == [b"200 result=-1\n", Control.SIGHUP]
    assert sim.now == pytest.approx(10.0)
    assert sim.agistatus == "HANGUP"


# ---- hang-ups -----------------------------------------------------------------------------


def test_untimed_hangup_ends_the_next_playback_at_its_start_then_dead_mode() -> None:
    sim = make("h")
    assert sim.handle_line(b"SET VARIABLE A 1\n") == [b"200 result=1\n"]
    assert sim.handle_line(b'STREAM FILE notice "12"\n') == [
        b"200 result=-1 endpos=0\n",
        Control.SIGHUP,
    ]
    assert sim.handle_line(b"NOOP\n") == [b"200 result=0\n"]
    assert sim.handle_line(b'STREAM FILE hello ""\n') == [DEAD_511]
    assert sim.handle_line(b"GOSUB ctx s 1\n") == [DEAD_511]
    assert sim.handle_line(b"SET VARIABLE B 2\n") == [b"200 result=1\n"]
    assert sim.handle_line(b"DATABASE PUT f k v\n") == [b"200 result=1\n"]
    assert sim.handle_line(b'VERBOSE "x" 1\n') == [b"200 result=1\n"]
    assert sim.handle_line(b"EXEC NoOp x\n") == [b"200 result=0\n"]
    assert sim.agistatus == "HANGUP"
    assert sim.hung_up and sim.dead


def test_timed_hangup_during_playback_fastagi() -> None:
    sim = make("h@1.5", network=True)
    assert sim.handle_line(b'STREAM FILE notice "12" 800\n') == [
        b"200 result=-1 endpos=12800\n",
        HANGUP_LINE,
    ]
    assert sim.handle_line(b"WAIT FOR DIGIT 100\n") == [DEAD_511]
    assert [e.who for e in sim.transcript if isinstance(e, HangupEntry)] == ["caller"]


def test_timed_hangup_during_wait_for_digit_and_get_data() -> None:
    sim = make("h@2.0", network=True)
    assert sim.handle_line(b"WAIT FOR DIGIT 5000\n") == [b"200 result=-1\n", HANGUP_LINE]
    sim = make("1@0.5, h@2.0", network=True)
    assert sim.handle_line(b"GET DATA hello 5000 4\n") == [b"200 result=-1\n", HANGUP_LINE]
    assert sim.agistatus == "HANGUP"


def test_hangup_in_get_option_wait_gives_result_zero_with_the_prompt_endpos() -> None:
    sim = make("h@2.0")
    assert sim.handle_line(b'GET OPTION hello "12" 5000\n') == [
        b"200 result=0 endpos=5732\n",
        Control.SIGHUP,
    ]
    assert sim.agistatus == "HANGUP"


def test_hangup_while_idle_gives_the_notice_before_the_next_response() -> None:
    sim = make("h@1.0", network=True, turnaround_ms=2000)
    assert sim.handle_line(b"NOOP\n") == [HANGUP_LINE, b"200 result=0\n"]
    assert sim.handle_line(b"ANSWER\n") == [DEAD_511]
    sim = make("h@1.0")
    assert sim.idle(3.0) == [Control.SIGHUP]
    assert sim.handle_line(b"GET DATA hello\n") == [DEAD_511]


def test_agi_hangup_command_then_notice_then_511() -> None:
    sim = make("", network=True)
    assert sim.handle_line(b"HANGUP\n") == [b"200 result=1\n", HANGUP_LINE]
    assert sim.handle_line(b"HANGUP\n") == [DEAD_511]
    assert sim.hangup_who == "agi" and sim.agistatus == "HANGUP"


def test_agisighup_no_suppresses_every_notice_but_dead_mode_still_applies() -> None:
    sim = make("h", network=True, sighup=False)
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=-1\n"]
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [DEAD_511]
    assert sim.finish() == []


def test_exit_on_hangup_sends_two_notices_and_closes() -> None:
    sim = make("h", network=True, exit_on_hangup=True)
    assert sim.handle_line(b"WAIT FOR DIGIT 1000\n") == [
        b"200 result=-1\n",
        HANGUP_LINE,
        HANGUP_LINE,
        Control.CLOSE,
    ]
    with pytest.raises(SimulationError):
        sim.handle_line(b"NOOP\n")
    assert sim.finish() == []


def test_final_notice_when_the_peer_ends() -> None:
    assert make("", network=True).finish() == [HANGUP_LINE]
    assert make("").finish() == [Control.SIGHUP]


def test_set_autohangup_hangs_up_at_the_given_time() -> None:
    sim = make("")
    assert sim.handle_line(b"SET AUTOHANGUP 2\n") == [b"200 result=0\n"]
    assert sim.handle_line(b'STREAM FILE notice ""\n') == [
        b"200 result=-1 endpos=16000\n",
        Control.SIGHUP,
    ]
    assert sim.hangup_who == "autohangup"


def test_answer_takes_half_a_second_on_a_ringing_channel() -> None:
    sim = make("", answered=False)
    assert sim.handle_line(b"CHANNEL STATUS\n") == [b"200 result=4\n"]
    assert sim.handle_line(b"ANSWER\n") == [b"200 result=0\n"]
    assert sim.now == pytest.approx(0.5)
    assert sim.handle_line(b"CHANNEL STATUS\n") == [b"200 result=6\n"]


# ---- variables ----------------------------------------------------------------------------


def test_variable_inheritance_levels_are_remembered() -> None:
    sim = make("")
    for line in (b"SET VARIABLE __CONSENT granted", b"SET VARIABLE _TAG t", b"SET VARIABLE P p"):
        assert sim.handle_line(line + b"\n") == [b"200 result=1\n"]
    sim.handle_line(b'EXEC Set "__FROMEXEC=a,b"\n')
    assert sim.variables == {"CONSENT": "granted", "TAG": "t", "P": "p", "FROMEXEC": "a,b"}
    assert sim.inheritance == {"CONSENT": 2, "TAG": 1, "P": 0, "FROMEXEC": 2}
    assert sim.handle_line(b"GET VARIABLE CONSENT\n") == [b"200 result=1 (granted)\n"]
    sim.handle_line(b"SET VARIABLE CONSENT declined\n")
    assert sim.inheritance["CONSENT"] == 0


def test_get_variable_unset_empty_and_full_variable() -> None:
    sim = make("")
    sim.handle_line(b'SET VARIABLE EMPTY ""\n')
    assert sim.handle_line(b"GET VARIABLE NOPE\n") == [b"200 result=0\n"]
    assert sim.handle_line(b"GET VARIABLE EMPTY\n") == [b"200 result=1 ()\n"]
    assert sim.handle_line(b'GET FULL VARIABLE "${CALLERID(num)}-${CHANNEL}-${NOPE}"\n') == [
        b"200 result=1 (5551234-PJSIP/100-00000001-)\n"
    ]


# ---- syntax errors and AGISTATUS ------------------------------------------------------------


def test_unknown_empty_and_cr_lines_give_510() -> None:
    sim = make("")
    assert sim.handle_line(b"\n") == [b"510 Invalid or unknown command\n"]
    assert sim.handle_line(b"NOOP\r\n") == [b"510 Invalid or unknown command\n"]
    assert sim.handle_line(b"FOO BAR\n") == [b"510 Invalid or unknown command\n"]


def test_usage_errors() -> None:
    sim = make("")
    out = sim.handle_line(b"WAIT FOR DIGIT abc\n")
    assert out[0] == b"520-Invalid command syntax.  Proper usage follows:\n"
    assert out[-1] == b"520 End of proper usage.\n" and len(out) == 3
    assert sim.handle_line(b'SAY DIGITS abc ""\n') == [
        b"520 Invalid command syntax.  Proper usage not available.\n"
    ]
    assert (
        sim.handle_line(b"SET VARIABLE A b c\n")[1] == b"Sets a variable to the current channel.\n"
    )
    assert sim.handle_line(b"GOSUB ctx s 1\n") == [
        b"100 result=0 Trying...\n",
        b"200 result=0 Gosub complete\n",
    ]


def test_agistatus_failure_rules() -> None:
    sim = make("")
    assert sim.handle_line(b'STREAM FILE missing "12" 40\n') == [b"200 result=-1 endpos=40\n"]
    assert sim.agistatus == "FAILURE"
    sim = make("")
    assert sim.handle_line(b"GET DATA missing\n") == [b"200 result=-1\n"]
    assert sim.handle_line(b"EXEC Nope x\n") == [b"200 result=-2\n"]
    assert sim.agistatus == "SUCCESS"
    sim = make("")
    assert sim.handle_line(b'GET OPTION missing "1"\n') == [b"200 result=-1 endpos=0\n"]
    assert sim.agistatus == "FAILURE"
    sim = make("")
    assert sim.handle_line(b"failure\n") == [Control.SIGHUP, Control.CLOSE]
    assert sim.agistatus == "FAILURE" and sim.closed
    sim = make("")
    sim.record_exit_status(3)
    assert sim.agistatus == "FAILURE"
    sim = make("h")
    sim.handle_line(b"WAIT FOR DIGIT 10\n")
    sim.record_exit_status(1)
    assert sim.agistatus == "HANGUP"


# ---- env block and sound catalog ------------------------------------------------------------


def test_env_block_order_and_network_lines() -> None:
    sim = SimulatedAsterisk(network=True, network_script="consent?x=1", args=["a", ""])
    block = sim.env_block().decode()
    lines = block.split("\n")
    assert lines[:3] == [
        "agi_network: yes",
        "agi_network_script: consent?x=1",
        "agi_request: agi://127.0.0.1:4573/consent?x=1",
    ]
    assert "agi_accountcode: \n" in block
    assert block.endswith("agi_arg_1: a\nagi_arg_2: \n\n")
    assert SimulatedAsterisk(request="/x.agi").env_block().startswith(b"agi_request: /x.agi\n")
    with pytest.raises(ValueError, match="unknown env keys"):
        SimulatedAsterisk(env={"agi_chanel": "x"})


def test_wav_catalog_converts_any_rate_to_8khz_samples(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    with wave.open(str(tmp_path / "en" / "prompt.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * 24000)
    catalog = WavSoundCatalog(tmp_path, "en")
    assert catalog("prompt") == 12000
    assert catalog(str(tmp_path / "en" / "prompt")) == 12000
    assert catalog("nothing") is None
    sim = SimulatedAsterisk(sounds=catalog, answered=True)
    assert sim.handle_line(b'STREAM FILE prompt ""\n') == [b"200 result=0 endpos=12000\n"]
    assert "play" in format_transcript(sim.transcript)


# ---- runners ------------------------------------------------------------------------------

AGI_SCRIPT = textwrap.dedent(
    """
    import signal, sys, time
    got = []
    signal.signal(signal.SIGHUP, lambda *a: got.append(1))
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    env = {}
    while True:
        line = inp.readline()
        if line in (b"\\n", b""):
            break
        key, _, value = line.decode().rstrip("\\n").partition(": ")
        env[key] = value
    def cmd(text):
        out.write(text.encode() + b"\\n")
        out.flush()
        return inp.readline().decode().rstrip("\\n")
    sys.stderr.write("arg1=%s\\n" % env.get("agi_arg_1"))
    cmd("ANSWER")
    played = cmd('STREAM FILE hello "12"')
    for _ in range(200):
        if got:
            break
        time.sleep(0.01)
    sys.stderr.write("sighup=%d\\n" % len(got))
    cmd('SET VARIABLE PLAYED "%s"' % played)
    sys.stderr.write("after=%s\\n" % cmd('STREAM FILE hello ""'))
    sys.exit(int(sys.argv[1]))
    """
)


def test_run_process_pipes_sighup_and_stderr(tmp_path: Path) -> None:
    script = tmp_path / "lab.py"
    script.write_text(AGI_SCRIPT)
    result = run_process(
        [sys.executable, str(script), "0"], dtmf="h@0.7", sounds=SOUNDS, timeout=10
    )
    assert result.exit_code == 0
    assert b"arg1=" + str(script).encode() in result.stderr
    assert b"sighup=1" in result.stderr
    assert b"after=511 Command Not Permitted" in result.stderr
    assert result.variables["PLAYED"] == "200 result=-1 endpos=1600"
    assert result.agistatus == "HANGUP"
    directions = [d for d, _ in result.log]
    sig_index = directions.index("SIG")
    assert result.log[sig_index - 1] == ("A>S", b"200 result=-1 endpos=1600\n")
    assert result.log[0][1].startswith(b"agi_request: " + sys.executable.encode())


def test_run_process_nonzero_exit_is_failure(tmp_path: Path) -> None:
    script = tmp_path / "lab.py"
    script.write_text(AGI_SCRIPT)
    result = run_process([sys.executable, str(script), "3"], dtmf="", sounds=SOUNDS, timeout=10)
    assert result.exit_code == 3
    assert result.agistatus == "FAILURE"
    assert result.variables["PLAYED"] == "200 result=0 endpos=5732"


def test_run_process_times_out_on_a_silent_script(tmp_path: Path) -> None:
    script = tmp_path / "silent.py"
    script.write_text("import time\ntime.sleep(30)\n")
    with pytest.raises(SimulationError, match="no complete command line"):
        run_process([sys.executable, str(script)], sounds=SOUNDS, timeout=0.5)


def _serve_once(
    commands: list[bytes], reads: list[bytes]
) -> tuple[socket.socket, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))

    def handle() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as rfile:
            while (line := rfile.readline()) not in (b"\n", b""):
                reads.append(line)
            reads.append(b"--")
            for command in commands:
                conn.sendall(command)
                line = rfile.readline()
                reads.append(line)
                if line == b"HANGUP\n":
                    reads.append(rfile.readline())
        server.close()

    thread = threading.Thread(target=handle, daemon=True)
    thread.start()
    return server, thread


def test_run_fastagi_against_a_socket_server() -> None:
    reads: list[bytes] = []
    server, thread = _serve_once(
        [b"STREAM FILE hello " + ALL.encode() + b"\n", b"SET VARIABLE X y\n"], reads
    )
    port = server.getsockname()[1]
    result = run_fastagi("127.0.0.1", port, "consent?x=1", dtmf="2", sounds=SOUNDS, timeout=5)
    thread.join(5)
    assert reads[:3] == [
        b"agi_network: yes\n",
        b"agi_network_script: consent?x=1\n",
        f"agi_request: agi://127.0.0.1:{port}/consent?x=1\n".encode(),
    ]
    assert reads[-2:] == [b"200 result=50 endpos=0\n", b"200 result=1\n"]
    assert result.variables == {"X": "y", "PLAYBACKSTATUS": "FAILED"}
    assert result.log[-1] == ("A>S", HANGUP_LINE)  # final notice after the server closed
    assert result.exit_code is None and result.agistatus == "SUCCESS"


def test_run_fastagi_hangup_line_precedes_the_next_response() -> None:
    reads: list[bytes] = []
    server, thread = _serve_once([b'STREAM FILE notice "1"\n', b"NOOP\n"], reads)
    port = server.getsockname()[1]
    result = run_fastagi("127.0.0.1", port, "consent", dtmf="h@2", sounds=SOUNDS, timeout=5)
    thread.join(5)
    assert reads[-3:] == [b"200 result=-1 endpos=16000\n", b"HANGUP\n", b"200 result=0\n"]
    assert result.agistatus == "HANGUP"
