"""Alembic migrations: every revision upgrades to head, with data, and head matches the models."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from bot.database import make_engine
from bot.migrate import alembic_config, current_revision, head_revision, include_object, upgrade
from bot.models import Base


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(url="sqlite://"))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_upgrade_from_empty_reaches_head(crm: Engine, crm_url: str) -> None:
    assert current_revision(url=crm_url) == head_revision()
    tables = set(inspect(crm).get_table_names())
    assert {table.name for table in Base.metadata.sorted_tables} <= tables


def test_models_and_migrations_agree(crm: Engine) -> None:
    with crm.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


@pytest.fixture
def empty_url(crm_url: str) -> str:
    """The test database taken back to no schema at all (downgrade to base)."""
    from alembic import command

    command.downgrade(alembic_config(url=crm_url), "base")
    return crm_url


@pytest.mark.parametrize("start", revisions()[:-1])
def test_every_earlier_revision_upgrades_to_head_keeping_data(empty_url: str, start: str) -> None:
    upgrade(url=empty_url, revision=start)
    engine = make_engine(empty_url)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO patron (id, language, created_at, last_seen_at) VALUES (1, 'zh', :now, :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO interaction (id, patron_id, channel, direction, text, event_key, occurred_at,"
                " recorded_at) VALUES (1, 1, 'rest', 'in', '续借', 'k1', :now, :now)"
            ),
            {"now": now},
        )
    upgrade(url=empty_url)
    assert current_revision(url=empty_url) == head_revision()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT text FROM interaction WHERE id = 1")).scalar_one() == "续借"
        assert connection.execute(text("SELECT reachable FROM patron WHERE id = 1")).scalar_one() in (True, 1)
    engine.dispose()


def test_downgrade_to_base_and_back(empty_url: str) -> None:
    assert current_revision(url=empty_url) is None
    upgrade(url=empty_url)
    assert current_revision(url=empty_url) == head_revision()
