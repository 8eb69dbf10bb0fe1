"""The flow versions the store keeps by source hash (R13): the YAML text and, per language, the
notice document whose SHA-256 each record names; read back by hash or by flow id and version (R18).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import canonical_json
from consent_ivr.flow.model import Flow
from consent_ivr.flow.notice import declaration, notice_document


def content_row(flow: Flow) -> tuple[Any, ...]:
    """The flow_content row: the YAML text (if the file still has the hash the flow was loaded
    with) and, per language, the notice document whose SHA-256 is the record's notice_sha256."""
    text: str | None = None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        data = Path(flow.source_path).read_bytes()
        if hashlib.sha256(data).hexdigest() == flow.source_sha256:
            text = data.decode("utf-8")
    notices = {lang: notice_document(flow, lang) for lang in flow.languages}
    content = {
        "notice_sha256": dict(flow.notice_sha256),
        "notices": notices,
        "declaration": declaration(flow),
    }
    return (
        flow.source_sha256,
        flow.id,
        flow.version,
        flow.notice_version,
        text,
        canonical_json(content),
        utc_now(),
    )


def insert_flows(db: Backend, rows: Iterable[tuple[Any, ...]]) -> None:
    db.executemany(
        "INSERT INTO flow_content VALUES (?,?,?,?,?,?,?) ON CONFLICT (source_sha256) DO NOTHING",
        list(rows),
    )


def stored_content(db: Backend, source_sha256: str) -> dict[str, Any] | None:
    """The stored flow version with this source hash (see `ChainStore.flow_content`)."""
    rows = db.query(
        "SELECT flow_id, flow_version, notice_version, source_text, content_json,"
        " first_seen FROM flow_content WHERE source_sha256 = ?",
        (source_sha256,),
    )
    if not rows:
        return None
    fid, version, notice_version, text, content, first_seen = rows[0]
    return {
        "source_sha256": source_sha256,
        "flow_id": fid,
        "flow_version": int(version),
        "notice_version": notice_version,
        "first_seen": first_seen,
        "source_text": text,
        **json.loads(content),
    }


def stored_versions(db: Backend, flow_id: str, version: int) -> list[dict[str, Any]]:
    """Every stored content of a flow version (see `ChainStore.flow_versions`)."""
    rows = db.query(
        "SELECT source_sha256, notice_version, content_json, first_seen FROM flow_content"
        " WHERE flow_id = ? AND flow_version = ? ORDER BY first_seen",
        (flow_id, version),
    )
    out = []
    for sha, notice_version, content_json, first_seen in rows:
        content = json.loads(content_json)
        texts = {
            lang: {prompt_id: text for prompt_id, text, *_rest in doc.get("prompts", [])}
            for lang, doc in content.get("notices", {}).items()
        }
        out.append(
            {
                "source_sha256": sha,
                "notice_version": notice_version,
                "first_seen": first_seen,
                "texts": texts,
                "declaration": content.get("declaration"),
            }
        )
    return out
