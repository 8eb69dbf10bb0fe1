"""Run a consent call without a phone: the real AGI script against the simulated Asterisk.

`simulate_call` starts ``agi/consent-ivr.agi`` as Asterisk would (pipes, environment block,
SIGHUP on hang-up), lets the simulated Asterisk answer with a virtual clock and a scripted caller
(``--dtmf``), then reads the evidence record back from the store. `render_text` turns the result
into a transcript a flow author can read: what the caller heard (the prompt texts), the keys and
what became of them, the channel variables and the evidence record.
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

from consent_ivr.engine import MAX_WAIT_MS, WAIT_VARIABLE
from consent_ivr.evidence.store import open_store
from consent_ivr.flow.diagnostics import FlowError
from consent_ivr.flow.loader import resolve_flow_path
from consent_ivr.flow.model import Flow
from consent_ivr.harness.asterisk import (
    AnswerEntry,
    HangupEntry,
    KeyEntry,
    PlayEntry,
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

#: The simulated caller's number; it only ever appears as a pseudonym in the evidence.
SIMULATED_CALLER = "+49891234567"


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
        # a simulated prompt takes no real time: let a returning caller's look-up finish (the
        # engine's bound is for real calls, whose first prompt gives it a second or two)
        env.setdefault(WAIT_VARIABLE, str(MAX_WAIT_MS))
        # the script runs only flows inside its flows folder: the simulated flow's own folder
        env["CONSENT_IVR_FLOWS"] = os.path.dirname(os.path.realpath(flow.source_path))
        env.update(extra_env or {})
        script = agi_script()
        arg = flow_arg or os.path.abspath(flow.source_path)  # AGI reads a relative one in flows/
        channel_env = {**_channel(lang), **(agi_env or {})}
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
        "agi_calleridname": "Simulated Caller",
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


def _prompt_texts(flow: Flow, language: str) -> dict[str, tuple[str, str]]:
    """STREAM FILE argument -> (prompt id, text) for every prompt of the flow in `language`."""
    return {audio_argument(p.audio[language]): (p.id, p.text[language]) for p in flow.all_prompts()}


def transcript_rows(call: SimulatedCall) -> list[dict[str, Any]]:
    """The transcript as JSON-ready rows: time, kind and what happened."""
    texts = _prompt_texts(call.flow, call.language)
    rows: list[dict[str, Any]] = []
    for e in call.result.transcript:
        row = _row(e, texts)
        if row is not None:
            rows.append(row)
    return rows


def _row(e: TranscriptEntry, texts: dict[str, tuple[str, str]]) -> dict[str, Any] | None:
    base: dict[str, Any] = {"t": round(e.at, 3), "kind": e.kind}
    if isinstance(e, AnswerEntry):
        return base
    if isinstance(e, PlayEntry):
        prompt_id, text = texts.get(e.file, (e.file, ""))
        heard = text
        if e.total_samples and not e.completed and text:
            frac = (e.endpos - e.from_sample) / e.total_samples
            start = int(len(text) * e.from_sample / e.total_samples)
            heard = text[start : start + max(0, int(len(text) * frac))] + " …"
        base.update(
            prompt=prompt_id,
            heard=heard if e.total_samples else "",
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


def render_text(call: SimulatedCall) -> str:
    """A transcript a flow author can read."""
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
            out.append(f"{t}  hears    [{row['prompt']}] {row['heard']!s}  ({how})")
        elif kind == "key":
            fate = {
                "taken": "",
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
    out.append("evidence:")
    out.append(compact_json(call.evidence) if call.evidence else "  (none)")
    return "\n".join(out)


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
    sim = sub.add_parser("simulate", help="run a call through the real AGI script, no phone")
    sim.add_argument("flow", metavar="FLOW")
    sim.add_argument(
        "--dtmf",
        default="",
        metavar="SCRIPT",
        help="caller events, comma-separated: 1 (press at the next input), 1@4.2 (at 4.2 s), "
        "- (stay silent through a wait), h / h@3.0 (hang up)",
    )
    sim.add_argument("--lang", default=None, help="channel language (default: the flow's first)")
    sim.add_argument("--json", action="store_true", help="print JSON instead of a transcript")
    sim.add_argument(
        "--store", type=Path, default=None, help="keep the evidence in this SQLite file"
    )

    sim.set_defaults(run=run)


def load_for_calls(name: str, err: TextIO) -> Flow | None:
    """A flow as a call loads it (every lint rule: `load_checked`), or None after its findings."""
    try:
        return load_checked(resolve_flow_path(name))[0]
    except FlowError as exc:
        print(str(exc), file=err)
        return None


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:

    flow = load_for_calls(args.flow, err)
    if flow is None:
        return 2
    lang = flow.match_language(args.lang) if args.lang else flow.default_language
    if lang is None:
        print(
            f"consent-ivr: flow {flow.id} does not serve language {args.lang!r}; "
            f"expected one of {', '.join(flow.languages)}",
            file=err,
        )
        return 2
    try:
        call = simulate_call(flow, args.dtmf, language=lang, store=args.store)
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
