"""`consent-ivr simulate FLOW --interactive`: try a flow live, the keys typed as the call runs.

The call runs through the real AGI script against the simulated Asterisk with a live caller
(``harness/live.py``): call time passes with real time (``--speed`` times), a key typed is DTMF
at that moment, ``h`` hangs up and ``q`` quits. The transcript scrolls above a status area that
shows the prompt playing (its text so far and a progress bar) or the wait for a key; at the end
come the channel variables and a summary of the evidence record. A key the engine took is shown
with what it made of it (`cli/keyfate.py`, from the AGI script's log); keys typed before the
call is ready are neither echoed nor used (`cli/typeahead.py`). ``--audio`` plays each prompt
(`cli/player.py`). The terminal is prompt_toolkit's; this module only says what to show.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from prompt_toolkit.application import Application
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.shortcuts import print_formatted_text

from consent_ivr.cli import typeahead
from consent_ivr.cli.keyfate import EngineKeys, key_fate
from consent_ivr.cli.player import Player
from consent_ivr.harness.asterisk import (
    TICKS_PER_SECOND,
    Activity,
    AnswerEntry,
    HangupEntry,
    KeyEntry,
    Notice,
    PlayEntry,
    RealTimeCaller,
    SetEntry,
    WaitEntry,
)

Record = dict[str, Any]
DTMF_TYPED = "0123456789*#"
KEYS_HELP = "keys: 0-9 * # = DTMF at that moment   h = hang up   q = quit"
NO_PLAYER = "audio: no player found (sox's play or aplay); the prompts are shown, not played"
BAR_WIDTH = 30
#: How long (real seconds) a key the engine took waits for its meaning from the AGI script's
#: log before it is shown without one (a script that logs nothing must not stall the view).
FATE_WAIT = 2.0


#: Places the call with the live caller given; returns what to print at its end (the summary)
#: and the AGI script's stderr.
PlaceCall = Callable[[RealTimeCaller], tuple[str, str]]


class LiveCall:
    """One interactive call: the worker thread that runs it and what the screen shows of it."""

    def __init__(
        self,
        place: PlaceCall,
        texts: Mapping[str, tuple[str, str]],
        speed: float,
        player: Player | None,
        key_log: Path | None = None,
        withdrawal: bool = False,
    ) -> None:
        self.place = place
        self.withdrawal = withdrawal  # a withdrawal flow: its keys in its own words
        self.texts = texts
        self.speed = speed
        self.player = player
        self.fates = EngineKeys(key_log) if key_log is not None else None
        self.caller = RealTimeCaller(speed)
        self._backlog: deque[Notice] = deque()  # notices not yet shown: behind a key's meaning
        self._held_since: float | None = None
        self.ended: tuple[str, str] | None = None
        self.failure: Exception | None = None
        self.worker = threading.Thread(target=self._run, name="live-call", daemon=True)

    def _run(self) -> None:
        try:
            self.ended = self.place(self.caller)
        except Exception as exc:  # shown after the screen closes, as one line
            self.failure = exc

    # ---- the scrolling transcript ------------------------------------------------------------

    def transcript(self, finished: bool = False) -> list[str]:
        """The lines to show now, in call order. A key the engine took is shown with what the
        engine made of it (its ``call.key`` log event, in the words of `key_fate`); the notices
        after it wait for that event, at most `FATE_WAIT` s (then the key is shown as taken)."""
        self._backlog.extend(self.caller.notices())
        out: list[str] = []
        while self._backlog:
            notice = self._backlog[0]
            if isinstance(notice, KeyEntry) and notice.fate == "taken" and self.fates:
                fate = self.fates.next()
                if fate is None and not finished:
                    self._held_since = self._held_since or time.monotonic()
                    if time.monotonic() - self._held_since < FATE_WAIT:
                        break
                self._held_since = None
                if fate is not None and fate.get("key") == notice.digit:
                    self._backlog.popleft()
                    fate_words = key_fate(fate, withdrawal=self.withdrawal)
                    out.append(f"{notice.at:7.2f}s  key {notice.digit}: {fate_words}")
                    continue
                self.fates = None  # none, or out of step: no guessing from here on
            self._backlog.popleft()
            out += self.lines(notice)
        return out

    def lines(self, notice: Notice) -> list[str]:
        """The transcript lines for one notice (most are one line, some none); a prompt's start
        and end also start and stop its audio."""
        if isinstance(notice, Activity):
            t = _secs(notice.start)
            if notice.file is not None:
                prompt_id, text = self.texts.get(notice.file, (notice.file, ""))
                if self.player is not None:
                    self.player.start(notice.file, notice.offset)
                again = f" (from {notice.offset / notice.total:.0%})" if notice.offset else ""
                return _wrapped(f"{t}  ▶ [{prompt_id}]{again} {text}".rstrip())
            if not notice.waits:
                return []
            if notice.end is None:
                return [f"{t}  … waits for a key"]
            return [f"{t}  … waits up to {_secs(notice.end - notice.start).strip()} for a key"]
        t = f"{notice.at:7.2f}s"
        if isinstance(notice, PlayEntry):
            if self.player is not None:
                self.player.stop()
                if self.player.failed is not None:  # say so once, and play no more
                    failed, self.player = self.player, None
                    name = Path(failed.command).name
                    note = f"audio: {name} could not play (exit status {failed.failed}); silent"
                    return [f"{t}  {note}", *self.lines(notice)]
            if notice.total_samples is None:
                return [f"{t}  ! [{notice.file}] MISSING AUDIO FILE"]
            if notice.completed:
                return []
            heard = f"{notice.endpos / notice.total_samples:.0%}"
            why = f"stopped by key {notice.interrupted_by}" if notice.interrupted_by else "cut"
            # the entry's time is the play's start; the stop came this many samples later
            stopped = notice.at + (notice.endpos - notice.from_sample) / TICKS_PER_SECOND
            return [f"{stopped:7.2f}s  ■ {why} at {heard}"]
        if isinstance(notice, KeyEntry):
            fate = {
                "taken": f"taken by {notice.by}",
                "ignored": "ignored (the playing prompt does not listen for it)",
                "dropped": "dropped (nothing was listening)",
            }[notice.fate]
            return [f"{t}  key {notice.digit}  {fate}"]
        if isinstance(notice, WaitEntry):
            if notice.outcome != "timeout":
                return []
            return [f"{notice.at + notice.timeout_ms / 1000:7.2f}s  … no key"]
        if isinstance(notice, SetEntry):
            return [f"{t}  sets {notice.variable}={notice.value}"]
        if isinstance(notice, HangupEntry):
            if self.player is not None:
                self.player.stop()
            return [f"{t}  hangs up ({notice.who})"]
        if isinstance(notice, AnswerEntry):
            return [f"{t}  answered"]
        return []

    # ---- the status area ---------------------------------------------------------------------

    def status(self) -> StyleAndTextTuples:
        current, now = self.caller.status()
        rows: StyleAndTextTuples = []
        if not self.worker.is_alive():
            rows.append(("bold", "call ended\n"))
        elif current is None:
            rows.append(("", "calling…\n\n"))
        elif not current.waits and current.file is None:
            rows.append(("", f"{current.label.lower()}…\n\n"))
        elif current.file is not None and current.total:
            prompt_id, text = self.texts.get(current.file, (current.file, ""))
            pos = min(current.offset + now - current.start, current.total)
            frac = pos / current.total
            rows.append(("bold", f"▶ [{prompt_id}] "))
            rows.append(("", f"{_bar(frac)} {frac:4.0%}  {_secs(pos).strip()} / "))
            rows.append(("", f"{_secs(current.total).strip()}\n"))
            rows.append(("italic", f"  {_tail(text[: int(len(text) * frac)], 96)}\n"))
        else:
            waited = now - current.start
            if current.end is None:
                rows.append(("bold", f"… waiting for a key  {_secs(waited).strip()}\n\n"))
            else:
                span = max(current.end - current.start, 1)
                rows.append(("bold", "… waiting for a key "))
                rows.append(("", f"{_bar(waited / span)} {_secs(waited).strip()} / "))
                rows.append(("", f"{_secs(span).strip()}\n\n"))
        rows.append(("reverse", f" {KEYS_HELP}   speed ×{self.speed:g} "))
        return rows


def run_interactive(
    place: PlaceCall,
    *,
    title: str,
    texts: Mapping[str, tuple[str, str]],
    speed: float,
    audio: bool,
    out: TextIO,
    err: TextIO,
    key_log: Path | None = None,
    withdrawal: bool = False,
) -> int:
    """Run one live call on this terminal; 0 when it ended or was quit, 1 when it failed, 2 when
    there is no terminal. `texts` maps a prompt's file argument to its id and text; `key_log` is
    the AGI script's log file, where it says what each key meant (``call.key``). Keys typed
    before the call starts are dropped, with a line that says so (`cli/typeahead.py`)."""
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        print(
            "consent-ivr: --interactive needs a terminal (stdin and stdout); "
            "for a scripted call use --dtmf",
            file=err,
        )
        return 2
    player = Player.find(speed) if audio else None
    live = LiveCall(place, texts, speed, player, key_log, withdrawal)
    print(f"consent-ivr simulate {title}, live at speed ×{speed:g}", file=out)
    print(KEYS_HELP, file=out)
    if audio:
        print(player.note() if player is not None else NO_PLAYER, file=out)
    early = typeahead.discard(sys.stdin)
    if early:
        print(f"not used: {early!r}, typed before the call was ready", file=out)
    print("ready: the call starts now; keys count from here", file=out)
    out.flush()
    try:
        quit_ = _screen(live)
    finally:
        if player is not None:
            player.stop()
    live.worker.join(timeout=30)
    if quit_:
        print("quit: the call was hung up; nothing more is shown", file=out)
        return 0
    if live.ended is None:
        print(f"consent-ivr: the call could not run: {live.failure}", file=err)
        return 1
    summary, stderr = live.ended
    print(summary, file=out)
    if stderr:
        print(stderr, file=err, end="")
    return 0


def _screen(live: LiveCall) -> bool:
    """Show the call until it ends (False) or the caller quits (True)."""
    bindings = KeyBindings()

    def press(event: KeyPressEvent) -> None:
        live.caller.press(event.data)

    for key in DTMF_TYPED:
        bindings.add(key)(press)

    @bindings.add("h")
    def _hang_up(event: KeyPressEvent) -> None:
        live.caller.hang_up()

    @bindings.add("q")
    @bindings.add("c-c")
    def _quit(event: KeyPressEvent) -> None:
        live.caller.hang_up()
        event.app.exit(result=True)

    status = Window(FormattedTextControl(live.status), height=3)
    app: Application[bool] = Application(
        layout=Layout(HSplit([status])),
        key_bindings=bindings,
        full_screen=False,
        erase_when_done=True,
        refresh_interval=0.1,
    )

    async def pump() -> None:
        while True:
            finished = not live.worker.is_alive()
            text = live.transcript(finished)
            if text:
                print_formatted_text(FormattedText([("", "\n".join(text))]))
            if finished:
                app.exit(result=False)
                return
            await asyncio.sleep(0.05)

    def started() -> None:
        live.worker.start()
        app.create_background_task(pump())

    return bool(app.run(pre_run=started))


def speed_argument(text: str) -> float:
    """``--speed``: how many times as fast as real time call time runs, 1 to 1000. Not slower:
    the engine gives each command its own length (+ 5 s) of real time to be answered in, and a
    slowed prompt would outlast it and end the call as ``error``."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to 1000, got {text!r}")
    return value


def live_summary(agistatus: str, variables: Mapping[str, str], record: Record | None) -> str:
    """The end of a live call: AGISTATUS, the variables and the evidence record in brief."""
    out = [f"AGISTATUS={agistatus}", "variables:"]
    out += [f"  {k}={v}" for k, v in sorted(variables.items())]
    out += evidence_summary(record)
    return "\n".join(out)


def evidence_summary(record: Record | None) -> list[str]:
    """The evidence record in a few lines (its status, keys, outcomes and plays)."""
    if not record:
        return ["evidence: none written"]
    keys = ", ".join(f"{k['key']} ({k['meaning']})" for k in record.get("keys", [])) or "none"
    outcomes = ", ".join(
        f"{o['purpose']} {o['outcome']} ({o['reason']})" for o in record.get("outcomes", [])
    )
    plays = record.get("plays", [])
    heard = sum(1 for p in plays if p.get("completed"))
    flow = record.get("flow", {})
    return [
        f"evidence: record {record.get('record_id')}",
        f"  status {record.get('status')} (reason {record.get('reason')}), "
        f"informed {_yes(record.get('informed'))}, hung up {_yes(record.get('hung_up'))}",
        f"  outcomes: {outcomes or 'none'}",
        f"  keys: {keys}",
        f"  prompts: {len(plays)} played, {heard} to the end",
        f"  notice {flow.get('notice_version')} sha256 {str(flow.get('notice_sha256'))[:16]}…",
    ]


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _secs(ticks: int) -> str:
    return f"{ticks / TICKS_PER_SECOND:7.2f}s"


def _bar(frac: float) -> str:
    filled = round(max(0.0, min(frac, 1.0)) * BAR_WIDTH)
    return "█" * filled + "░" * (BAR_WIDTH - filled)


def _wrapped(line: str) -> list[str]:
    """A transcript line wrapped to the terminal, continued under its text."""
    width = max(shutil.get_terminal_size().columns - 1, 40)
    return textwrap.wrap(line, width, subsequent_indent=" " * 12) or [line]


def _tail(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else "…" + text[-(width - 1) :]
