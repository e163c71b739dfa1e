"""Schema migrations of the CRM database (Alembic), as `patronbot db upgrade` runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bot.crm.database import make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# Tables the CRM database holds but the models do not: SQLite's own, and APScheduler's job store
# (bot/outreach/scheduler.py), which APScheduler creates and manages itself.
UNMANAGED_TABLES = ("sqlite_sequence", "apscheduler_jobs")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave tables Alembic does not manage (SQLite's sqlite_sequence, APScheduler's jobs) out of
    autogenerate, with their indexes."""
    if type_ == "table":
        return name not in UNMANAGED_TABLES
    table = getattr(getattr(obj, "table", None), "name", None)
    return table not in UNMANAGED_TABLES


def alembic_config(*, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["url"] = url
    return config


def upgrade(*, url: str, revision: str = "head") -> None:
    """Bring the database at `url` up to `revision` (default: the newest)."""
    command.upgrade(alembic_config(url=url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config(url="sqlite://")).get_current_head()


def current_revision(*, url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
