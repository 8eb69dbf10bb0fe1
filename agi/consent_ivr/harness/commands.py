"""The command table: one row per AGI command, like res_agi.c's ``commands[]``.

A row names the command's words, its handler, whether it may run on a dead channel (after the
hang-up notice), and its usage text (sent with a 520 reply when the handler returns
``RESULT_SHOWUSAGE``; None when Asterisk has none). :func:`find_command` picks the row for a
command line as res_agi.c's ``find_command`` does. The handlers themselves live in
``commands_timed.py`` and ``commands_instant.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consent_ivr.harness.commands_instant import InstantCommands
from consent_ivr.harness.commands_timed import TimedCommands

# Usage texts seen in the real captures (Asterisk 22.10.1 XML docs).

USAGE_SET_VARIABLE = "Sets a variable to the current channel."
USAGE_WAIT_FOR_DIGIT = (
    "Waits up to <replaceable>timeout</replaceable> milliseconds for channel to receive a DTMF "
    "digit. Returns <literal>-1</literal> on channel failure, <literal>0</literal> if no digit is "
    "received in the timeout, or the numerical value of the ascii of the digit if one is received. "
    "Use <literal>-1</literal> for the <replaceable>timeout</replaceable> value if you desire the "
    "call to block indefinitely."
)
USAGE_STREAM_FILE = (
    "Send the given file, allowing playback to be interrupted by the given digits, if any. "
    "Returns <literal>0</literal> if playback completes without a digit being pressed, or the "
    "ASCII numerical value of the digit if one was pressed, or <literal>-1</literal> on error or "
    "if the channel was disconnected. If musiconhold is playing before calling stream file it will "
    "be automatically stopped and will not be restarted after completion.\n"
    "It sets the following channel variables upon completion:\n"
    "<variable>PLAYBACKSTATUS</variable>: The status of the playback attempt as a text string.\n"
    "    <value>SUCCESS</value>\n"
    "    <value>FAILED</value>"
)
USAGE_GET_DATA = (
    "Stream the given <replaceable>file</replaceable>, and receive DTMF data.\n"
    "Returns the digits received from the channel at the other end."
)


class Commands(TimedCommands, InstantCommands):
    """The channel with every command's handler: what a row's handler is called with."""


#: A command handler: the channel and the command's words (command words included) in, a
#: ``RESULT_*`` code out; the reply is written with ``_send``.
Handler = Callable[[Commands, list[bytes]], int]


@dataclass(frozen=True)
class CommandSpec:
    """One row of the command table (like res_agi.c's ``commands[]``)."""

    words: tuple[bytes, ...]
    handler: Handler
    dead: bool
    usage: str | None = None


def _spec(words: str, handler: Handler, dead: bool, usage: str | None = None) -> CommandSpec:
    return CommandSpec(tuple(w.encode() for w in words.split()), handler, dead, usage)


C = Commands
#: The command table: words, handler, allowed in dead mode, usage text (None = not available).
COMMANDS: tuple[CommandSpec, ...] = (
    _spec("ANSWER", C._cmd_answer, False),
    _spec("ASYNCAGI BREAK", C._cmd_asyncagi_break, True),
    _spec("CHANNEL STATUS", C._cmd_channel_status, False),
    _spec("CONTROL STREAM FILE", C._cmd_control_stream_file, False),
    _spec("DATABASE DEL", C._cmd_database_del, True),
    _spec("DATABASE DELTREE", C._cmd_database_deltree, True),
    _spec("DATABASE GET", C._cmd_database_get, True),
    _spec("DATABASE PUT", C._cmd_database_put, True),
    _spec("EXEC", C._cmd_exec, True),
    _spec("GET DATA", C._cmd_get_data, False, USAGE_GET_DATA),
    _spec("GET FULL VARIABLE", C._cmd_get_full_variable, True),
    _spec("GET OPTION", C._cmd_get_option, False),
    _spec("GET VARIABLE", C._cmd_get_variable, True),
    _spec("GOSUB", C._cmd_gosub, False),
    _spec("HANGUP", C._cmd_hangup, False),
    _spec("NOOP", C._cmd_noop, True),
    _spec("SAY DIGITS", C._cmd_say_digits, False),
    _spec("SAY NUMBER", C._cmd_say_number, False),
    _spec("SET AUTOHANGUP", C._cmd_set_autohangup, False),
    _spec("SET CONTEXT", C._cmd_set_dialplan, False),
    _spec("SET EXTENSION", C._cmd_set_dialplan, False),
    _spec("SET MUSIC", C._cmd_set_music, False),
    _spec("SET PRIORITY", C._cmd_set_dialplan, False),
    _spec("SET VARIABLE", C._cmd_set_variable, True, USAGE_SET_VARIABLE),
    _spec("STREAM FILE", C._cmd_stream_file, False, USAGE_STREAM_FILE),
    _spec("VERBOSE", C._cmd_verbose, True),
    _spec("WAIT FOR DIGIT", C._cmd_wait_for_digit, False, USAGE_WAIT_FOR_DIGIT),
)
del C


def find_command(argv: Sequence[bytes]) -> CommandSpec | None:
    """``find_command``: the entry whose words all match the first words of argv (any case)."""
    for spec in COMMANDS:
        n = len(spec.words)
        if len(argv) >= n and all(argv[i].upper() == spec.words[i] for i in range(n)):
            return spec
    return None
