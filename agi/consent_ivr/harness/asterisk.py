"""A simulated Asterisk: the AGI/FastAGI peer that drives an AGI script with a scripted caller.

This module is the simulator's public face: everything tests, the CLI and the benchmarks import
from it is re-exported here from the module that does that one job.

Theory of operation
-------------------
:class:`SimulatedAsterisk` is a sans-I/O core. It owns a virtual clock counted in 8 kHz samples
("ticks"), the channel state (answered, hung up, dead mode, variables, AstDB) and a DTMF script.
It never reads a real clock and never touches a file descriptor:
:meth:`SimulatedAsterisk.handle_line` takes one command line from the AGI script and returns
what Asterisk would write back, as a list
of :data:`Output` items (``bytes`` to write, or a :class:`Control` marker: send SIGHUP now / close).
Two thin runners, :func:`run_process` (process AGI over pipes) and :func:`run_fastagi` (a TCP
client to a FastAGI server), move those bytes.

The wire rules are those of AGI-PROTOCOL.md (the authority) and of the real captures in
``tests/data/asterisk-captures``: lock-step request/response, the ``parse_args`` tokenizer,
510 / 511 / 520 replies, dead mode after the hang-up notice, the AGISTATUS rules, and the DTMF
rules of §5.5 (no buffering across commands; non-escape keys discarded during playback).

Each command that touches the channel runs as a sequence of *phases* (a playback, a digit wait),
each an interval of virtual time with the set of keys it accepts. The DTMF script's head event is
matched against the running phase; see :func:`parse_dtmf_script` for the script grammar.

Not modelled: a new command arriving while the previous one still runs (the "overlap" capture):
the core always finishes a command before it reads the next line, like a lock-step client.

Where each job lives (arrows point down: a module imports only the ones below it)
--------------------------------------------------------------------------------
* ``runners.py`` — :func:`run_process`, :func:`run_fastagi`, :class:`SimResult`,
  :class:`PeerTimeout` (``aclient.py`` is the asyncio twin of :func:`run_fastagi`,
  ``loopback.py`` an in-process wire for a client under test)
* ``core.py`` — :class:`SimulatedAsterisk`: the AGI session (line in, reply out, dispatch,
  510/511/520, dead mode, hang-up notices, AGISTATUS), :class:`SimulationError`
* ``commands.py`` — the command table (``COMMANDS``, :func:`find_command`, usage texts); its
  handlers in ``commands_timed.py`` (play, listen, wait) and ``commands_instant.py`` (the rest)
* ``channel.py`` — the channel state, the phases met by the DTMF script, variables; ``env.py``
  the env keys
* ``dtmf.py``, ``sounds.py``, ``transcript.py`` — the scripted caller, sound catalogs, the
  transcript entries
* ``live.py`` — the live caller (:class:`RealTimeCaller`): a person's keys and hang-up in real
  time (``speed`` times), and what the channel did, for an interactive front end
* ``wire.py``, ``clock.py``, ``tokenizer.py`` — the AGI words (reply lines, result codes, C number
  scanning), the tick, Asterisk's ``parse_args``
"""

from __future__ import annotations

from consent_ivr.harness.clock import TICKS_PER_SECOND
from consent_ivr.harness.commands import (
    COMMANDS,
    USAGE_GET_DATA,
    USAGE_SET_VARIABLE,
    USAGE_STREAM_FILE,
    USAGE_WAIT_FOR_DIGIT,
    CommandSpec,
    Handler,
    find_command,
)
from consent_ivr.harness.core import SimulatedAsterisk, SimulationError
from consent_ivr.harness.dtmf import ALL_DIGITS, DTMF_KEYS, DtmfEvent, DtmfScript, parse_dtmf_script
from consent_ivr.harness.env import DEFAULT_ENV, ENV_KEYS
from consent_ivr.harness.live import Activity, LiveEvent, LiveInput, Notice, RealTimeCaller
from consent_ivr.harness.runners import Direction, PeerTimeout, SimResult, run_fastagi, run_process
from consent_ivr.harness.sounds import SoundCatalog, WavSoundCatalog, mapping_catalog
from consent_ivr.harness.transcript import (
    AnswerEntry,
    CommandEntry,
    HangupEntry,
    KeyEntry,
    PlayEntry,
    SetEntry,
    TranscriptEntry,
    WaitEntry,
    format_transcript,
)
from consent_ivr.harness.wire import (
    AGI_LINE_MAX,
    DEAD_511,
    HANGUP_LINE,
    RESULT_FAILURE,
    RESULT_SHOWUSAGE,
    RESULT_SUCCESS,
    UNKNOWN_510,
    USAGE_NOT_AVAILABLE,
    AgiStatus,
    Control,
    Output,
    atoi,
    scan_float,
    scan_int,
)

__all__ = [
    "AGI_LINE_MAX",
    "ALL_DIGITS",
    "COMMANDS",
    "DEAD_511",
    "DEFAULT_ENV",
    "DTMF_KEYS",
    "ENV_KEYS",
    "HANGUP_LINE",
    "RESULT_FAILURE",
    "RESULT_SHOWUSAGE",
    "RESULT_SUCCESS",
    "TICKS_PER_SECOND",
    "UNKNOWN_510",
    "USAGE_GET_DATA",
    "USAGE_NOT_AVAILABLE",
    "USAGE_SET_VARIABLE",
    "USAGE_STREAM_FILE",
    "USAGE_WAIT_FOR_DIGIT",
    "Activity",
    "AgiStatus",
    "AnswerEntry",
    "CommandEntry",
    "CommandSpec",
    "Control",
    "Direction",
    "DtmfEvent",
    "DtmfScript",
    "Handler",
    "HangupEntry",
    "KeyEntry",
    "LiveEvent",
    "LiveInput",
    "Notice",
    "Output",
    "PeerTimeout",
    "PlayEntry",
    "RealTimeCaller",
    "SetEntry",
    "SimResult",
    "SimulatedAsterisk",
    "SimulationError",
    "SoundCatalog",
    "TranscriptEntry",
    "WaitEntry",
    "WavSoundCatalog",
    "atoi",
    "find_command",
    "format_transcript",
    "mapping_catalog",
    "parse_dtmf_script",
    "run_fastagi",
    "run_process",
    "scan_float",
    "scan_int",
]
