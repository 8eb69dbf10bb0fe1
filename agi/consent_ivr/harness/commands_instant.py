"""The AGI commands that take no time: variables, AstDB, channel status, hang-up and settings.

SET VARIABLE, GET VARIABLE, GET FULL VARIABLE, CHANNEL STATUS, HANGUP, VERBOSE, NOOP, the DATABASE
commands, SET MUSIC, SET AUTOHANGUP, GOSUB, SET CONTEXT / EXTENSION / PRIORITY and ASYNCAGI BREAK.
Each handler takes the command's words (``argv``, the command words included), writes its reply
with ``_send`` and returns a ``RESULT_*`` code, like res_agi.c's ``handle_*`` functions; the rows
of the command table (``commands.py``) point at them.
"""

from __future__ import annotations

from consent_ivr.harness.channel import Channel
from consent_ivr.harness.clock import TICKS_PER_SECOND
from consent_ivr.harness.wire import RESULT_SHOWUSAGE, RESULT_SUCCESS, dec, enc, scan_float


class InstantCommands(Channel):
    """The handlers of the commands that take no time on the channel."""

    def _cmd_set_variable(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        self.set_variable(dec(argv[2]), dec(argv[3]))
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_get_variable(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        value = self._lookup(dec(argv[2]))
        if value is None:
            self._send(b"200 result=0\n")
        else:
            self._send(b"200 result=1 (" + enc(value)[:1023] + b")\n")
        return RESULT_SUCCESS

    def _cmd_get_full_variable(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        if len(argv) == 5 and dec(argv[4]) != self.env["agi_channel"]:
            self._send(b"200 result=0\n")
            return RESULT_SUCCESS
        self._send(b"200 result=1 (" + enc(self.substitute(dec(argv[3]))) + b")\n")
        return RESULT_SUCCESS

    def _cmd_channel_status(self, argv: list[bytes]) -> int:
        if len(argv) < 2 or len(argv) > 3:
            return RESULT_SHOWUSAGE
        if len(argv) == 3 and dec(argv[2]) != self.env["agi_channel"]:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        self._send(b"200 result=6\n" if self.answered else b"200 result=4\n")
        return RESULT_SUCCESS

    def _cmd_hangup(self, argv: list[bytes]) -> int:
        if len(argv) > 2:
            return RESULT_SHOWUSAGE
        if len(argv) == 2 and dec(argv[1]) != self.env["agi_channel"]:
            self._send(b"200 result=-1\n")
            return RESULT_SUCCESS
        self._hangup(self._tick, "agi")
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_verbose(self, argv: list[bytes]) -> int:
        if len(argv) < 2:
            return RESULT_SHOWUSAGE
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_noop(self, argv: list[bytes]) -> int:
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_database_get(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        value = self.database.get((dec(argv[2]), dec(argv[3])))
        if value is None:
            self._send(b"200 result=0\n")
        else:
            self._send(b"200 result=1 (" + enc(value) + b")\n")
        return RESULT_SUCCESS

    def _cmd_database_put(self, argv: list[bytes]) -> int:
        if len(argv) != 5:
            return RESULT_SHOWUSAGE
        self.database[(dec(argv[2]), dec(argv[3]))] = dec(argv[4])
        self._send(b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_database_del(self, argv: list[bytes]) -> int:
        if len(argv) != 4:
            return RESULT_SHOWUSAGE
        existed = self.database.pop((dec(argv[2]), dec(argv[3])), None) is not None
        self._send(b"200 result=1\n" if existed else b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_database_deltree(self, argv: list[bytes]) -> int:
        if len(argv) < 3 or len(argv) > 4:
            return RESULT_SHOWUSAGE
        family = dec(argv[2])
        tree = dec(argv[3]) if len(argv) == 4 else None
        doomed = [
            key
            for key in self.database
            if key[0] == family
            and (tree is None or key[1] == tree or key[1].startswith(tree + "/"))
        ]
        for key in doomed:
            del self.database[key]
        # Inverted on purpose: Asterisk answers 0 when something was deleted (§5).
        self._send(b"200 result=0\n" if doomed else b"200 result=1\n")
        return RESULT_SUCCESS

    def _cmd_set_music(self, argv: list[bytes]) -> int:
        if len(argv) < 3:
            return RESULT_SHOWUSAGE
        mode = argv[2][:3].lower()
        if mode.startswith(b"on"):
            self.music_on = True
        elif mode.startswith(b"off"):
            self.music_on = False
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_set_autohangup(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        seconds = scan_float(argv[2])
        if seconds is None:
            return RESULT_SHOWUSAGE
        self._autohangup_tick = (
            self._tick + round(seconds * TICKS_PER_SECOND) if seconds > 0 else None
        )
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_gosub(self, argv: list[bytes]) -> int:
        if len(argv) < 4 or len(argv) > 5:
            return RESULT_SHOWUSAGE
        self._send(b"100 result=0 Trying...\n")
        self._send(b"200 result=0 Gosub complete\n")
        return RESULT_SUCCESS

    def _cmd_set_dialplan(self, argv: list[bytes]) -> int:
        if len(argv) != 3:
            return RESULT_SHOWUSAGE
        key = {
            b"CONTEXT": "agi_context",
            b"EXTENSION": "agi_extension",
            b"PRIORITY": "agi_priority",
        }[argv[1].upper()]
        self.env[key] = dec(argv[2])
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS

    def _cmd_asyncagi_break(self, argv: list[bytes]) -> int:
        self._send(b"200 result=0\n")
        return RESULT_SUCCESS
