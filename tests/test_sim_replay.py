"""Replay the real Asterisk 22.10.1 captures through the simulated Asterisk, byte for byte.

For every capture in ``tests/data/asterisk-captures`` listed in ``SCENARIOS``, the simulator is
configured from the capture's env block (and must regenerate that block byte for byte), gets a
sound catalog with the lengths implied by the capture and a timed DTMF script derived from the
capture's timing, is fed the exact ``S>A`` bytes, and must produce the exact ``A>S`` bytes.

How notices are compared (the capture logs when the *script read* something, §INDEX):

* process AGI: the SIGHUP is logged when the signal arrives, which may be before the script has
  read the response Asterisk wrote first (INDEX.md: "the order of signal and response is a
  race"). Per command exchange the SIGHUP markers are therefore compared as "after this
  exchange's response lines"; which exchange a SIGHUP belongs to is compared exactly.
* FastAGI: a ``HANGUP`` line is only seen by the lab script at its next read, i.e. after it sent
  its next command. The whole ``A>S`` byte stream (env block, responses and ``HANGUP`` lines, in
  order) is compared exactly, plus the response lines of each exchange.
* The final notice Asterisk sends when the script ends (SIGHUP / ``HANGUP``) is not in the
  captures (the script has exited or closed the socket); it is asserted separately.
* The script's own pauses (``sleep`` in the lab script: ``between``, ``hangup``, ``hangup_idle``)
  are replayed with :meth:`SimulatedAsterisk.idle` for every gap of 0.1 s or more between a
  response and the next command.

Durations are compared too: each command's virtual duration must be within 0.15 s of the real
one (SAY DIGITS/NUMBER are modelled as 0.8 s per digit; real ones took 0.83-0.85 s).

Not replayed:

* ``*-overlap-overlap.log`` (a new command while a playback/wait runs): not modelled; the core is
  strictly lock-step and always answers a command before reading the next line.
* ``proc-test-sh-*.log``: a different log format (wall clock, unquoted text) from another lab
  script; the same behaviours are covered by the replayed captures.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_AGI_DIR = Path(__file__).resolve().parents[1] / "agi"
if str(_AGI_DIR) not in sys.path:
    sys.path.insert(0, str(_AGI_DIR))

from consent_ivr.harness.asterisk import (  # noqa: E402
    CommandEntry,
    Control,
    Output,
    SimulatedAsterisk,
)

#: The captures, copied into the repository (INDEX.md there describes each one).
TRANSCRIPTS = Path(__file__).resolve().parent / "data" / "asterisk-captures"

#: Lengths in 8 kHz samples implied by the captures: hello plays to endpos=5732; enter-digits
#: makes "GET DATA enter-digits 1500 4" time out after 2.855 s = 1.355 s of prompt + 1.5 s;
#: consent-prompt is the 11 s notice (endpos 28160 at 3.52 s in the hangup capture).
SOUNDS = {"hello": 5732, "enter-digits": 10840, "consent-prompt": 88000}

#: capture stem -> (timed DTMF script in virtual seconds, expected AGISTATUS).
#: ANSWER takes 0.5 s, so virtual time tracks capture time; a key that interrupts a playback is
#: placed at start + endpos/8000 so the endpos comes out exactly.
SCENARIOS: dict[str, tuple[str, str]] = {
    # No DTMF; the missing-file STREAM FILE makes the final AGISTATUS FAILURE.
    "basic-basic": ("", "FAILURE"),
    # 1WW2WW345#WW9: '1' cuts consent-prompt at endpos 13760 (0.5 + 1.72 s), '2' ends the
    # WAIT FOR DIGIT at ~4.55 s, '345#' end GET DATA at ~7.95 s, '9' comes 2.35 s into
    # GET OPTION (after the 0.72 s prompt); the last WAIT FOR DIGIT 3000 times out.
    "digits-digits": ("1@2.22, 2@4.55, 3@7.0, 4@7.3, 5@7.6, #@7.95, 9@10.3", "SUCCESS"),
    # 12345: GET DATA max 3 gets 123 at ~2.9 s; '4' and '5' 0.35 s into each WAIT FOR DIGIT.
    "getdata_maxdigits-getdata_maxdigits": ("1@2.2, 2@2.55, 3@2.9, 4@3.25, 5@3.6", "SUCCESS"),
    # '*' cuts consent-prompt at endpos 13760, '#' and 'A' 1.35 s into each WAIT FOR DIGIT 5000.
    "star_pound-star_pound": ("*@2.22, #@3.57, A@4.92", "SUCCESS"),
    # '1','2' then silence: GET DATA 3000 times out with 12; '5' (not an escape digit) ends
    # GET OPTION's post-prompt wait 3.35 s after it started.
    "partial-partial": ("1@2.2, 2@2.55, 5@8.9", "SUCCESS"),
    # The '1' at ~1 s falls while the script sleeps 4 s with no command running: dropped.
    "between-between": ("1@1.0", "SUCCESS"),
    # The caller hangs up 3.52 s into consent-prompt: endpos 28160.
    "hangup-hangup": ("h@4.02", "HANGUP"),
    "hangup_wait-hangup_wait": ("h@3.0", "HANGUP"),
    # Hang-up at ~3 s while the script sleeps 5 s.
    "hangup_idle-hangup_idle": ("h@3.0", "HANGUP"),
    "agi_hangup-agi_hangup": ("", "HANGUP"),
    "exit_early-exit_early": ("", "SUCCESS"),
    "crlf-crlf": ("", "SUCCESS"),
    "quoting-quoting": ("", "SUCCESS"),
    "consent-consent": ("2@2.22", "SUCCESS"),
    "env-args1": ("", "SUCCESS"),
    # FastAGI-only variants of the consent flow.
    "consent-callfile": ("1@2.22", "SUCCESS"),
    "consent-cli": ("2@2.22", "SUCCESS"),
    "consent-ami-unquoted-comma": ("1@2.22", "SUCCESS"),
    # Real SIP call with an RFC 2833 '1': endpos 13280 = 1.66 s after the 0.5 s ANSWER.
    "consent-sip-rfc2833": ("1@2.16", "SUCCESS"),
}

_LINE_RE = re.compile(r"^\s*(\d+\.\d+)\s+(A>S|S>A|##)\s?(.*)$")
_REPR_RE = re.compile(r"""^(b'(?:[^'\\]|\\.)*'|b"(?:[^"\\]|\\.)*")""")
SIGHUP_ITEM = "SIGHUP"


@dataclass
class Exchange:
    """One command the script sent and what it read or received until its next command."""

    t: float
    line: bytes
    items: list[tuple[float, bytes | str]] = field(default_factory=list)

    def last_byte_time(self) -> float:
        times = [t for t, item in self.items if isinstance(item, bytes) and item != b"HANGUP\n"]
        return times[-1] if times else self.t


@dataclass
class Capture:
    name: str
    network: bool
    header: list[bytes]
    exchanges: list[Exchange]

    def header_bytes(self) -> bytes:
        return b"".join(self.header)


def load_capture(path: Path) -> Capture:
    header: list[bytes] = []
    exchanges: list[Exchange] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        match = _LINE_RE.match(raw)
        if match is None:
            continue
        t, direction, rest = float(match.group(1)), match.group(2), match.group(3)
        if direction == "##":
            if "SIGNAL SIGHUP" in rest:
                assert exchanges, f"{path.name}: SIGHUP before any command"
                exchanges[-1].items.append((t, SIGHUP_ITEM))
            continue
        literal = _REPR_RE.match(rest)
        assert literal is not None, f"{path.name}: cannot parse {raw!r}"
        data = ast.literal_eval(literal.group(1))
        assert isinstance(data, bytes)
        if direction == "S>A":
            exchanges.append(Exchange(t, data))
        elif exchanges:
            exchanges[-1].items.append((t, data))
        else:
            header.append(data)
    return Capture(path.name, path.name.startswith("fast-"), header, exchanges)


def sim_from_header(capture: Capture, dtmf: str) -> SimulatedAsterisk:
    env: dict[str, str] = {}
    args: list[str] = []
    network = False
    script: str | None = None
    request = ""
    for line in capture.header:
        if line == b"\n":
            continue
        key, sep, value = line.decode("utf-8").rstrip("\n").partition(": ")
        assert sep, f"{capture.name}: env line without ': ': {line!r}"
        if key == "agi_network":
            network = value == "yes"
        elif key == "agi_network_script":
            script = value
        elif key == "agi_request":
            request = value
        elif key.startswith("agi_arg_"):
            assert key == f"agi_arg_{len(args) + 1}"
            args.append(value)
        else:
            env[key] = value
    return SimulatedAsterisk(
        env=env,
        request=request,
        args=args,
        network=network,
        network_script=script,
        dtmf=dtmf,
        sounds=SOUNDS,
    )


def _canonical_proc(items: list[Output] | list[bytes | str]) -> list[bytes | str]:
    """Response bytes in order, then the SIGHUP markers (their order vs. reads is a race)."""
    out: list[bytes | str] = [i for i in items if isinstance(i, bytes)]
    out += [SIGHUP_ITEM for i in items if i == SIGHUP_ITEM or i is Control.SIGHUP]
    return out


#: Variants captured only over FastAGI (call file, CLI, AMI and real SIP origination).
FAST_ONLY = {"consent-callfile", "consent-cli", "consent-ami-unquoted-comma", "consent-sip-rfc2833"}


def _cases() -> list[tuple[str, str]]:
    modes = {stem: ("fast",) if stem in FAST_ONLY else ("proc", "fast") for stem in SCENARIOS}
    return [(mode, stem) for stem in SCENARIOS for mode in modes[stem]]


def _capture_path(mode: str, stem: str) -> Path:
    if not TRANSCRIPTS.is_dir():
        pytest.fail(
            f"the real Asterisk captures are missing: expected the folder {TRANSCRIPTS} "
            "(tests/data/asterisk-captures in the repository)"
        )
    return TRANSCRIPTS / f"{mode}-{stem}.log"


@dataclass
class Replay:
    capture: Capture
    sim: SimulatedAsterisk
    turns: list[list[Output]]
    idle_outputs: list[Output]
    final: list[Output]


def replay(capture: Capture, dtmf: str) -> Replay:
    sim = sim_from_header(capture, dtmf)
    turns: list[list[Output]] = []
    all_idle: list[Output] = []
    previous_end = capture.exchanges[0].t if capture.exchanges else 0.0
    for exchange in capture.exchanges:
        gap = exchange.t - previous_end
        if gap >= 0.1:
            idle = sim.idle(gap)
            all_idle += idle
            if turns:
                turns[-1] += idle  # what arrived while the script slept after that exchange
            else:
                turns.append(list(idle))
        turns.append(list(sim.handle_line(exchange.line)))
        previous_end = exchange.last_byte_time()
    return Replay(capture, sim, turns, all_idle, sim.finish())


@pytest.mark.parametrize(("mode", "stem"), _cases())
def test_replay_capture_byte_exact(mode: str, stem: str) -> None:
    path = _capture_path(mode, stem)
    if not path.exists():
        pytest.fail(f"capture {path} is missing")
    dtmf, status = SCENARIOS[stem]
    capture = load_capture(path)
    assert capture.exchanges, f"{path.name}: no commands parsed"
    result = replay(capture, dtmf)
    sim = result.sim

    assert sim.env_block() == capture.header_bytes(), "env block differs from the capture"

    if mode == "proc":
        for exchange, turn in zip(
            capture.exchanges, result.turns[-len(capture.exchanges) :], strict=True
        ):
            expected = _canonical_proc([item for _, item in exchange.items])
            assert _canonical_proc(turn) == expected, f"exchange {exchange.line!r}"
        assert result.final == [Control.SIGHUP]
    else:
        expected_stream = capture.header_bytes() + b"".join(
            item for ex in capture.exchanges for _, item in ex.items if isinstance(item, bytes)
        )
        actual_stream = sim.env_block() + b"".join(
            out for turn in result.turns for out in turn if isinstance(out, bytes)
        )
        assert actual_stream == expected_stream
        for exchange, turn in zip(
            capture.exchanges, result.turns[-len(capture.exchanges) :], strict=True
        ):
            want = [i for _, i in exchange.items if isinstance(i, bytes) and i != b"HANGUP\n"]
            got = [o for o in turn if isinstance(o, bytes) and o != b"HANGUP\n"]
            assert got == want, f"exchange {exchange.line!r}"
        assert not any(isinstance(o, Control) for turn in result.turns for o in turn)
        assert result.final == [b"HANGUP\n"]

    # A notice never precedes the response of the command during which the hang-up happened.
    for turn in result.turns:
        kinds = [o is Control.SIGHUP or o == b"HANGUP\n" for o in turn]
        if True in kinds:
            first = kinds.index(True)
            assert all(kinds[first:]) or all(not k for k in kinds[first + 1 :]), turn

    assert sim.agistatus == status

    commands = [e for e in sim.transcript if isinstance(e, CommandEntry)]
    assert len(commands) == len(capture.exchanges)
    for entry, exchange in zip(commands, capture.exchanges, strict=True):
        real = exchange.last_byte_time() - exchange.t
        simulated = entry.done_at - entry.at
        assert abs(real - simulated) <= 0.15, (
            f"{exchange.line!r}: took {simulated:.3f} s virtual vs {real:.3f} s real"
        )


def test_every_capture_in_the_folder_is_replayed_or_documented() -> None:
    folder = _capture_path("proc", "basic-basic").parent
    documented = {"proc-overlap-overlap.log", "fast-overlap-overlap.log"}
    replayed = {f"{mode}-{stem}.log" for mode, stem in _cases()}
    for path in sorted(folder.glob("*.log")):
        name = path.name
        if name.startswith(("proc-test-sh-", "asterisk-side-", "sip-")):
            continue
        assert name in replayed | documented, f"{name} is neither replayed nor documented"


def test_hangup_capture_dead_mode_variables_survive() -> None:
    capture = load_capture(_capture_path("fast", "hangup-hangup"))
    result = replay(capture, "h@4.02")
    sim = result.sim
    assert sim.hung_up and sim.dead
    assert sim.variables["CONSENT"] == "after-hangup"
    assert sim.database[("lab", "afterhangup")] == "yes"
    assert sim.hangup_at == pytest.approx(4.02)


def test_quoting_capture_values_as_asterisk_stored_them() -> None:
    capture = load_capture(_capture_path("proc", "quoting-quoting"))
    sim = replay(capture, "").sim
    assert sim.variables["Q1"] == "a b"
    assert sim.variables["Q4"] == "unterminated value"
    assert sim.variables["Q5"] == "tab\there"
    assert sim.variables["Q5b"] == "tabthere"
    assert sim.variables["Q6"] == "back\\slash"
    assert sim.variables["Q9"] == "midquote"
    assert sim.variables["Q10"] == "xy"
    assert sim.variables["Q11"] == "café"
    assert sim.variables["Q13"] == "${CALLERID(num)}"
    assert "Q2" not in sim.variables and "Q3" not in sim.variables


def test_the_codec_accepts_every_answer_asterisk_sent_in_the_captures() -> None:
    # The strict response grammar (agicodec) against real Asterisk 22 output: every line it
    # wrote after the env block, including usage blocks, HANGUP lines, GET DATA's key strings
    # and endpos values, parses; every 200 result of a command other than GET DATA is an int.
    from consent_ivr.protocol.codec import ResponseReader

    folder = _capture_path("proc", "basic-basic").parent
    checked = 0
    for path in sorted(folder.glob("*.log")):
        capture = load_capture(path)
        reader = ResponseReader()
        for exchange in capture.exchanges:
            words = exchange.line.decode("utf-8").split()
            reader.expect(words)
            for _t, item in exchange.items:
                if not isinstance(item, bytes):
                    continue
                resp = reader.feed(item.decode("utf-8"))
                checked += 1
                if resp is not None and resp.ok and not reader.digits:
                    resp.result_int()
    assert checked > 400  # 406 lines in 42 captures
