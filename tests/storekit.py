"""One fixture, two backends: an SQLite file in tmp_path, and a fresh PostgreSQL schema.

PostgreSQL is expected at $CONSENT_IVR_TEST_PG (default postgresql://127.0.0.1:5432/test, trust
auth). Each test gets its own schema (``t_<random>``, via ``search_path`` in the URL), dropped
afterwards. Unreachable: the test fails, saying how to point it at a server (it is never skipped:
`make test` proves both backends or fails).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_URL = os.environ.get("CONSENT_IVR_TEST_PG", "postgresql://127.0.0.1:5432/test")


def _pg_admin() -> object:
    import psycopg

    try:
        return psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} unreachable: {' '.join(str(exc).split())}; the store tests "
            "need one (set CONSENT_IVR_TEST_PG=postgresql://... to use another server)"
        )


def pg_schema_url() -> Iterator[str]:
    admin = _pg_admin()
    schema = "t_" + secrets.token_hex(6)
    admin.execute(f"CREATE SCHEMA {schema}")  # type: ignore[attr-defined]
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")  # type: ignore[attr-defined]
        admin.close()  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL on each backend (parametrised: every test runs on both)."""
    if request.param == "sqlite":
        yield str(tmp_path / "evidence.sqlite3")
    else:
        yield from pg_schema_url()
