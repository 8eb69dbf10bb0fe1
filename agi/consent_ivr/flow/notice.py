"""What a flow version tells the caller, as data: the notice document whose SHA-256 every record
names (R13, `CONSENT_NOTICE_SHA256`), and what the version declares besides its words (R18).

One definition, read by the loader (which hashes it into `Flow.notice_sha256`), by the evidence
store (which keeps the document of every version a record names) and by the linter (R18).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from consent_ivr.flow.model import Flow


def notice_document(flow: Flow, lang: str) -> dict[str, Any]:
    """Every prompt of the flow in one language: id, text and the audio's hash, in flow order;
    for a flow with more audio formats than the WAV (``sounds: formats:``) also each prompt's
    hash per format, since Asterisk may play any of them (absent otherwise: the documents, and
    so the hashes, of WAV-only flows stay as they were)."""
    document: dict[str, Any] = {
        "flow": flow.id,
        "version": flow.version,
        "notice_version": flow.notice_version,
        "language": lang,
        "prompts": [[p.id, p.text[lang], p.audio_sha256[lang]] for p in flow.all_prompts()],
    }
    formats = {p.id: p.format_sha256[lang] for p in flow.all_prompts() if p.format_sha256.get(lang)}
    if formats:
        document["audio_formats"] = formats
    return document


def canonical(document: Any) -> str:
    """The canonical JSON of a document: sorted keys, no spaces, UTF-8 text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def notice_sha256(flow: Flow, lang: str) -> str:
    """The SHA-256 of the canonical notice document: what a record pins the caller heard."""
    return hashlib.sha256(canonical(notice_document(flow, lang)).encode("utf-8")).hexdigest()


def declaration(flow: Flow) -> dict[str, object]:
    """What a flow version declares besides its words (R18): its kind, keys and purposes. Kept
    with every recorded version, so that a later edit under the same version is recognised."""
    keys = flow.choice.keys
    return {
        "kind": flow.kind,
        "keys": {
            "accept": keys.accept,
            "decline": keys.decline,
            "repeat": keys.repeat,
            "full_notice": keys.full_notice,
        },
        "purposes": [
            {
                "id": p.id,
                "basis": p.basis.value,
                "kind": p.kind,
                "kinds": list(p.kinds),
                "recipients": list(p.recipients),
                "third_countries": list(p.third_countries),
                "processors": list(p.processors),
                "data": list(p.data),
            }
            for p in flow.purposes
        ],
    }
