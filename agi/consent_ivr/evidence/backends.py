"""The two databases behind one small interface: a connection with ``?`` parameters, explicit
transactions and the chain's write lock, on SQLite (a file: WAL, ``synchronous=FULL``) or
PostgreSQL (psycopg 3, ``synchronous_commit=on``); plus the one-line descriptions of their errors
and `redact` (a URL without its password, for messages).

psycopg is imported when a PostgreSQL connection is made, not at the top of this module (the one
deferred import of the store, on purpose): process AGI imports the store in every call, while the
first prompt plays, and most installations use SQLite; importing psycopg costs more than the whole
store with everything it imports.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from consent_ivr.evidence.localdisk import network_filesystem


class Backend(abc.ABC):
    """A connection with `?` parameters, explicit transactions and a chain lock."""

    name = ""
    dialect: ClassVar[dict[str, str]] = {}
    errors: tuple[type[BaseException], ...] = ()

    @abc.abstractmethod
    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Backend-specific."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Backend-specific."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Backend-specific."""

    @abc.abstractmethod
    def begin_write(self) -> None:
        """Start a transaction holding the store's write lock (the chain head cannot move)."""

    @abc.abstractmethod
    def begin_read(self) -> None:
        """Start a read-only transaction: one consistent snapshot for several queries."""

    @abc.abstractmethod
    def table_exists(self, name: str) -> bool:
        """Backend-specific."""

    def describe_error(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {one_line(exc)}"

    @abc.abstractmethod
    def close(self) -> None:
        """Backend-specific."""

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[None]:
        self.begin_write()
        try:
            yield
        except BaseException:
            with contextlib.suppress(*self.errors):
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextlib.contextmanager
    def read_transaction(self) -> Iterator[None]:
        self.begin_read()
        try:
            yield
        finally:
            with contextlib.suppress(*self.errors):
                self.execute("ROLLBACK")


class SqliteBackend(Backend):
    name = "sqlite"
    dialect: ClassVar[dict[str, str]] = {"int64_pk": "INTEGER PRIMARY KEY", "int64": "INTEGER"}
    errors = (sqlite3.Error, OSError)

    def __init__(self, path: Path, timeout: float, any_thread: bool = False) -> None:
        self.path = path
        _make_folder(path)
        self.conn = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=not any_thread
        )
        _enter_wal(self.conn, timeout)
        self.conn.execute("PRAGMA synchronous=FULL")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)

    def begin_write(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def begin_read(self) -> None:
        self.conn.execute("BEGIN DEFERRED")  # WAL: the snapshot holds until ROLLBACK

    def table_exists(self, name: str) -> bool:
        return bool(
            self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        )

    def describe_error(self, exc: BaseException) -> str:
        return describe_sqlite_error(self.path, exc)

    def close(self) -> None:
        self.conn.close()


class PostgresBackend(Backend):
    name = "postgresql"
    dialect: ClassVar[dict[str, str]] = {"int64_pk": "BIGINT PRIMARY KEY", "int64": "BIGINT"}

    def __init__(self, url: str, timeout: float) -> None:
        import psycopg  # here, not at the top: see the module's docstring

        self.errors = (psycopg.Error, OSError)
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
        self.conn.execute("SET synchronous_commit = on")
        self.conn.execute(f"SET lock_timeout = {int(timeout * 1000)}")

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(self._sql(sql), tuple(params)).fetchall()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)

    def begin_write(self) -> None:
        # one lock per schema: stores in different schemas of one database do not contend
        self.execute("BEGIN")
        self.execute("SELECT pg_advisory_xact_lock(hashtext('consent-ivr:' || current_schema()))")

    def begin_read(self) -> None:
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])

    def describe_error(self, exc: BaseException) -> str:
        return f"PostgreSQL {redact(self.url)}: {one_line(exc)}"

    def close(self) -> None:
        self.conn.close()


def _make_folder(path: Path) -> None:
    """Create the store's folder if needed; raise the OSError that names the real cause when
    the path cannot be a database file (mkdir alone says "File exists" for a file in the way,
    and SQLite only "unable to open database file"), or when it lies on a network file system
    (`localdisk`: SQLite's locks cannot be trusted there)."""
    kind = network_filesystem(path.parent)
    if kind is not None:
        raise OSError(
            errno.EOPNOTSUPP,
            f"it is on a network file system ({kind}), where SQLite's locks cannot be trusted; "
            "keep the evidence store on a local disk, or use PostgreSQL for several hosts",
            str(path),
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file where a folder must be, e.g. /dev/null/x.sqlite3
        raise NotADirectoryError(
            errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)
        ) from None
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))


def _enter_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode, waiting up to `timeout` seconds for other connections.

    Switching a new file's journal mode needs an exclusive lock, and SQLite does not call the
    busy handler for it (a connection holding a shared lock that waited could deadlock), so two
    processes opening a new store at once would otherwise see "database is locked" at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def describe_sqlite_error(path: Path, exc: BaseException) -> str:
    text = one_line(exc)
    if "file is not a database" in text or "malformed" in text:
        return f"{path} is not an SQLite evidence store or is corrupt ({text})"
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another process ({text}); try again later"
    if isinstance(exc, OSError):
        return f"cannot open {path}: {exc.strerror or text}"
    if "unable to open" in text:
        return f"cannot open {path} ({text})"
    return f"{path}: {type(exc).__name__}: {text}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
