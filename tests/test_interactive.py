"""`consent-ivr simulate FLOW --interactive` used as a person uses it: in a terminal (a detached
tmux session of fixed size), keys sent with `send-keys`, the screen read with `capture-pane`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TMUX = shutil.which("tmux") or "/usr/bin/tmux"
COMMAND = [sys.executable, "-m", "consent_ivr.cli.main", "simulate", "flows/call-tracking.yaml"]
LIVE = ["--interactive", "--speed", "8"]
ENDED = r"\[exit (\d+)\]"


class Terminal:
    """One tmux server of its own (its own socket) with one 120x40 window."""

    def __init__(self) -> None:
        self.socket = f"consent-ivr-test-{uuid.uuid4().hex[:12]}"

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, args: list[str], env: dict[str, str] | None = None) -> None:
        """Run the command in the window; its exit status is printed after it ends."""
        prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
        line = shlex.join([*prefix, *COMMAND, *args]) + '; echo "[exit $?]"; sleep 600'
        self.tmux("new-session", "-d", "-s", "call", "-x", "120", "-y", "40", "-c", str(ROOT), line)

    def screen(self) -> str:
        """What the terminal shows, its scrollback included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-1000", "-t", "call")

    def wait_for(self, pattern: str, timeout: float = 40.0) -> str:
        """Poll the screen until `pattern` (a regex) is on it; the screen then."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"{pattern!r} did not appear within {timeout} s; the screen:\n{text}")
            time.sleep(0.05)

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "call", *keys)

    def ended(self) -> tuple[int, str]:
        """Wait for the command to exit: its status and the whole screen."""
        text = self.wait_for(ENDED)
        match = re.search(ENDED, text)
        assert match is not None
        return int(match.group(1)), text

    def close(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def term() -> Iterator[Terminal]:
    terminal = Terminal()
    try:
        yield terminal
    finally:
        terminal.close()


def answer_the_question(term: Terminal, key: str) -> str:
    """Hear the whole notice and the question, press `key` in the wait; the screen at the end."""
    term.start(LIVE)
    term.wait_for(r"▶ \[who\] Hier ist die Muster Telefon GmbH\.")
    term.wait_for(r"▶ \[ask_ga_linkage\] Einverstanden: Taste 1\.")
    term.wait_for(r"waits up to 6\.00s for a key")
    term.send(key)
    status, text = term.ended()
    assert status == 0
    assert "Traceback" not in text
    return text


def test_the_notice_scrolls_by_and_1_after_the_question_grants_consent(term: Terminal) -> None:
    text = answer_the_question(term, "1")
    assert "live at speed ×8" in text and "h = hang up   q = quit" in text
    for segment in ("who", "analytics", "google", "voluntary", "rights"):
        assert f"▶ [{segment}]" in text
    # in the wait (or, on a machine too busy to type in time, in the re-prompt that follows)
    assert re.search(r"\d+\.\d\ds  key 1: accept — consent given\n", text)
    assert "  CONSENT_STATUS=granted" in text
    assert "evidence: record " in text
    assert "status granted (reason key), informed yes, hung up no" in text
    assert "keys: 1 (accept)" in text


def test_2_after_the_question_declines(term: Terminal) -> None:
    text = answer_the_question(term, "2")
    assert "  CONSENT_STATUS=declined" in text
    assert "status declined (reason key)" in text
    assert "granted" not in text.split("▶ [ask_ga_linkage]")[-1]


def test_h_during_the_notice_hangs_up_and_the_engine_records_no_decision(term: Terminal) -> None:
    term.start(LIVE)
    term.wait_for(r"▶ \[analytics\]")
    term.send("h")
    status, text = term.ended()
    assert status == 0 and "Traceback" not in text
    assert re.search(r"\d+\.\d\ds  hangs up \(caller\)", text)
    assert "  CONSENT_STATUS=none" in text
    assert "status none (reason hangup), informed no, hung up yes" in text
    assert "▶ [google]" not in text  # nothing plays after the hang-up


def test_q_quits_at_once_without_a_traceback(term: Terminal) -> None:
    term.start(LIVE)
    term.wait_for(r"▶ \[who\]")
    term.send("q")
    status, text = term.ended()
    assert status == 0
    assert "quit: the call was hung up" in text
    assert "Traceback" not in text and "variables:" not in text


def test_1_during_the_notice_does_not_count_and_the_notice_plays_on(term: Terminal) -> None:
    # accept_during_notice is false: the key stops the segment, which resumes where it stopped;
    # the record keeps the key as an early accept, and the caller's later 2 decides.
    term.start(LIVE)
    term.wait_for(r"▶ \[analytics\]")
    term.send("1")
    # the key with what the engine made of it, in the scripted transcript's words
    early = "key 1: early accept — does not count (the notice not yet heard); the segment resumes"
    term.wait_for(re.escape(early))
    term.wait_for(r"■ stopped by key 1 at \d+%")
    term.wait_for(r"▶ \[analytics\] \(from \d+%\)")
    term.wait_for(r"waits up to 6\.00s for a key")
    term.send("2")
    status, text = term.ended()
    assert status == 0
    assert "  CONSENT_STATUS=declined" in text
    assert "keys: 1 (early_accept), 2 (decline)" in text
    assert re.search(r"\d+\.\d\ds  key 2: decline — consent refused\n", text)
    # one clock: the key and the stop it caused at the same call time, and time never runs back
    (key_at,) = re.findall(r"(\d+\.\d\d)s  " + re.escape(early), text)
    (stop_at,) = re.findall(r"(\d+\.\d\d)s  ■ stopped by key 1", text)
    assert key_at == stop_at
    times = [float(t) for t in re.findall(r"^ *(\d+\.\d\d)s  ", text, re.M)]
    assert times == sorted(times) and len(times) > 10


def test_keys_typed_before_the_call_is_ready_are_not_echoed_and_not_pressed(
    term: Terminal,
) -> None:
    term.start(LIVE)
    term.wait_for(r"consent-ivr simulate: loading flows/call-tracking\.yaml")
    term.send("7")  # while the flow is loaded and checked (its proof takes a second)
    text = term.wait_for(r"ready: the call starts now")
    assert "not used: '7', typed before the call was ready" in text
    assert "7consent-ivr" not in text and not re.search(r"^7", text, re.M)  # no raw echo
    term.wait_for(r"▶ \[who\]")
    term.send("q")
    status, text = term.ended()
    assert status == 0
    assert "key 7" not in text  # never pressed in the call


def test_the_status_line_shows_the_prompt_text_and_its_progress(term: Terminal) -> None:
    term.start(["--interactive", "--speed", "1"])
    # the bar, its percentage, time played and length, and under it the words spoken so far
    term.wait_for(r"▶ \[who\] [█░]{30}\s+[1-9]\d*%\s+\d+\.\d\ds / 2\.\d\ds\n  Hier ist")
    term.send("q")
    assert term.ended()[0] == 0


def test_audio_without_a_player_is_a_note_not_an_error(term: Terminal, tmp_path: Path) -> None:
    term.start([*LIVE, "--audio"], env={"PATH": str(tmp_path)})  # neither play nor aplay
    term.wait_for(r"audio: no player found \(sox's play or aplay\)")
    term.wait_for(r"▶ \[who\]")
    term.send("q")
    assert term.ended()[0] == 0


def test_audio_plays_each_prompt_and_a_key_stops_it(term: Terminal, tmp_path: Path) -> None:
    log = tmp_path / "play.log"
    player = tmp_path / "play"
    player.write_text(
        "#!/bin/sh\n"
        f'echo "start $2" >> {shlex.quote(str(log))}\n'
        f"trap 'echo stopped >> {shlex.quote(str(log))}; exit 0' TERM\n"
        "while :; do sleep 0.05; done\n"
    )
    player.chmod(0o755)
    term.start([*LIVE, "--audio"], env={"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    term.wait_for(r"audio: play")
    term.wait_for(r"▶ \[analytics\]")
    term.send("1")
    term.wait_for(r"■ stopped by key 1")
    term.send("q")
    assert term.ended()[0] == 0
    lines = log.read_text().splitlines()
    assert lines[0].endswith("/who.wav") and lines[1] == "stopped"
    assert lines[2].endswith("/analytics.wav") and lines[3] == "stopped"


def test_interactive_without_a_terminal_is_one_clear_line() -> None:
    done = subprocess.run(
        [*COMMAND, *LIVE],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "consent-ivr: --interactive needs a terminal (stdin and stdout); "
        "for a scripted call use --dtmf\n"
    )


def test_interactive_refuses_a_dtmf_script() -> None:
    done = subprocess.run(
        [*COMMAND, *LIVE, "--dtmf", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "not with --dtmf or --json" in done.stderr and "Traceback" not in done.stderr


def test_speed_and_audio_without_interactive_are_refused() -> None:
    done = subprocess.run(
        [*COMMAND, "--speed", "4", "--dtmf", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == "consent-ivr: --speed and --audio go with --interactive\n"


def test_a_speed_below_1_is_refused_since_the_engine_would_time_out() -> None:
    done = subprocess.run(
        [*COMMAND, *LIVE[:-1], "0.5"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "argument --speed: expected a number from 1 to 1000, got '0.5'" in done.stderr


def test_a_player_that_cannot_play_is_noted_once_and_the_call_runs_on(
    term: Terminal, tmp_path: Path
) -> None:
    player = tmp_path / "play"  # like sox's play on a machine without a sound device
    player.write_text("#!/bin/sh\nexit 1\n")
    player.chmod(0o755)
    term.start([*LIVE, "--audio"], env={"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"})
    term.wait_for(r"audio: play could not play \(exit status 1\); silent")
    term.wait_for(r"▶ \[google\]")  # prompts after it: no second note
    term.send("q")
    status, text = term.ended()
    assert status == 0 and text.count("could not play") == 1
