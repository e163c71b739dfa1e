"""Alembic migrations: every revision upgrades to head, with data, and head matches the models."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.migrate import alembic_config, current_revision, head_revision, include_object, upgrade
from bot.crm.models import Base


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


def test_0003_keeps_escalations_and_admits_a_helpful_only_feedback(empty_url: str) -> None:
    upgrade(url=empty_url, revision="0002")
    engine = make_engine(empty_url)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO patron (id, language, created_at, last_seen_at) VALUES (1, 'zh', :now, :now)"),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO escalation (id, patron_id, reason, priority, status, created_at, due_at)"
                " VALUES (1, 1, 'requested', 'high', 'open', :now, :now)"
            ),
            {"now": now},
        )
    upgrade(url=empty_url)
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT priority, channel, rasa_sender_id FROM escalation WHERE id = 1")
        ).one()
        assert tuple(row) == ("high", None, None)
        connection.execute(
            text("INSERT INTO feedback (patron_id, helpful, created_at) VALUES (1, :yes, :now)"),
            {"yes": True, "now": now},
        )
        connection.execute(
            text(
                "INSERT INTO outbox (channel, recipient, patron_id, text, produced_by, created_at)"
                " VALUES ('rest', 'rest:a', 1, 'hi', 'staff:li', :now)"
            ),
            {"now": now},
        )
    # The other checks survived the rebuild of the feedback table.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("INSERT INTO feedback (csat, created_at) VALUES (9, :now)"), {"now": now})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("INSERT INTO feedback (topic, created_at) VALUES ('x', :now)"), {"now": now})
    engine.dispose()


def test_0005_keys_the_digests_of_patrons_erased_before_it(empty_url: str) -> None:
    """Late events of a patron erased under 0004's plain SHA-256 digests are still dropped after the
    upgrade, and no digest anyone could recompute from an id is left in the table."""
    from bot.crm.database import session_scope
    from bot.ingest.events import IngestState, ingest_events
    from bot.privacy.erasure import erased_at, sender_digest
    from tests.factories import user_event

    upgrade(url=empty_url, revision="0004")
    engine = make_engine(empty_url)
    erased = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    plain = hashlib.sha256(b"rest:yan").hexdigest()
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO erased_sender (sender_digest, erased_at) VALUES (:digest, :at)"),
            {"digest": plain, "at": erased},
        )
    upgrade(url=empty_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT sender_digest FROM erased_sender")).scalars().all()
    assert stored == [sender_digest("rest:yan")]
    assert plain not in stored
    with Session(engine, future=True) as session:
        assert erased_at(session=session, senders=["rest:yan", "rest:bob"]) == {"rest:yan": erased}
    late = user_event("rest:yan", "my card number is 42", timestamp=erased.timestamp() - 60)
    with session_scope(engine) as session:
        assert ingest_events(session=session, events=[late], state=IngestState()) == 0
    engine.dispose()


def test_0005_refuses_to_downgrade_keyed_digests(crm_url: str) -> None:
    from alembic import command

    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    engine = make_engine(crm_url)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO erased_sender (sender_digest, erased_at) VALUES (:digest, :at)"),
            {"digest": "0" * 64, "at": now},
        )
    command.downgrade(alembic_config(url=crm_url), "0005")
    with pytest.raises(RuntimeError, match="cannot be undone"):
        command.downgrade(alembic_config(url=crm_url), "0004")
    assert current_revision(url=crm_url) == "0005"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM erased_sender")).scalar_one() == 1
    engine.dispose()


def test_0006_links_reports_keeps_their_numbers_and_closes_escalations_left_open_by_an_erasure(
    empty_url: str,
) -> None:
    """Before 0006 an erasure left its patron's open escalations open; 0006 closes them as an erasure
    now does, keeps every report (a deleted last number is not handed out again on SQLite either),
    and downgrades back to 0005 with the reports."""
    from alembic import command

    upgrade(url=empty_url, revision="0005")
    engine = make_engine(empty_url)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO patron (id, language, created_at, last_seen_at) VALUES (1, 'zh', :now, :now)"),
            {"now": now},
        )
        for number, patron, status in [(1, None, "open"), (2, 1, "open"), (3, None, "resolved")]:
            connection.execute(
                text(
                    "INSERT INTO escalation (id, patron_id, reason, priority, status, created_at, due_at)"
                    " VALUES (:id, :patron, 'complaint', 'high', :status, :now, :now)"
                ),
                {"id": number, "patron": patron, "status": status, "now": now},
            )
        for _ in range(2):  # numbered by the database, as the bot's reports are
            connection.execute(
                text(
                    "INSERT INTO suggestion (patron_id, kind, text, status, created_at)"
                    " VALUES (1, 'complaint', '太吵了', 'new', :now)"
                ),
                {"now": now},
            )
        connection.execute(text("DELETE FROM suggestion WHERE id = 2"))
    upgrade(url=empty_url)
    with engine.begin() as connection:
        escalations = connection.execute(
            text("SELECT id, status, resolution_note FROM escalation ORDER BY id")
        ).all()
        assert [tuple(row) for row in escalations] == [
            (1, "cancelled", "closed: the patron's data was erased at their request"),
            (2, "open", None),
            (3, "resolved", None),
        ]
        kept = connection.execute(
            text("SELECT id, text, escalation_id, rasa_sender_id FROM suggestion")
        ).all()
        assert [tuple(row) for row in kept] == [(1, "太吵了", None, None)]
        connection.execute(
            text(
                "INSERT INTO suggestion (patron_id, kind, status, created_at)"
                " VALUES (1, 'service', 'new', :now)"
            ),
            {"now": now},
        )
        connection.execute(text("UPDATE suggestion SET escalation_id = 2 WHERE id = 1"))
        assert connection.execute(text("SELECT max(id) FROM suggestion")).scalar_one() == 3
    # The link is a foreign key: an escalation that is not there is refused.
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE suggestion SET escalation_id = 99 WHERE id = 1"))
    command.downgrade(alembic_config(url=empty_url), "0005")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM suggestion")).scalar_one() == 2
        assert "escalation_id" not in {
            column["name"] for column in inspect(connection).get_columns("suggestion")
        }
    upgrade(url=empty_url)
    assert current_revision(url=empty_url) == head_revision()
    engine.dispose()
