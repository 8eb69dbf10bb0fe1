"""ConsentAGI: pyst2's AGI with its wire defects (AGI-PROTOCOL.md §8) mended, shown on the wire."""

from __future__ import annotations

import signal
import threading

import pytest
from asterisk.agi import AGI, AGIHangup, AGISIGPIPEHangup, AGIUsageError

from consent_ivr.harness.asterisk import SimulatedAsterisk
from consent_ivr.harness.loopback import Loopback
from consent_ivr.protocol.session import Command
from consent_ivr.transports.consent_agi import ConsentAGI

ODD_VALUES = [
    'say "hi" C:\\dir',
    "back\\\\slash\\",
    "  leading and trailing  ",
    "",
    "tab\there",
    "a,b;c|d",
    "${CALLERID(num)}",
    'unbalanced "quote',
    "café ✓",
]


def connect(**sim_options) -> tuple[ConsentAGI, Loopback]:
    sim_options.setdefault("sounds", {"long": 80000, "short": 800})
    sim_options.setdefault("answered", True)
    lb = Loopback(SimulatedAsterisk(**sim_options))
    agi = ConsentAGI(lb, lb, trap_sighup=False)  # type: ignore[arg-type]
    lb.on_sighup = lambda: agi._handle_sighup(signal.SIGHUP, None)
    return agi, lb


@pytest.mark.parametrize("value", ODD_VALUES)
def test_pyst2_set_variable_round_trips_any_value_through_the_fixed_quote(value):
    agi, lb = connect()
    agi.set_variable("V", value)
    assert lb.sim.variables["V"] == value
    assert agi.get_variable("V") == value  # pyst2's own get_variable, on our codec
    resp = agi.exchange(Command(("GET", "VARIABLE"), ("V",)))
    assert resp is not None and resp.data == value


def test_plain_pyst2_quote_corrupts_what_consentagi_keeps():
    value = 'say "hi" C:\\dir'
    broken = AGI._quote(None, value)  # pyst2 0.5.1 as shipped
    agi, lb = connect()
    agi.send_command("SET VARIABLE", '"V"', broken)
    agi.read_response()
    assert lb.sim.variables["V"] == "say hi C:dir"  # the defect, reproduced on the wire
    agi.set_variable("V", value)
    assert lb.sim.variables["V"] == value


def test_environment_values_are_kept_byte_for_byte():
    agi, _ = connect(args=["  spaced  ", "x: y", ""])
    assert agi.env["agi_arg_1"] == "  spaced  "
    assert agi.env["agi_arg_2"] == "x: y"
    assert agi.env["agi_arg_3"] == ""
    assert agi.env["agi_accountcode"] == ""
    assert agi.environment.args == ["  spaced  ", "x: y", ""]


def test_hangup_line_is_an_out_of_band_flag_and_the_real_response_is_still_read():
    agi, _ = connect(network=True, dtmf="h@1.0")
    resp = agi.exchange(Command(("STREAM", "FILE"), ("long", "")))
    assert resp is not None and resp.result == "-1" and resp.endpos == 8000
    assert not agi.reader.hangup_seen  # HANGUP follows the response on the wire ...
    resp = agi.exchange(Command(("NOOP",)))
    assert agi.reader.hangup_seen  # ... and is consumed before the next response
    assert resp is not None and resp.code == 200 and resp.result == "0"
    resp = agi.exchange(Command(("STREAM", "FILE"), ("short", "")))
    assert resp is not None and resp.dead


def test_result_minus_one_is_data_not_an_exception():
    agi, _ = connect()
    result = agi.execute("STREAM FILE", agi._quote("missing"), agi._quote(""))
    assert result["result"] == ("-1", "") and result["endpos"] == ("0", "")


def test_511_is_a_hangup_and_dead_mode_commands_still_run_after_sighup():
    agi, lb = connect(dtmf="h@0.5")
    agi.exchange(Command(("STREAM", "FILE"), ("long", "12")))
    assert agi._got_sighup  # delivered like Asterisk's kill(pid, SIGHUP)
    with pytest.raises(AGIHangup):
        agi.answer()  # 511 on a dead channel
    agi.set_variable("__CONSENT_STATUS", "none")  # pyst2 as shipped would refuse after SIGHUP
    assert lb.sim.variables["CONSENT_STATUS"] == "none"
    assert lb.sim.inheritance["CONSENT_STATUS"] == 2


def test_plain_pyst2_refuses_every_command_after_sighup():
    agi, _ = connect()
    agi._got_sighup = True
    with pytest.raises(AGIHangup):
        AGI.test_hangup(agi)  # the shipped behaviour we replaced
    agi.test_hangup()  # ours never refuses


def test_gosub_interim_100_trying_is_skipped_and_responses_stay_in_sync():
    agi, _ = connect()
    resp = agi.exchange(Command(("GOSUB",), ("ctx", "s", "1")))
    assert resp is not None and resp.code == 200 and resp.result == "0"
    assert resp.lines == ("200 result=0 Gosub complete",)
    resp = agi.exchange(Command(("GET", "VARIABLE"), ("NOPE",)))
    assert resp is not None and resp.result == "0"


def test_single_line_520_ends_at_once_and_the_next_response_is_not_swallowed():
    agi, _ = connect()
    with pytest.raises(AGIUsageError) as exc:
        agi.execute("CHANNEL STATUS", "a", "b", "c")
    assert "Proper usage not available" in str(exc.value)
    agi.set_variable("AFTER", "ok")
    assert agi.get_variable("AFTER") == "ok"


def test_multi_line_520_is_read_to_its_end():
    agi, _ = connect()
    with pytest.raises(AGIUsageError) as exc:
        agi.execute("WAIT FOR DIGIT")
    assert str(exc.value).splitlines()[-1] == "520 End of proper usage."
    assert agi.exchange(Command(("NOOP",))).result == "0"


def test_eof_is_a_hangup_not_a_value_error():
    agi, lb = connect()
    lb.sim.closed = True
    lb._rx.clear()
    assert agi.read_response() is None and agi.hangup_seen
    with pytest.raises(AGISIGPIPEHangup):
        agi.get_result()


def test_construction_writes_nothing_to_stderr(capfd):
    connect()
    assert capfd.readouterr().err == ""


def test_works_outside_the_main_thread_where_pyst2_raises():
    errors: list[BaseException] = []

    def build() -> None:
        try:
            lb = Loopback(SimulatedAsterisk(answered=True))
            ConsentAGI(lb, lb)  # type: ignore[arg-type]
        except BaseException as exc:  # pragma: no cover - the failure we guard against
            errors.append(exc)

    t = threading.Thread(target=build)
    t.start()
    t.join()
    assert errors == []


def test_wait_for_digit_hangup_is_a_result_not_an_app_error():
    agi, _ = connect(dtmf="h@0.2")
    resp = agi.exchange(Command(("WAIT", "FOR", "DIGIT"), ("5000",)))
    assert resp is not None and resp.result == "-1"  # pyst2 as shipped raised AGIAppError here


def test_the_after_first_prompt_hook_runs_once_after_the_first_stream_file_is_sent():
    agi, lb = connect()
    seen: list[int] = []
    agi.after_first_prompt = lambda: seen.append(len(lb._rx))  # the answer not yet read
    agi.exchange(Command(("SET", "VARIABLE"), ("V", "1")))
    assert seen == []
    agi.exchange(Command(("STREAM", "FILE"), ("short", "12")))
    agi.exchange(Command(("STREAM", "FILE"), ("short", "12")))
    assert len(seen) == 1 and seen[0] > 0 and agi.after_first_prompt is None


def test_a_partial_line_before_eof_is_a_hangup_not_a_response():
    # Asterisk's answer cut off by EOF (the channel went away mid-write): not a key press.
    import io

    stdin = io.BytesIO(b"agi_request: consent-ivr.agi\nagi_channel: SIP/a-1\n\n200 result=50")
    agi = ConsentAGI(stdin, io.BytesIO(), trap_sighup=False)  # type: ignore[arg-type]
    assert agi.env["agi_channel"] == "SIP/a-1"
    assert agi.exchange(Command(("WAIT", "FOR", "DIGIT"), ("5000",))) is None
    assert agi.eof


def test_an_environment_cut_off_by_eof_is_not_taken_as_complete():
    import io

    stdin = io.BytesIO(b"agi_request: consent-ivr.agi\nagi_channel: SIP/a-1")
    agi = ConsentAGI(stdin, io.BytesIO(), trap_sighup=False)  # type: ignore[arg-type]
    assert agi.eof and "agi_channel" not in agi.env


def test_the_first_prompt_turns_the_collector_back_on():
    # the launcher disables gc for the start-up; a long call must not run without it
    import gc

    from consent_ivr.transports.process_agi import first_prompt_sent

    gc.disable()
    try:
        first_prompt_sent()
        assert gc.isenabled()
    finally:
        gc.enable()
