"""The simulated Asterisk with a live caller: a key typed at call time t is DTMF at t, by the
same rules as a scripted key; hang-ups and keys between commands; real time at `speed`."""

from __future__ import annotations

import threading
import time

import pytest

from consent_ivr.harness.asterisk import (
    TICKS_PER_SECOND,
    Activity,
    Control,
    HangupEntry,
    KeyEntry,
    LiveEvent,
    PlayEntry,
    RealTimeCaller,
    SimulatedAsterisk,
    TranscriptEntry,
)

SOUNDS = {"notice": 80000, "question": 16000}  # 10 s and 2 s
ALL = '"0123456789*#"'


class TimedActs:
    """A LiveInput whose caller acts at given call times (ticks): real time, without the wait."""

    def __init__(self, *acts: LiveEvent) -> None:
        self.acts = list(acts)
        self.begun: list[Activity] = []
        self.entries: list[TranscriptEntry] = []
        self.between: list[LiveEvent] = []

    def begin(self, activity: Activity) -> None:
        self.begun.append(activity)

    def next_event(self, stop: int) -> LiveEvent | None:
        if self.acts and self.acts[0].tick <= stop:
            return self.acts.pop(0)
        return None

    def pending(self) -> list[LiveEvent]:
        taken, self.between = self.between, []
        return taken

    def recorded(self, entry: TranscriptEntry) -> None:
        self.entries.append(entry)


def sim(live: object) -> SimulatedAsterisk:
    return SimulatedAsterisk(answered=True, sounds=SOUNDS, live=live)  # type: ignore[arg-type]


def at(seconds: float) -> int:
    return round(seconds * TICKS_PER_SECOND)


def key_entries(s: SimulatedAsterisk) -> list[tuple[float, str, str]]:
    return [(e.at, e.digit, e.fate) for e in s.transcript if isinstance(e, KeyEntry)]


def test_a_live_key_at_time_t_stops_the_prompt_at_t() -> None:
    live = TimedActs(LiveEvent("key", at(4.2), "1"))
    s = sim(live)
    assert s.handle_line(f"STREAM FILE notice {ALL}\n".encode()) == [
        f"200 result={ord('1')} endpos={at(4.2)}\n".encode()
    ]
    assert key_entries(s) == [(4.2, "1", "taken")]
    assert s.now == 4.2
    assert live.begun == [Activity("STREAM FILE", 0, 80000, False, "notice", 0, 80000)]


def test_a_live_key_the_prompt_does_not_accept_is_ignored_and_the_prompt_plays_on() -> None:
    live = TimedActs(LiveEvent("key", at(1.0), "5"), LiveEvent("key", at(3.0), "1"))
    s = sim(live)
    assert s.handle_line(b'STREAM FILE notice "12"\n') == [
        f"200 result=49 endpos={at(3)}\n".encode()
    ]
    assert key_entries(s) == [(1.0, "5", "ignored"), (3.0, "1", "taken")]


def test_a_live_key_in_a_digit_wait_is_its_answer_and_silence_times_out() -> None:
    s = sim(TimedActs(LiveEvent("key", at(2.5), "2")))
    assert s.handle_line(b"WAIT FOR DIGIT 6000\n") == [b"200 result=50\n"]
    assert s.now == 2.5
    assert s.handle_line(b"WAIT FOR DIGIT 6000\n") == [b"200 result=0\n"]
    assert s.now == 8.5


def test_a_live_hang_up_during_a_prompt_cuts_it_and_sends_the_notice() -> None:
    s = sim(TimedActs(LiveEvent("hangup", at(5.0))))
    out = s.handle_line(f"STREAM FILE notice {ALL}\n".encode())
    assert out[0] == f"200 result=-1 endpos={at(5)}\n".encode()
    assert s.hung_up and s.hangup_at == 5.0 and s.hangup_who == "caller"
    play = next(e for e in s.transcript if isinstance(e, PlayEntry))
    assert play.hung_up and play.endpos == at(5)


def test_live_acts_between_commands_drop_keys_and_hang_up_at_the_next_command() -> None:
    live = TimedActs()
    s = sim(live)
    s.handle_line(b"WAIT FOR DIGIT 1000\n")
    live.between = [LiveEvent("key", at(0.5), "1"), LiveEvent("hangup", at(0.6))]
    out = s.handle_line(b"SET VARIABLE X 1\n")
    assert key_entries(s) == [(1.0, "1", "dropped")]
    assert s.hung_up and s.hangup_at == 1.0
    assert out == [Control.SIGHUP, b"200 result=1\n"]  # the notice, then the command (dead)
    assert [e.at for e in s.transcript if isinstance(e, HangupEntry)] == [1.0]


def test_a_key_from_before_the_phase_began_is_dropped_not_taken() -> None:
    s = sim(TimedActs())
    s.handle_line(b"WAIT FOR DIGIT 1000\n")
    s.live = TimedActs(LiveEvent("key", at(0.2), "1"))  # typed before this wait began at 1.0 s
    assert s.handle_line(b"WAIT FOR DIGIT 1000\n") == [b"200 result=0\n"]
    assert key_entries(s) == [(1.0, "1", "dropped")]


def test_the_live_caller_sees_every_entry_the_transcript_gets() -> None:
    live = TimedActs(LiveEvent("key", at(1.0), "1"))
    s = sim(live)
    s.handle_line(f"STREAM FILE notice {ALL}\n".encode())
    s.handle_line(b"SET VARIABLE CONSENT_STATUS granted\n")
    # as they happen (the key, then the play it ended); the transcript orders them by time
    assert [e.kind for e in live.entries] == ["key", "play", "set"]
    assert sorted(live.entries, key=lambda e: e.at) == [
        e for e in s.transcript if e.kind != "command"
    ]


def test_a_call_has_a_script_or_a_live_caller_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        SimulatedAsterisk(dtmf="1", live=TimedActs())  # type: ignore[arg-type]


# ---- RealTimeCaller: call time from real time -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_pressed_t_real_seconds_into_a_phase_is_at_start_plus_t_times_speed() -> None:
    clock = Clock()
    caller = RealTimeCaller(speed=4, clock=clock)
    caller.begin(Activity("STREAM FILE", at(10), at(20), False, "notice", 0, at(10)))
    clock.now += 0.5
    caller.press("1")
    assert caller.next_event(at(20)) == LiveEvent("key", at(12), "1")
    assert caller.status()[1] == at(12)


def test_an_act_past_the_phase_end_waits_for_the_next_phase() -> None:
    clock = Clock()
    caller = RealTimeCaller(speed=1, clock=clock)
    caller.begin(Activity("WAIT FOR DIGIT", 0, at(1), True))
    clock.now += 2.0
    caller.hang_up()
    assert caller.next_event(at(1)) is None
    assert caller.pending() == [LiveEvent("hangup", at(2))]


def test_a_prompt_played_live_lasts_its_length_divided_by_speed() -> None:
    caller = RealTimeCaller(speed=20)  # the 10 s notice: 0.5 s
    s = sim(caller)
    began = time.monotonic()
    assert s.handle_line(f"STREAM FILE notice {ALL}\n".encode()) == [b"200 result=0 endpos=80000\n"]
    assert 0.45 <= time.monotonic() - began < 2.0
    assert [type(n).__name__ for n in caller.notices()] == ["Activity", "PlayEntry"]


def test_a_key_typed_from_another_thread_interrupts_the_prompt_at_that_moment() -> None:
    caller = RealTimeCaller(speed=20)
    s = sim(caller)
    presser = threading.Timer(0.2, caller.press, args=("1",))  # at about 4 s of call time
    presser.start()
    out = s.handle_line(f"STREAM FILE notice {ALL}\n".encode())
    presser.join()
    (entry,) = [e for e in s.transcript if isinstance(e, KeyEntry)]
    assert entry.fate == "taken" and 3.0 <= entry.at < 10.0  # 0.2 s real is 4 s of call time
    assert out == [f"200 result=49 endpos={round(entry.at * TICKS_PER_SECOND)}\n".encode()]


def test_the_live_caller_refuses_what_is_not_a_dtmf_key_or_speed() -> None:
    with pytest.raises(ValueError, match="not a DTMF key"):
        RealTimeCaller().press("x")
    with pytest.raises(ValueError, match="speed"):
        RealTimeCaller(speed=0)
