"""Shared fixtures: a migrated CRM database per test (on SQLite always, on PostgreSQL when set), and facts."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from _pytest.logging import LogCaptureHandler
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from starlette.testclient import TestClient

from bot.crm.database import make_engine
from bot.crm.migrate import upgrade
from bot.knowledge.facts import LibraryFacts, parse_facts
from bot.runtime.logs import QUIET_LOGGERS
from bot.settings import PROJECT_ROOT

POSTGRES_URL = os.environ.get("PATRONBOT_TEST_POSTGRES_URL", "")
REDIS_URL = os.environ.get("PATRONBOT_TEST_REDIS_URL", "")

DATABASES = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's .env or PATRONBOT_* variables, and each has its own data dir."""
    for name in list(os.environ):
        if name.startswith("PATRONBOT_") and not name.startswith("PATRONBOT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATRONBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    from bot.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _postgres_schema_url(schema: str) -> str:
    url = make_url(POSTGRES_URL)
    return str(url.update_query_dict({"options": f"-csearch_path={schema}"}))


@contextlib.contextmanager
def _database(kind: str, tmp_path: Path, name: str) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / name}"
        return
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _postgres_schema_url(schema)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _restored_logging() -> Iterator[None]:
    """A test that runs the command line in-process (which configures logging) leaves the next test
    the logging it found."""
    root = logging.getLogger()
    # pytest's capture handlers are its own per phase; the rest are what the test found.
    handlers = [handler for handler in root.handlers if not isinstance(handler, LogCaptureHandler)]
    level = root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = [handler for handler in root.handlers if isinstance(handler, LogCaptureHandler)]
    root.handlers += handlers
    root.setLevel(level)
    for name, quiet_level in quiet.items():
        logging.getLogger(name).setLevel(quiet_level)


@pytest.fixture(params=DATABASES)
def crm_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty CRM database migrated to head: a SQLite file, or a PostgreSQL schema."""
    with _database(request.param, tmp_path, "crm.db") as url:
        upgrade(url=url)
        yield url


@pytest.fixture(params=DATABASES)
def rasa_store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases (SQLite files, or PostgreSQL schemas): for a tracker store and an event broker."""
    with (
        _database(request.param, tmp_path, "rasa-tracker.db") as tracker_url,
        _database(request.param, tmp_path, "rasa-events.db") as broker_url,
    ):
        yield tracker_url, broker_url


@pytest.fixture
def crm(crm_url: str) -> Iterator[Engine]:
    engine = make_engine(crm_url)
    yield engine
    engine.dispose()


@pytest.fixture
def facts() -> LibraryFacts:
    """The shipped facts with librarians on duty Monday to Friday 09:00-17:00, answering within 45 min."""
    raw = yaml.safe_load((PROJECT_ROOT / "knowledge" / "library.yml").read_text(encoding="utf-8"))
    raw["staffed_hours"] = dict.fromkeys(("monday", "tuesday", "wednesday", "thursday"), "09:00-17:00")
    raw["staffed_hours"] |= {"friday": "09:00-17:00", "saturday": "closed", "sunday": "closed"}
    raw["staff_response_minutes"] = 45
    return parse_facts(raw)


@pytest.fixture
def console(crm: Engine, crm_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """The staff console on the test CRM, through Starlette's test client, with a copy of the knowledge
    base (the console's editor writes it: never the repository's)."""
    from bot.settings import Settings
    from console.app import create_app

    kb = tmp_path / "knowledge-base.yml"
    kb.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    settings = Settings(_env_file=None, database_url=crm_url, knowledge_base=kb)  # type: ignore[call-arg]
    with TestClient(create_app(settings=settings, engine=crm), base_url="http://console.test") as client:
        yield client
