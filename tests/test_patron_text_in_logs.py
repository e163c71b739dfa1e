"""When a store fails to write a turn, no log line (Rasa's included) holds the patron's words or id."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from rasa.core.brokers.broker import EventBroker
from rasa.core.brokers.pika import PikaEventBroker
from rasa.core.channels.channel import UserMessage
from rasa.core.tracker_store import FailSafeTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.crm.database import describe_error, make_engine, session_scope
from bot.ingest.sql_broker import SqlEventSource, run_ingester
from bot.runtime.endpoints import PIKA_BROKER_CLASS, rasa_endpoints
from bot.settings import Settings
from rasa_server.stores import PatronPikaEventBroker
from tests.factories import broker_table, publish, user_event

WORDS = "my card number is 12345, I am Alice Smith"
SENDER = "rest:alice-smith-7781"
SECRETS = ("12345", "Alice Smith", "alice-smith-7781")
DOMAIN = Domain.from_dict({"intents": ["greet"], "responses": {}})


def logged(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged or printed since the test began."""
    out, err = capsys.readouterr()
    return caplog.text + out + err + STRUCTLOG.getvalue()


# Rasa logs some events through structlog, which prints; the tests read what it printed here.
STRUCTLOG = io.StringIO()


@pytest.fixture(autouse=True)
def structlog_output() -> Iterator[None]:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=STRUCTLOG))
    STRUCTLOG.seek(0)
    STRUCTLOG.truncate()
    yield
    structlog.reset_defaults()


def assert_no_patron_data(output: str) -> None:
    assert [secret for secret in SECRETS if secret in output] == []


def refuse_inserts(url: str, table: str) -> None:
    """Make every insert into `table` fail, as a full disk or a broken constraint would."""
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(f"CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END")
        )
    engine.dispose()


def stores(tmp_path: Path) -> tuple[str, str, TrackerStore]:
    """Rasa's stores as `patronbot run` configures them, wrapped as Rasa's agent wraps them."""
    tracker_url = f"sqlite:///{tmp_path / 'tracker.db'}"
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    settings = Settings(_env_file=None, tracker_store_url=tracker_url, event_broker_url=broker_url)  # type: ignore[call-arg]
    endpoints = rasa_endpoints(settings)
    broker = asyncio.run(EventBroker.create(EndpointConfig.from_dict(endpoints["event_broker"])))
    store = TrackerStore.create(EndpointConfig.from_dict(endpoints["tracker_store"]), DOMAIN, broker)
    return tracker_url, broker_url, FailSafeTrackerStore(store)


def a_turn() -> DialogueStateTracker:
    events = [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered(WORDS, intent={"name": "greet", "confidence": 0.9}, parse_data={"text": WORDS}),
    ]
    return DialogueStateTracker.from_events(SENDER, events)


def test_a_failing_tracker_store_write_is_logged_without_the_patrons_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker_url, _, store = stores(tmp_path)
    refuse_inserts(tracker_url, "events")
    caplog.set_level(logging.INFO)
    asyncio.run(store.save(a_turn()))  # Rasa's fail-safe store logs the error and keeps the turn in memory
    output = logged(caplog, capsys)
    assert "the tracker store could not write a turn of conversation" in output
    assert "IntegrityError" in output
    assert_no_patron_data(output)


def test_a_failing_broker_write_that_reaches_the_channel_is_logged_without_the_patrons_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker fails for Rasa's fail-safe fallback too, so the error escapes to the REST channel."""
    from tests.test_rest_input import _exchange

    _, broker_url, store = stores(tmp_path)
    refuse_inserts(broker_url, "events")
    caplog.set_level(logging.INFO)

    async def bot(message: UserMessage) -> None:
        intent = {"name": "greet", "confidence": 0.9}
        await store.save(
            DialogueStateTracker.from_events(message.sender_id, [UserUttered(message.text, intent=intent)])
        )

    body = {"sender": "alice-smith-7781", "message": WORDS}
    [answer] = asyncio.run(_exchange([("POST", "/webhooks/rest/webhook", {"json": body})], bot=bot))
    assert answer.status_code == 200  # the patron gets an apology, not a 500
    output = caplog.text + STRUCTLOG.getvalue()  # the channel's own logs and Rasa's
    assert "the event broker could not write a turn of conversation" in output
    assert "rest: handling a message from" in output
    assert "rasa_server/stores.py" in output  # where it failed, for whoever must fix it
    assert_no_patron_data(output)


def test_a_failing_crm_write_is_logged_without_the_patrons_words(
    crm: Engine,
    crm_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker_url = f"sqlite:///{tmp_path / 'events.db'}"
    broker = make_engine(broker_url)
    publish(broker, broker_table(broker), [user_event(SENDER, WORDS)])
    if crm.dialect.name == "postgresql":
        # A refusal whose message quotes the row, as PostgreSQL's data errors and triggers can.
        with crm.begin() as connection:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused % of %', NEW.text, NEW.channel; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON interaction "
                    "FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
    else:
        refuse_inserts(crm_url, "interaction")
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    options = {"crm": crm, "crm_url": crm_url, "source": SqlEventSource(broker_url), "stop": stop}
    ingester = threading.Thread(target=run_ingester, kwargs=options)
    ingester.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            phrase in caplog.text for phrase in ("could not be ingested", "ingest failed")
        ):
            time.sleep(0.1)
    finally:
        stop.set()
        ingester.join(timeout=30)
    output = logged(caplog, capsys)
    assert "could not be ingested" in output or "ingest failed" in output
    assert_no_patron_data(output)


def test_a_database_error_is_described_by_its_kind_when_it_may_quote_data() -> None:
    import sqlite3

    refused = IntegrityError("INSERT ...", {"text": WORDS}, sqlite3.IntegrityError(f"refused {WORDS}"))
    unreachable = OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    assert WORDS not in describe_error(refused, "sqlite:///crm.db")
    assert "IntegrityError" in describe_error(refused, "sqlite:///crm.db")
    assert describe_error(unreachable, "sqlite:///crm.db") == "database sqlite:///crm.db: database is locked"


def test_engines_keep_statement_values_out_of_errors(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with pytest.raises(OperationalError) as failed, session_scope(engine) as session:
        session.execute(text("INSERT INTO nowhere VALUES (:words)"), {"words": WORDS})
    assert WORDS not in str(failed.value)


class _RefusingExchange:
    async def publish(self, message: Any, routing_key: str) -> None:
        raise ConnectionError(f"cannot publish {message.body!r}")


@pytest.mark.parametrize("broker_class", [PatronPikaEventBroker, PikaEventBroker], ids=["patronbot", "stock"])
def test_a_failed_rabbitmq_publish_is_logged_without_the_event(
    broker_class: type[PikaEventBroker],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rasa's own Pika broker logs "a reduced version" of the event it failed to publish, with the
    patron's words: `patronbot run` names patronbot's, which does not."""
    event = {"sender_id": SENDER, "event": "user", "text": WORDS, "parse_data": {"text": WORDS}}

    async def publish() -> PikaEventBroker:
        broker = broker_class("127.0.0.1", "guest", "guest", queues=["patronbot_events"])
        broker._exchange = _RefusingExchange()
        await broker._publish(event)
        return broker

    caplog.set_level(logging.INFO)
    broker = asyncio.run(publish())
    output = logged(caplog, capsys)
    if broker_class is PikaEventBroker:
        assert WORDS in output  # why patronbot has its own
        return
    assert "publishing an event of conversation" in output
    assert_no_patron_data(output)
    assert list(broker._unpublished_events) == [event]  # kept to publish later, as Rasa's does


def test_patronbot_run_names_its_own_rabbitmq_broker() -> None:
    settings = Settings(_env_file=None, event_broker_url="amqp://guest:guest@127.0.0.1:5672/")  # type: ignore[call-arg]
    assert rasa_endpoints(settings)["event_broker"]["type"] == PIKA_BROKER_CLASS
