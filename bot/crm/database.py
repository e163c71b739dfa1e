"""Connections to the CRM database: engines and sessions made on demand, never at import time."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from bot.redaction import redact_text, redact_url


class DatabaseError(Exception):
    """The CRM database cannot be reached or used; the message is safe to show (no password)."""


def make_engine(url: str, *, foreign_keys: bool = True, **options: Any) -> Engine:
    """A SQLAlchemy 2.0-style engine; SQLite gets WAL, a busy timeout and (unless told) foreign keys.

    Migrations turn SQLite's foreign keys off: Alembic rebuilds a table to alter it on SQLite, and
    dropping the old copy would otherwise cascade-delete every row that refers to it.
    """
    parsed = make_url(url)
    # A statement's values (patrons' words, conversation ids) are kept out of every error and log line.
    options.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            options = sqlite_file_pool() | options
        options.setdefault("connect_args", {"timeout": 30})
        engine: Engine = create_engine(url, future=True, **options)
        event.listen(engine, "connect", _sqlite_pragmas if foreign_keys else _sqlite_pragmas_without_fk)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    options.setdefault("pool_pre_ping", True)
    return cast(Engine, create_engine(url, future=True, **options))


def sqlite_file_pool() -> dict[str, Any]:
    """Engine options that keep a SQLite file's connections open between sessions, as SQLAlchemy 2.0
    does by default. SQLAlchemy 1.4 opens a new connection for every session (NullPool), and with the
    pragmas that costs more than the query: it was a quarter of the ingester's CPU per turn."""
    return {"poolclass": QueuePool, "connect_args": {"timeout": 30, "check_same_thread": False}}


def _sqlite_pragmas_without_fk(dbapi_connection: Any, record: Any) -> None:
    _sqlite_pragmas(dbapi_connection, record, foreign_keys=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, foreign_keys: bool = True) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINTs (a released savepoint commits); let
    # SQLAlchemy emit BEGIN itself, as its documentation recommends.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def tune_every_sqlite_connection() -> None:
    """WAL and synchronous=NORMAL for every SQLite connection this process opens, Rasa's tracker store
    and event broker included (Rasa makes those engines itself). Rasa commits each broker event on its
    own; in SQLite's default rollback-journal mode every commit waits for several fsyncs. With WAL,
    a commit survives a crash of any process; only a power cut can lose the last moment's commits."""
    if not event.contains(Engine, "connect", _any_sqlite_pragmas):
        event.listen(Engine, "connect", _any_sqlite_pragmas)


def _any_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(bind=engine, future=True, expire_on_commit=False)


@contextlib.contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back, whole, on any error."""
    session: Session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# The PostgreSQL advisory lock key that keeps an erasure and the ingester's transactions apart (any fixed
# 64-bit number other than rasa_server.stores.PUBLISH_LOCK: "erasures" in ASCII).
ERASURE_LOCK = 0x65_72_61_73_75_72_65_73


def erasure_lock(*, session: Session, exclusive: bool) -> None:
    """Hold, until the session's transaction ends, the lock that orders erasures (`exclusive`) and
    ingestion (shared, so several ingesters run side by side).

    On PostgreSQL (READ COMMITTED) an erasure committing between an ingest's check of erased senders
    and its writes would let the ingest write the erased patron's earlier messages as a new patron; with
    the lock, an erasure waits for ingests in flight and ingests wait for it. SQLite needs none: a
    transaction there takes the database's one write lock when it begins (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        session.execute(text(f"SELECT {function}(:key)"), {"key": ERASURE_LOCK})


def describe_error(error: SQLAlchemyError, url: str) -> str:
    """One line for an operator: what failed, on which database, with the password hidden.

    The database's own message is shown for a failure to reach or use it (unreachable, locked,
    read-only, a missing table), which quotes no data. For a statement the database refused, only its
    kind, code and the constraint or column: such a message may quote the row's values ('invalid input
    syntax for type integer: "…"', or a trigger's text), which can be a patron's words."""
    original = getattr(error, "orig", None)
    if original is None or isinstance(error, OperationalError | InterfaceError):
        reason = redact_text(str(original or error)).strip().splitlines()
        return f"database {redact_url(url)}: {reason[0] if reason else type(error).__name__}"
    code = getattr(original, "pgcode", None) or getattr(original, "sqlite_errorname", None)
    diagnostics = getattr(original, "diag", None)
    names = [
        f"{label} {value}"
        for label, value in (
            ("table", getattr(diagnostics, "table_name", None)),
            ("column", getattr(diagnostics, "column_name", None)),
            ("constraint", getattr(diagnostics, "constraint_name", None)),
        )
        if value
    ]
    detail = ", ".join([*([code] if code else []), *names])
    return (
        f"database {redact_url(url)}: {type(original).__name__}{f' ({detail})' if detail else ''}; "
        "the database's message is not shown, as it may quote a patron's data"
    )
