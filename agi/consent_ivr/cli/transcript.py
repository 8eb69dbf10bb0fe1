"""What a flow author reads of a simulated call: its transcript rows (what the caller heard, with
the prompt texts and how far each played, the keys and their fate, the variables set), the text
and JSON forms `consent-ivr simulate` prints, and the evidence record in full or as the one-line
summary the demo prints. `SimulatedCall` is the call these are made from (`cli/simulate.py` runs
it; `cli/flowtest.py` checks it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consent_ivr.cli.keyfate import pair_taken_keys
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
)
from consent_ivr.protocol.session import audio_argument
from consent_ivr.wav import TELEPHONY_RATE


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
    fates = pair_taken_keys([r["key"] for r in taken], recorded, withdrawal=call.flow.is_withdrawal)
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
