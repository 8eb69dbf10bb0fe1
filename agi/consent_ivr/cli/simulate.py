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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from consent_ivr.cli import typeahead
from consent_ivr.cli.interactive import live_summary, run_interactive, speed_argument
from consent_ivr.cli.keyfate import pair_taken_keys
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import resolve_flow_path
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import (
    AnswerEntry,
    HangupEntry,
    KeyEntry,
    PlayEntry,
    RealTimeCaller,
    SetEntry,
    SimResult,
    TranscriptEntry,
    WaitEntry,
    WavSoundCatalog,
    parse_dtmf_script,
    run_fastagi,
    run_process,
)
from consent_ivr.lint.check import load_checked
from consent_ivr.paths import agi_script
from consent_ivr.protocol.session import audio_argument
from consent_ivr.wav import TELEPHONY_RATE

#: The simulated caller's number unless `--caller` names another; it only ever appears as a
#: pseudonym in the evidence.
SIMULATED_CALLER = "+49891234567"
#: `--caller anonymous`: a caller who withholds the number (Asterisk's caller id is then
#: `anonymous`; a text without digits has no pseudonym).
ANONYMOUS = "anonymous"


@dataclass
class SimulatedCall:
    flow: Flow
    language: str
    dtmf: str
    result: SimResult
    evidence: dict[str, Any] | None
    store_path: Path

    @property
    def variables(self) -> dict[str, str]:
        return dict(self.result.variables)

    @property
    def stderr(self) -> str:
        return self.result.stderr.decode("utf-8", "replace")


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
        env = dict(os.environ)
        env.setdefault("CONSENT_IVR_HMAC_KEY", "simulation-" + secrets.token_hex(16))
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
    """Place one simulated call over TCP to a running `consent-ivr serve`."""
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


def prompt_texts(flow: Flow, language: str) -> dict[str, tuple[str, str]]:
    """STREAM FILE argument -> (prompt id, text) for every prompt of the flow in `language`."""
    return {audio_argument(p.audio[language]): (p.id, p.text[language]) for p in flow.all_prompts()}


def transcript_rows(call: SimulatedCall) -> list[dict[str, Any]]:
    """The transcript as JSON-ready rows: time, kind and what happened; a key the engine took
    also has its `meaning` in words, as the evidence record says (`cli/keyfate.py`)."""
    texts = prompt_texts(call.flow, call.language)
    rows: list[dict[str, Any]] = []
    for e in call.result.transcript:
        row = _row(e, texts)
        if row is not None:
            rows.append(row)
    taken = [row for row in rows if row["kind"] == "key" and row["fate"] == "taken"]
    recorded = (call.evidence or {}).get("keys") or []
    fates = pair_taken_keys([r["key"] for r in taken], recorded)
    for row, meaning in zip(taken, fates, strict=True):
        row["meaning"] = meaning
    return rows


def _row(e: TranscriptEntry, texts: dict[str, tuple[str, str]]) -> dict[str, Any] | None:
    base: dict[str, Any] = {"t": round(e.at, 3), "kind": e.kind}
    if isinstance(e, AnswerEntry):
        return base
    if isinstance(e, PlayEntry):
        prompt_id, text = texts.get(e.file, (e.file, ""))
        base.update(
            prompt=prompt_id,
            heard=_heard(text, e) if e.total_samples else "",
            from_sample=e.from_sample,
            endpos=e.endpos,
            samples=e.total_samples,
            completed=e.completed,
            interrupted_by=e.interrupted_by,
            missing=e.total_samples is None,
            hung_up=e.hung_up,
        )
        return base
    if isinstance(e, KeyEntry):
        base.update(key=e.digit, fate=e.fate)
        return base
    if isinstance(e, WaitEntry):
        base.update(timeout_ms=e.timeout_ms, outcome=e.outcome, key=e.key)
        return base
    if isinstance(e, SetEntry):
        base.update(variable=e.variable, value=e.value, inherited=e.inheritance == 2)
        return base
    if isinstance(e, HangupEntry):
        base.update(who=e.who)
        return base
    return None


def _heard(text: str, e: PlayEntry) -> str:
    """The part of a prompt's text the caller heard, cut in proportion to the samples played
    (speech is about evenly paced: approximate, to the word). `…` marks a cut end; a prompt
    resumed at an offset starts with `…` at about that point."""
    total = e.total_samples or 0
    if not text or not total or (e.completed and not e.from_sample):
        return text
    if not e.completed and e.endpos <= e.from_sample:
        return ""  # stopped before a sample played
    start = int(len(text) * e.from_sample / total)
    if start:  # from the start of the word the offset falls in
        start = text.rfind(" ", 0, start) + 1
    end = len(text) if e.completed else max(start, int(len(text) * e.endpos / total))
    heard = text[start:end].strip()
    return ("… " if start else "") + heard + ("" if e.completed else " …")


def as_json(call: SimulatedCall) -> dict[str, Any]:
    return {
        "flow": call.flow.label,
        "language": call.language,
        "dtmf": call.dtmf,
        "agistatus": call.result.agistatus,
        "variables": call.variables,
        "evidence": call.evidence,
        "transcript": transcript_rows(call),
    }


def render_text(call: SimulatedCall, *, evidence: str = "full") -> str:
    """A transcript a flow author can read; the evidence record in `full` (JSON) or as a
    `summary` line."""
    out = [f"call: {call.flow.label} [{call.language}]  caller keys: {call.dtmf or '(none)'}"]
    for row in transcript_rows(call):
        t = f"{row['t']:8.2f}s"
        kind = row["kind"]
        if kind == "answer":
            out.append(f"{t}  answered")
        elif kind == "play":
            if row["missing"]:
                out.append(f"{t}  plays    [{row['prompt']}] MISSING AUDIO FILE")
                continue
            how = (
                "to the end"
                if row["completed"]
                else (
                    f"stopped by key {row['interrupted_by']}"
                    if row["interrupted_by"]
                    else "cut by hang-up"
                    if row["hung_up"]
                    else "stopped"
                )
            )
            if row["from_sample"]:  # resumed where an ignored key had stopped it
                how = f"from {row['from_sample'] / TELEPHONY_RATE:.1f} s, {how}"
            if not row["heard"] and not row["completed"]:
                how += " at its start"
            heard = f"{row['heard']}  " if row["heard"] else ""
            out.append(f"{t}  hears    [{row['prompt']}] {heard}({how})")
        elif kind == "key":
            fate = {
                "taken": f": {row['meaning']}" if row.get("meaning") else "",
                "ignored": " (ignored by the playing prompt)",
                "dropped": " (dropped: nothing was listening)",
            }[row["fate"]]
            out.append(f"{t}  presses  {row['key']}{fate}")
        elif kind == "wait":
            result = f"key {row['key']}" if row["outcome"] == "key" else row["outcome"]
            out.append(f"{t}  waits    up to {row['timeout_ms']} ms: {result}")
        elif kind == "set":
            out.append(
                f"{t}  sets     {'__' if row['inherited'] else ''}{row['variable']}={row['value']}"
            )
        elif kind == "hangup":
            out.append(f"{t}  hangs up ({row['who']})")
    out.append(f"AGISTATUS={call.result.agistatus}")
    out.append("variables:")
    out += [f"  {k}={v}" for k, v in sorted(call.variables.items())]
    if evidence == "summary":
        out.append(f"evidence: {evidence_summary(call.evidence)}")
    else:
        out.append("evidence:")
        out.append(compact_json(call.evidence) if call.evidence else "  (none)")
    return "\n".join(out)


def evidence_summary(record: dict[str, Any] | None) -> str:
    """A record in one line: its id, each purpose's outcome and why, whether the caller heard
    the whole notice, the keys and what they meant."""
    if not record:
        return "(none)"
    outcomes = ", ".join(
        f"{o.get('purpose')} {o.get('outcome')} ({o.get('reason')})"
        for o in record.get("outcomes") or []
    )
    keys = ", ".join(
        f"{k.get('key')} {k.get('meaning')} (in {k.get('prompt_id')})"
        for k in record.get("keys") or []
    )
    return (
        f"record {record.get('record_id')}: {outcomes or 'no outcome'}; "
        f"informed: {'yes' if record.get('informed') else 'no'}; keys: {keys or 'none'}"
    )


def compact_json(record: dict[str, Any]) -> str:
    """A record as JSON with one line per field and per list item (readable, still valid)."""
    lines = ["{"]
    items = list(record.items())
    for n, (key, value) in enumerate(items):
        comma = "," if n < len(items) - 1 else ""
        if isinstance(value, list) and value:
            lines.append(f"  {json.dumps(key)}: [")
            lines += [
                f"    {json.dumps(v, ensure_ascii=False)}{',' if i < len(value) - 1 else ''}"
                for i, v in enumerate(value)
            ]
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines)


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


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    flow = load_for_calls(args.flow, err)
    if flow is None:
        return 2
    try:
        lang = pick_language(flow, args.lang)
    except UnservedLanguage as exc:
        print(f"consent-ivr: {exc}", file=err)
        return 2
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
        )
