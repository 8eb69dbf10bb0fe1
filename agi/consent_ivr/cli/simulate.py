"""Run a consent call without a phone: the real AGI script against the simulated Asterisk.

`simulate_call` starts ``agi/consent-ivr.agi`` as Asterisk would (pipes, environment block,
SIGHUP on hang-up), lets the simulated Asterisk answer with a virtual clock and a scripted caller
(``--dtmf``), then reads the evidence record back from the store. `render_text` turns the result
into a transcript a flow author can read: what the caller heard (the prompt texts), the keys and
what became of them, the channel variables and the evidence record (in full, or as the one-line
`evidence_summary` the demo prints). With ``--interactive`` a person is the caller, live
(``cli/interactive.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from consent_ivr.cli import typeahead
from consent_ivr.cli.interactive import live_summary, run_interactive, speed_argument
from consent_ivr.cli.transcript import (
    SimulatedCall,
    as_json,
    prompt_texts,
    render_text,
)
from consent_ivr.engine import MAX_WAIT_MS, WAIT_VARIABLE
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import resolve_flow_path
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import (
    RealTimeCaller,
    SimResult,
    WavSoundCatalog,
    parse_dtmf_script,
    run_fastagi,
    run_process,
)
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import agi_script

#: The simulated caller's number unless `--caller` names another; it only ever appears as a
#: pseudonym in the evidence.
SIMULATED_CALLER = "+49891234567"


def simulation_env(label: str) -> dict[str, str]:
    """This process's environment for a simulated call's script or server: a throwaway HMAC
    key (`label`-...) unless one is set, and the look-up's wait at its cap — a simulated prompt
    takes no real time, and the engine's bound is for real calls, whose first prompt gives the
    look-up a second or two."""
    env = dict(os.environ)
    env.setdefault("CONSENT_IVR_HMAC_KEY", f"{label}-" + secrets.token_hex(16))
    env.setdefault(WAIT_VARIABLE, str(MAX_WAIT_MS))
    return env


#: `--caller anonymous`: a caller who withholds the number (Asterisk's caller id is then
#: `anonymous`; a text without digits has no pseudonym).
ANONYMOUS = "anonymous"


def simulate_call(
    flow: Flow,
    dtmf: str,
    *,
    language: str | None = None,
    store: Path | None = None,
    flow_arg: str | None = None,
    extra_env: dict[str, str] | None = None,
    agi_env: dict[str, str] | None = None,
    sim_options: dict[str, Any] | None = None,
    timeout: float = 30.0,
    caller: str = SIMULATED_CALLER,
) -> SimulatedCall:
    """Place one simulated call through the real process-AGI script and collect everything.

    `sim_options` go to the simulated Asterisk (e.g. ``sounds=`` a catalog, ``sighup=False``,
    ``args=`` the AGI() arguments after the script, default ``[flow_arg]``). The flow's folder
    is the script's flows folder (``CONSENT_IVR_FLOWS``) unless `extra_env` names another.
    """
    parse_dtmf_script(dtmf)  # a bad script is the caller's error: raise before starting
    lang = language or flow.default_language
    with tempfile.TemporaryDirectory(prefix="consent-ivr-sim-") as tmp:
        store_path = store or Path(tmp) / "evidence.sqlite3"
        env = simulation_env("simulation")
        env["CONSENT_IVR_STORE"] = str(store_path)
        # the script runs only flows inside its flows folder: the simulated flow's own folder
        env["CONSENT_IVR_FLOWS"] = os.path.dirname(os.path.realpath(flow.source_path))
        env.update(extra_env or {})
        script = agi_script()
        arg = flow_arg or os.path.abspath(flow.source_path)  # AGI reads a relative one in flows/
        channel_env = {**_channel(lang, caller), **(agi_env or {})}
        options: dict[str, Any] = {"sounds": WavSoundCatalog(), "args": [arg]}
        options.update(sim_options or {})
        result = run_process(
            [sys.executable, str(script), *options["args"]],
            env=env,
            timeout=timeout,
            request=str(script),
            dtmf=dtmf,
            agi_env=channel_env,
            **options,
        )
        evidence = record_of(store_path, result) if store_path.exists() else None
        return SimulatedCall(flow, lang, dtmf, result, evidence, store_path)


def simulate_call_fastagi(
    flow: Flow,
    dtmf: str,
    address: tuple[str, int],
    store: Path,
    *,
    language: str | None = None,
    timeout: float = 30.0,
    caller: str = SIMULATED_CALLER,
) -> SimulatedCall:
    """Place one simulated call over TCP to a running `consent-ivr serve`, from `caller`."""
    parse_dtmf_script(dtmf)
    lang = language or flow.default_language
    result = run_fastagi(
        address[0],
        address[1],
        f"{flow.id}?lang={lang}",
        timeout=timeout,
        dtmf=dtmf,
        sounds=WavSoundCatalog(),
        agi_env=_channel(lang, caller),
    )
    return SimulatedCall(flow, lang, dtmf, result, record_of(store, result), store)


def _channel(lang: str, caller: str = SIMULATED_CALLER) -> dict[str, str]:
    """The simulated caller's channel: language, number (a pseudonym in the evidence), id."""
    return {
        "agi_language": lang,
        "agi_callerid": caller,
        "agi_calleridname": "Anonymous" if caller == ANONYMOUS else "Simulated Caller",
        "agi_uniqueid": "1700000000." + str(secrets.randbelow(10000)),
    }


def record_of(store: Path, result: SimResult) -> dict[str, Any] | None:
    """The record the call's CONSENT_RECORD_ID names, read back from the store."""
    record_id = result.variables.get("CONSENT_RECORD_ID")
    if not record_id:
        return None
    db = open_store(store)
    try:
        return db.get(record_id)
    finally:
        db.close()


# ------------------------------------------------------------------------------- command
def add_parsers(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate",
        help="run a call through the real AGI script, no phone",
        description="Run a call of FLOW through the real AGI script against a simulated "
        f"Asterisk. The caller is {SIMULATED_CALLER} unless --caller names another number (or "
        "anonymous); the evidence holds only its pseudonym.",
    )
    sim.add_argument("flow", metavar="FLOW")
    sim.add_argument(
        "--dtmf",
        default="",
        metavar="SCRIPT",
        help="caller events, comma-separated: 1 (press at the next input), 1@4.2 (at 4.2 s), "
        "- (stay silent through a wait), h / h@3.0 (hang up); e.g. --dtmf -,7,1",
    )
    sim.add_argument(
        "--caller",
        default=SIMULATED_CALLER,
        type=caller_number,
        metavar=f"NUMBER|{ANONYMOUS}",
        help=f"the caller's number (default: {SIMULATED_CALLER}), or {ANONYMOUS} for a "
        "withheld one",
    )
    sim.add_argument(
        "--lang", default=None, help="a language the flow serves (default: the flow's first)"
    )
    sim.add_argument("--json", action="store_true", help="print JSON instead of a transcript")
    sim.add_argument(
        "--store", type=Path, default=None, help="keep the evidence in this SQLite file"
    )
    sim.add_argument(
        "--interactive",
        action="store_true",
        help="be the caller, live: keys typed are DTMF as the call runs, h hangs up, q quits",
    )
    sim.add_argument(
        "--speed",
        type=speed_argument,
        default=1.0,
        metavar="N",
        help="with --interactive: call time runs N times as fast as real time (default 1)",
    )
    sim.add_argument(
        "--audio",
        action="store_true",
        help="with --interactive: play the prompts (sox's play or aplay)",
    )

    sim.set_defaults(run=run)


def caller_number(text: str) -> str:
    """`--caller`: `anonymous`, or a phone number (digits, with + ( ) / - . and spaces)."""
    if text.strip().lower() == ANONYMOUS:
        return ANONYMOUS
    if any(c.isdigit() for c in text) and all(c.isdigit() or c in "+()/-. " for c in text):
        return text.strip()
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a phone number; expected e.g. {SIMULATED_CALLER}, or {ANONYMOUS}"
    )


class UnservedLanguage(ValueError):
    """An explicit ``--lang`` the flow does not serve."""


def pick_language(flow: Flow, requested: str | None) -> str:
    """The language a command (`simulate`, `demo`, `graph`) runs a flow in: without ``--lang``
    the flow's first; an explicit one only if the flow serves it (``de``, ``de_DE`` and ``de-DE``
    name German), else `UnservedLanguage` naming the flow's languages. (A real call's channel
    language falls back to the flow's first instead: `transports.runner`.)"""
    if requested is None:
        return flow.default_language
    lang = flow.match_language(requested)
    if lang is None:
        raise UnservedLanguage(
            f"flow {flow.id} does not serve language {requested!r};"
            f" expected one of {', '.join(flow.languages)}"
        )
    return lang


def load_for_calls(name: str, err: TextIO) -> Flow | None:
    """A flow as a call loads it (every lint rule: `load_checked`), or None after its findings."""
    try:
        return load_checked(resolve_flow_path(name))[0]
    except FlowError as exc:
        print(str(exc), file=err)
        return None


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.interactive:
        return _run(args, out, err)
    with typeahead.held():  # keys typed while the flow loads are neither echoed nor used
        if sys.stdin.isatty() and sys.stdout.isatty():
            print(f"consent-ivr simulate: loading {args.flow} …", file=out, flush=True)
        return _run(args, out, err)


def flow_and_language(
    name: str, requested: str | None, err: TextIO, prog: str = "consent-ivr"
) -> tuple[Flow, str] | None:
    """The checked flow a command places calls with, and its language by `pick_language`; None
    (the reason printed to `err`) when the flow does not load or does not serve `requested`."""
    flow = load_for_calls(name, err)
    if flow is None:
        return None
    try:
        return flow, pick_language(flow, requested)
    except UnservedLanguage as exc:
        print(f"{prog}: {exc}", file=err)
        return None


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    chosen = flow_and_language(args.flow, args.lang, err)
    if chosen is None:
        return 2
    flow, lang = chosen
    if args.interactive:
        return _run_live(args, flow, lang, out, err)
    if args.speed != 1.0 or args.audio:
        print("consent-ivr: --speed and --audio go with --interactive", file=err)
        return 2
    try:
        call = simulate_call(flow, args.dtmf, language=lang, store=args.store, caller=args.caller)
    except ValueError as exc:
        print(f"consent-ivr: --dtmf: {exc}", file=err)
        return 2
    if args.json:
        json.dump(as_json(call), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        print(render_text(call), file=out)
    if call.stderr:
        print(call.stderr, file=err, end="")
    return 0


def _run_live(args: argparse.Namespace, flow: Flow, lang: str, out: TextIO, err: TextIO) -> int:
    if args.dtmf or args.json:
        print(
            "consent-ivr: --interactive takes its keys from you: not with --dtmf or --json",
            file=err,
        )
        return 2

    with tempfile.TemporaryDirectory(prefix="consent-ivr-live-") as tmp:
        # the AGI script's log: its `call.key` events say what the engine made of each key
        key_log = Path(tmp) / "agi.log"
        log_env = {"CONSENT_IVR_LOG": str(key_log), "CONSENT_IVR_LOG_LEVEL": "debug"}

        def place(caller: RealTimeCaller) -> tuple[str, str]:
            options = {"live": caller}
            call = simulate_call(
                flow,
                "",
                language=lang,
                store=args.store,
                extra_env=log_env,
                sim_options=options,
                caller=args.caller,
            )
            return live_summary(call.result.agistatus, call.variables, call.evidence), call.stderr

        return run_interactive(
            place,
            title=f"{flow.label} [{lang}]",
            texts=prompt_texts(flow, lang),
            speed=args.speed,
            audio=args.audio,
            out=out,
            err=err,
            key_log=key_log,
            withdrawal=flow.is_withdrawal,
        )
