"""Shared benchmark helpers: timing, results, the machine, CRM databases and realistic Rasa events."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.crm.database import describe_error, make_engine
from bot.crm.migrate import upgrade
from bot.redaction import redact_url

DATABASES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# 2026-05-01 00:00 UTC: every generated conversation happens after this instant.
T0 = 1_777_593_600.0


# --- timing and results ----------------------------------------------------------------------------


class Timer:
    """Wall-clock time of a `with` block, in seconds (time.perf_counter)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.elapsed = time.perf_counter() - self.start


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of the values, interpolating linearly between the nearest two."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Result:
    """One measured figure, the target it is held against, and the parameters it was measured with.

    `comparison` says how the value must relate to the target: ">=" (at least) or "<" (under).
    A result without a value was skipped (`skipped` says why) or failed (`error`).
    """

    name: str
    database: str
    value: float | None
    unit: str
    target: float
    comparison: str
    params: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.comparison == ">=":
            return self.value >= self.target
        if self.comparison == "<":
            return self.value < self.target
        raise ValueError(f"unknown comparison {self.comparison!r}")

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "database": self.database,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "comparison": self.comparison,
            "met": self.met,
            "params": self.params,
        }
        if self.skipped is not None:
            entry["skipped"] = self.skipped
        if self.error is not None:
            entry["error"] = self.error
        return entry


def skipped(
    names: Sequence[tuple[str, str, float, str]], database: str, reason: str, params: dict[str, Any]
) -> list[Result]:
    """Skipped entries, one per (name, unit, target, comparison), all for the same reason."""
    return [
        Result(
            name=name,
            database=database,
            value=None,
            unit=unit,
            target=target,
            comparison=comparison,
            params=params,
            skipped=reason,
        )
        for name, unit, target, comparison in names
    ]


# --- the machine -----------------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the figures were measured on: cores, CPU, memory, OS, Python and database versions."""
    memory = _proc_field("/proc/meminfo", "MemTotal")
    description: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cpu": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or None,
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": None,
    }
    if postgres_unavailable() is None:
        engine = make_engine(postgres_url())
        try:
            with engine.connect() as connection:
                description["postgresql"] = connection.execute(text("SHOW server_version")).scalar_one()
        finally:
            engine.dispose()
    return description


def code_version() -> dict[str, Any]:
    """The commit the figures were measured on, and whether the bot's code differed from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "bot"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "bot_modified": None}
    return {"commit": commit, "bot_modified": bool(changed)}


# --- databases -------------------------------------------------------------------------------------


def postgres_url() -> str:
    return (
        os.environ.get("PATRONBOT_BENCH_POSTGRES_URL")
        or os.environ.get("PATRONBOT_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


def postgres_server() -> str:
    """The PostgreSQL server the benchmarks use, with any password hidden (for the report)."""
    return redact_url(postgres_url())


@functools.cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    url = postgres_url()
    try:
        engine = make_engine(url, connect_args={"connect_timeout": 5})
    except (SQLAlchemyError, ImportError, ValueError) as error:
        return f"PostgreSQL URL {redact_url(url)} is unusable: {error}"
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        return f"PostgreSQL does not answer: {describe_error(error, url)}"
    finally:
        engine.dispose()
    return None


def schema_url(schema: str) -> str:
    """The benchmark server's URL with `schema` first on the search path."""
    url = make_url(postgres_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_schema(label: str) -> Iterator[str]:
    """A fresh, empty schema (`bench_<label>_<random>`) and a URL that uses it; dropped afterwards."""
    schema = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(postgres_url())
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield schema_url(schema)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def crm_database(database: str, workdir: Path, label: str) -> Iterator[str]:
    """The URL of an empty CRM database migrated to head: a SQLite file or a PostgreSQL schema."""
    if database == "sqlite":
        url = f"sqlite:///{workdir / f'{label}-crm.db'}"
        upgrade(url=url)
        yield url
        return
    with postgres_schema(f"{label}_crm") as url:
        upgrade(url=url)
        yield url


@contextlib.contextmanager
def rasa_database(database: str, workdir: Path, label: str) -> Iterator[str]:
    """The URL of an empty database for one of Rasa's stores: a SQLite file or a PostgreSQL schema."""
    if database == "sqlite":
        yield f"sqlite:///{workdir / f'{label}.db'}"
        return
    with postgres_schema(label) as url:
        yield url


def vacuum_analyze(engine: Engine) -> None:
    """What autovacuum does to a live PostgreSQL database: statistics, visibility map, hint bits."""
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        connection.execute(text("VACUUM ANALYZE"))
    finally:
        connection.close()


def broker_table() -> Table:
    """The table Rasa's SQL event broker writes (rasa.core.brokers.sql: id, sender_id, data)."""
    return Table(
        "events",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("sender_id", String(255)),
        Column("data", Text),
    )


def tracker_table() -> Table:
    """The table Rasa's SQL tracker store writes (rasa.core.tracker_store.SQLTrackerStore.SQLEvent)."""
    return Table(
        "events",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("sender_id", String(255), nullable=False, index=True),
        Column("type_name", String(255), nullable=False),
        Column("timestamp", Float),
        Column("intent_name", String(255)),
        Column("action_name", String(255)),
        Column("data", Text),
    )


def publish(engine: Engine, table: Table, events: Sequence[dict[str, Any]], chunk: int = 5000) -> None:
    """Write events (dicts with a ``sender_id`` key) as Rasa's broker or tracker store writes them."""
    table.metadata.create_all(engine)
    tracker = "type_name" in table.c
    for start in range(0, len(events), chunk):
        rows = []
        for event in events[start : start + chunk]:
            row: dict[str, Any] = {"sender_id": event["sender_id"], "data": json.dumps(event)}
            if tracker:
                row |= {
                    "type_name": event["event"],
                    "timestamp": event.get("timestamp"),
                    "intent_name": ((event.get("parse_data") or {}).get("intent") or {}).get("name"),
                    "action_name": event.get("name") if event["event"] == "action" else None,
                }
            rows.append(row)
        with engine.begin() as connection:
            connection.execute(insert(table), rows)
