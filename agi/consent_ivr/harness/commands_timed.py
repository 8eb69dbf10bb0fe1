"""The AGI commands that take time on the channel: they play, listen for keys or wait.

ANSWER, STREAM FILE, CONTROL STREAM FILE, GET DATA, GET OPTION, WAIT FOR DIGIT, SAY DIGITS,
SAY NUMBER and EXEC (with the applications Playback, Wait, Set, Verbose and NoOp). Each handler
takes the command's words (``argv``, the command words included), writes its reply with
``_send`` and returns a ``RESULT_*`` code, like res_agi.c's ``handle_*`` functions; the rows of
the command table (``commands.py``) point at them.
"""

from __future__ import annotations

from collections.abc import Callable

from consent_ivr.harness.channel import Channel, Phase, PhaseOutcome
from consent_ivr.harness.clock import TICKS_PER_SECOND, ms_to_ticks
from consent_ivr.harness.dtmf import ALL_DIGITS, DTMF_KEYS
from consent_ivr.harness.transcript import AnswerEntry
from consent_ivr.harness.wire import (
    RESULT_FAILURE,
    RESULT_SHOWUSAGE,
    RESULT_SUCCESS,
    atoi,
    dec,
    enc,
    scan_float,
    scan_int,
)


class TimedCommands(Channel):
    """The handlers of the commands that take time on the channel."""

    def _cmd_answer(self, argv: list[bytes]) -> int:
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        if not self.answered:
            start = self._tick
            outcome = self._run_phase(
                Phase(start, start + self.answer_ticks, frozenset(), False, False, "ANSWER")
            )
            if outcome.what == "hangup":
                self._send(b"200 result=-1\n")
                return RESULT_FAILURE
            self.answered = True
            self._record(AnswerEntry(self.now))
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _stream(
        self, label: str, file: str, escape: bytes, offset: int
    ) -> tuple[int, int, int | None]:
        """Common part of STREAM FILE / CONTROL STREAM FILE: (result, endpos, total or None)."""
        total = self.sounds(file)
        if total is None:
            self._missing(file, label, offset)
            return -1, offset, None
        accepts = frozenset(dec(escape)) & frozenset(DTMF_KEYS)
        outcome, endpos = self._play(
            file, total, offset, accepts, input_point=accepts >= ALL_DIGITS, label=label
        )
        if outcome.what == "key":
            assert outcome.key is not None
            return ord(outcome.key), endpos, total
        if outcome.what == "hangup":
            return -1, endpos, total
        return 0, endpos, total

    def _cmd_stream_file(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        offset = 0
        if len(argv) == 5:
            scanned = scan_int(argv[4])
            if scanned is None:
                return RESULT_SHOWUSAGE
            offset = max(scanned, 0)
        result, endpos, total = self._stream("STREAM FILE", dec(argv[2]), argv[3], offset)
        self._send(f"200 result={result} endpos={endpos}\n".encode())
        if total is None:
            return RESULT_FAILURE
        self.variables["PLAYBACKSTATUS"] = "SUCCESS" if result == 0 else "FAILED"
        return RESULT_SUCCESS if result >= 0 else RESULT_FAILURE

    def _cmd_control_stream_file(self, argv: list[bytes]) -> int:
        if len(argv) < 5 or len(argv) > 10:
            return RESULT_SHOWUSAGE
        offset_ms = max(atoi(argv[9]), 0) if len(argv) > 9 else 0
        offset = ms_to_ticks(offset_ms)
        result, endpos, total = self._stream("CONTROL STREAM FILE", dec(argv[3]), argv[4], offset)
        if total is None:
            end_ms = offset_ms
        elif result == 0:
            end_ms = -1
        else:
            end_ms = endpos * 1000 // TICKS_PER_SECOND
        self._send(f"200 result={result} endpos={end_ms}\n".encode())
        if total is not None:
            self.variables["CPLAYBACKSTATUS"] = (
                "SUCCESS" if result == 0 else "USERSTOPPED" if result > 0 else "ERROR"
            )
        return RESULT_SUCCESS if result >= 0 else RESULT_FAILURE

    def _cmd_get_data(self, argv: list[bytes]) -> int:
        if len(argv) < 3:
            return RESULT_SHOWUSAGE
        timeout = atoi(argv[3]) if len(argv) >= 4 else 0
        maxdigits = atoi(argv[4]) if len(argv) >= 5 else 1024
        file = dec(argv[2])
        total = self.sounds(file)
        if total is None:
            self._missing(file, "GET DATA")
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        if maxdigits <= 0:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        if timeout > 0:
            first_ms = later_ms = timeout
        elif timeout < 0:
            first_ms = later_ms = 1_000_000_000
        else:
            first_ms, later_ms = 6000, 2000
        every = frozenset(DTMF_KEYS)
        outcome, _ = self._play(file, total, 0, every, input_point=True, label="GET DATA")
        digits = ""
        if outcome.what == "end":
            outcome = self._wait(first_ms, every, "GET DATA")
        while True:
            if outcome.what == "hangup":
                self._send(b"200 result=-1\n")
                return RESULT_SUCCESS
            if outcome.what == "end":
                self._send(enc(f"200 result={digits} (timeout)\n"))
                return RESULT_SUCCESS
            assert outcome.key is not None
            if outcome.key == "#":
                break
            digits += outcome.key
            if len(digits) >= maxdigits:
                break
            outcome = self._wait(later_ms, every, "GET DATA")
        self._send(enc(f"200 result={digits}\n"))
        return RESULT_SUCCESS

    def _cmd_get_option(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        file = dec(argv[2])
        escape = frozenset(dec(argv[3])) & frozenset(DTMF_KEYS)
        timeout = atoi(argv[4]) if len(argv) == 5 else 5000
        total = self.sounds(file)
        if total is None:
            self._missing(file, "GET OPTION")
            self._send(b"200 result=-1 endpos=0\n")
            return RESULT_FAILURE
        outcome, endpos = self._play(file, total, 0, escape, input_point=True, label="GET OPTION")
        if outcome.what == "key":
            assert outcome.key is not None
            self._send(f"200 result={ord(outcome.key)} endpos={endpos}\n".encode())
            return RESULT_SUCCESS
        if outcome.what == "hangup":
            self._send(f"200 result=-1 endpos={endpos}\n".encode())
            return RESULT_FAILURE
        result = 0
        if timeout != 0:
            waited = self._wait(timeout, frozenset(DTMF_KEYS), "GET OPTION")
            if waited.what == "key" and waited.key is not None and waited.key in escape:
                result = ord(waited.key)
        self._send(f"200 result={result} endpos={endpos}\n".encode())
        return RESULT_SUCCESS

    def _cmd_wait_for_digit(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        timeout = scan_int(argv[3])
        if timeout is None:
            return RESULT_SHOWUSAGE
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        if timeout == 0:
            self._send(b"200 result=0\n")
            return RESULT_SUCCESS
        outcome = self._wait(timeout, frozenset(DTMF_KEYS), "WAIT FOR DIGIT")
        return self._reply_key(outcome)

    def _reply_key(self, outcome: PhaseOutcome) -> int:
        """WAIT FOR DIGIT's and SAY's answer: -1 on a hang-up, else the key's code (0: none)."""
        if outcome.what == "hangup":
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        result = ord(outcome.key) if outcome.key is not None else 0
        self._send(f"200 result={result}\n".encode())
        return RESULT_SUCCESS

    def _say(self, text: str, escape: bytes, label: str) -> int:
        if self.hung_up:
            self._send(b"200 result=-1\n")
            return RESULT_FAILURE
        total = len(text) * 6400  # 0.8 s per digit
        accepts = frozenset(dec(escape)) & frozenset(DTMF_KEYS)
        outcome, _ = self._play(f"say:{text}", total, 0, accepts, input_point=False, label=label)
        return self._reply_key(outcome)

    def _cmd_say_digits(self, argv: list[bytes]) -> int:
        if len(argv) != 4 or scan_int(argv[2]) is None:
            return RESULT_SHOWUSAGE
        return self._say(dec(argv[2]), argv[3], "SAY DIGITS")

    def _cmd_say_number(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        number = scan_int(argv[2])
        if number is None:
            return RESULT_SHOWUSAGE
        return self._say(str(abs(number)), argv[3], "SAY NUMBER")

    def _cmd_exec(self, argv: list[bytes]) -> int:
        if len(argv) < 2:
            return RESULT_SHOWUSAGE
        app = dec(argv[1]).lower()
        data = dec(argv[2]) if len(argv) >= 3 else ""
        apps: dict[str, Callable[[str], int]] = {
            "verbose": lambda _d: 0,
            "noop": lambda _d: 0,
            "set": self._app_set,
            "playback": self._app_playback,
            "wait": self._app_wait,
        }
        runner = apps.get(app)
        res = -2 if runner is None else runner(data)
        self._send(f"200 result={res}\n".encode())
        return res

    def _app_set(self, data: str) -> int:
        name, sep, value = data.partition("=")
        if sep:
            self.set_variable(name.strip(), value)
        return 0

    def _app_playback(self, data: str) -> int:
        files = data.split(",", 1)[0].replace('"', "")
        status = "SUCCESS"
        for file in files.split("&"):
            if self.hung_up:
                return -1
            total = self.sounds(file)
            if total is None:
                self._missing(file, "EXEC Playback")
                status = "FAILED"
                continue
            outcome, _ = self._play(
                file, total, 0, frozenset(), input_point=False, label="EXEC Playback"
            )
            if outcome.what == "hangup":
                return -1
        self.variables["PLAYBACKSTATUS"] = status
        return 0

    def _app_wait(self, data: str) -> int:
        seconds = scan_float(enc(data))
        if seconds is None or seconds <= 0:
            return 0
        if self.hung_up:
            return -1
        start = self._tick
        end = start + round(seconds * TICKS_PER_SECOND)
        outcome = self._run_phase(Phase(start, end, frozenset(), False, False, "EXEC Wait"))
        return -1 if outcome.what == "hangup" else 0
