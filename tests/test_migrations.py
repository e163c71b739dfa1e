"""Alembic migrations: they build the schema from empty, and they match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from bot.migrate import current_revision, head_revision
from bot.models import Base


def test_upgrade_from_empty_reaches_head(crm: Engine, crm_url: str) -> None:
    assert current_revision(url=crm_url) == head_revision()
    tables = set(inspect(crm).get_table_names())
    assert {"patron", "channel_identity", "interaction", "ingest_cursor"} <= tables


def test_models_and_migrations_agree(crm: Engine) -> None:
    with crm.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
