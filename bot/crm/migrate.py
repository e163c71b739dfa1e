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


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave databases' own bookkeeping tables (SQLite's sqlite_sequence) out of autogenerate."""
    return not (type_ == "table" and name == "sqlite_sequence")


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
