"""The schema of the evidence store: its versioned migrations and `migrate`.

One list for both backends. Statements are split on ";" at line ends. Dialect differences are
the placeholders {int64_pk} and {int64} only (SQLite's INTEGER PRIMARY KEY is its 64-bit rowid;
PostgreSQL needs BIGINT). Python steps run after a migration's SQL, in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from consent_ivr.evidence.backends import Backend
from consent_ivr.evidence.entries import GENESIS, INSERT_ENTRY, chain_hash
from consent_ivr.evidence.pseudonym import utc_now
from consent_ivr.evidence.record import body_sha256, canonical_json

#: Migration 1 is the schema of the first release, verbatim, so its files are recognised.
MIGRATION_1 = """
CREATE TABLE IF NOT EXISTS evidence (
    record_id       TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    call_uniqueid   TEXT NOT NULL,
    flow_id         TEXT NOT NULL,
    flow_version    INTEGER NOT NULL,
    flow_sha256     TEXT NOT NULL,
    notice_version  TEXT NOT NULL,
    notice_sha256   TEXT NOT NULL,
    language        TEXT NOT NULL,
    caller_pseudonym TEXT,
    caller_key_id   TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    record_json     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence_outcome (
    record_id  TEXT NOT NULL REFERENCES evidence(record_id),
    purpose    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (record_id, purpose)
);
CREATE INDEX IF NOT EXISTS evidence_caller ON evidence(caller_pseudonym);
CREATE INDEX IF NOT EXISTS evidence_call ON evidence(call_uniqueid);
"""

MIGRATION_2 = """
CREATE TABLE entry (
    seq              {int64_pk},
    kind             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    record_id        TEXT UNIQUE,
    caller_pseudonym TEXT,
    purpose          TEXT,
    body             TEXT,
    body_sha256      TEXT NOT NULL,
    prev_hash        TEXT NOT NULL,
    hash             TEXT NOT NULL UNIQUE,
    purged_by        {int64}
);
CREATE INDEX entry_caller ON entry(caller_pseudonym, kind);
CREATE INDEX entry_kind_time ON entry(kind, created_at);
CREATE TABLE flow_content (
    source_sha256  TEXT PRIMARY KEY,
    flow_id        TEXT NOT NULL,
    flow_version   INTEGER NOT NULL,
    notice_version TEXT NOT NULL,
    source_text    TEXT,
    content_json   TEXT NOT NULL,
    first_seen     TEXT NOT NULL
);
"""


def _backfill_chain(db: Backend) -> None:
    """Migration 2: chain the decisions already in `evidence` (files of the first release)."""
    rows = db.query("SELECT record_id, created_at, caller_pseudonym, record_json FROM evidence")
    rows.sort(key=lambda r: (r[1], r[0]))  # oldest first (SQLite rowid order is not portable)
    prev = GENESIS
    entries = []
    for seq, (record_id, created_at, pseudonym, text) in enumerate(rows, start=1):
        digest = body_sha256(canonical_json(json.loads(text)))
        h = chain_hash(prev, digest)
        entries.append(
            (seq, "decision", created_at, record_id, pseudonym, None, None, digest, prev, h)
        )
        prev = h
    db.executemany(INSERT_ENTRY, entries)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    step: Callable[[Backend], None] | None = None


#: The durable outbox of GA4 Measurement Protocol events (docs/tracking.md). `payload` is JSON
#: without secrets (the API secret is read from the environment at send time).
MIGRATION_3 = """
CREATE TABLE ga4_outbox (
    id              TEXT PRIMARY KEY,
    created_at      TEXT NOT NULL,
    tracking_seq    {int64},
    record_id       TEXT,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    done_at         TEXT
);
CREATE INDEX ga4_outbox_due ON ga4_outbox(state, next_attempt_at);
"""


#: A returning caller's latest decision on a flow (`ChainStore.latest_decision`): one B-tree
#: descent to the caller's newest record of the flow, so the look-up is O(log n) in the store's
#: size on both backends (the older index on the pseudonym alone would read every record of the
#: caller and sort them).
MIGRATION_4 = """
CREATE INDEX evidence_returning ON evidence(caller_pseudonym, flow_id, created_at);
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "evidence and evidence_outcome (first release)", MIGRATION_1),
    Migration(2, "hash-chained entries, flow content by hash", MIGRATION_2, _backfill_chain),
    Migration(3, "GA4 outbox (tracking step)", MIGRATION_3),
    Migration(4, "returning callers: latest decision by caller and flow", MIGRATION_4),
)


def migrate(db: Backend) -> int:
    """Apply pending migrations in one locked transaction; idempotent. Returns the version."""
    latest = MIGRATIONS[-1].version
    if db.table_exists("schema_migrations"):
        current = db.query("SELECT max(version) FROM schema_migrations")[0][0]
        if current == latest:
            return latest
    with db.write_transaction():
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {int(r[0]) for r in db.query("SELECT version FROM schema_migrations")}
        for m in MIGRATIONS:
            if m.version in done:
                continue
            for statement in m.sql.format(**db.dialect).split(";\n"):
                if statement.strip():
                    db.execute(statement)
            if m.step is not None:
                m.step(db)
            db.execute(
                "INSERT INTO schema_migrations VALUES (?,?,?)",
                (m.version, m.description, utc_now()),
            )
    return latest
