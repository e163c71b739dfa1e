"""Rasa's SQL stores as patronbot runs them: the rows stock Rasa writes, in fewer commits."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.core.brokers.broker import EventBroker
from rasa.core.brokers.sql import SQLEventBroker
from rasa.core.tracker_store import SQLTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, Event, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig
from sqlalchemy import event, text

from bot.crm.database import make_engine, session_scope
from bot.crm.rasa_events import rasa_event_stores
from bot.runtime.endpoints import rasa_endpoints
from bot.settings import Settings
from rasa_server.speedups import STOCK_VALIDATE_ACTION_RESULT
from rasa_server.speedups import install as install_rasa_speedups
from rasa_server.stores import PUBLISH_LOCK, PatronEventBroker, PatronTrackerStore, StoreWriteError

DOMAIN = Domain.from_dict(
    {
        "intents": ["greet", "opening_hours"],
        "slots": {"language": {"type": "text", "mappings": [{"type": "custom"}]}},
        "responses": {},
    }
)
SENDER = "rest:alice"


def turn(text: str, intent: str, reply: str) -> list[Event]:
    return [
        UserUttered(text, intent={"name": intent, "confidence": 0.9}, parse_data={"text": text}),
        ActionExecuted("action_answer_faq"),
        BotUttered(reply),
        ActionExecuted("action_listen"),
    ]


def opening() -> list[Event]:
    return [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")]


def stores(urls: tuple[str, str]) -> tuple[TrackerStore, EventBroker]:
    """The stores Rasa itself makes from the endpoints file that `patronbot run` writes."""
    settings = Settings(_env_file=None, tracker_store_url=urls[0], event_broker_url=urls[1])  # type: ignore[call-arg]
    endpoints = rasa_endpoints(settings)
    broker = asyncio.run(EventBroker.create(EndpointConfig.from_dict(endpoints["event_broker"])))
    tracker_store = TrackerStore.create(EndpointConfig.from_dict(endpoints["tracker_store"]), DOMAIN, broker)
    return tracker_store, broker


def rows(url: str, table: str, columns: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row) for row in connection.execute(text(f"SELECT {columns} FROM {table} ORDER BY id"))
            ]
    finally:
        engine.dispose()


def save_two_turns(store: TrackerStore) -> list[Event]:
    """Save a session's first turn, then its second as Rasa does: retrieve, update, save. Returns all
    the events in order (a retrieved tracker starts at the session's `session_started` event)."""
    first = [*opening(), *turn("hi", "greet", "Hello!")]
    asyncio.run(store.save(DialogueStateTracker.from_events(SENDER, first)))
    again = asyncio.run(store.retrieve(SENDER))
    assert again is not None
    assert [e.as_dict() for e in again.events] == [e.as_dict() for e in first[1:]]
    second = [*turn("几点开门", "opening_hours", "8:00-22:00"), SlotSet("language", "zh")]
    for new_event in second:
        again.update(new_event)
    asyncio.run(store.save(again))
    return [*first, *second]


def test_rasa_loads_patronbots_stores_from_the_endpoints_file(rasa_store_urls: tuple[str, str]) -> None:
    tracker_store, broker = stores(rasa_store_urls)
    # Rasa falls back to an in-memory store, or to no broker, when it cannot import the named class.
    assert isinstance(tracker_store, PatronTrackerStore)
    assert isinstance(broker, PatronEventBroker)
    assert tracker_store.event_broker is broker


def test_a_conversation_is_stored_and_streamed_in_order(rasa_store_urls: tuple[str, str]) -> None:
    tracker_url, broker_url = rasa_store_urls
    tracker_store, _ = stores(rasa_store_urls)
    saved = save_two_turns(tracker_store)

    retrieved = asyncio.run(tracker_store.retrieve(SENDER))
    assert retrieved is not None
    assert [e.as_dict() for e in retrieved.events] == [e.as_dict() for e in saved[1:]]
    assert retrieved.get_slot("language") == "zh"
    # The broker has each event once, in order, with the sender, as Rasa's broker publishes them.
    streamed = rows(broker_url, "events", "sender_id, data")
    assert [(sender, json.loads(data)) for sender, data in streamed] == [
        (SENDER, {"sender_id": SENDER} | e.as_dict()) for e in saved
    ]
    stored = rows(tracker_url, "events", "sender_id, type_name, data")
    assert [(sender, type_name, json.loads(data)) for sender, type_name, data in stored] == [
        (SENDER, e.type_name, e.as_dict()) for e in saved
    ]


def test_rows_are_those_stock_rasa_writes(tmp_path: Path) -> None:
    """Stock Rasa's SQL tracker store and broker, and patronbot's, given the same turns."""
    stock_broker = SQLEventBroker(db=str(tmp_path / "stock-events.db"))
    stock = SQLTrackerStore(DOMAIN, db=str(tmp_path / "stock-tracker.db"), event_broker=stock_broker)
    ours_broker = PatronEventBroker(db=str(tmp_path / "events.db"))
    ours = PatronTrackerStore(domain=DOMAIN, db=str(tmp_path / "tracker.db"), event_broker=ours_broker)
    stock_events, our_events = save_two_turns(stock), save_two_turns(ours)

    def without_timestamps(data: str) -> dict[str, Any]:
        return {k: v for k, v in json.loads(data).items() if k != "timestamp"}

    tracker_columns = "sender_id, type_name, intent_name, action_name, data"
    ours_rows = rows(f"sqlite:///{tmp_path / 'tracker.db'}", "events", tracker_columns)
    stock_rows = rows(f"sqlite:///{tmp_path / 'stock-tracker.db'}", "events", tracker_columns)
    assert len(ours_rows) == len(our_events) == len(stock_events) == 12
    assert [(*row[:4], without_timestamps(row[4])) for row in ours_rows] == [
        (*row[:4], without_timestamps(row[4])) for row in stock_rows
    ]
    ours_streamed = rows(f"sqlite:///{tmp_path / 'events.db'}", "events", "sender_id, data")
    stock_streamed = rows(f"sqlite:///{tmp_path / 'stock-events.db'}", "events", "sender_id, data")
    assert [(s, without_timestamps(d)) for s, d in ours_streamed] == [
        (s, without_timestamps(d)) for s, d in stock_streamed
    ]
    assert len(ours_streamed) == 12


def test_a_turns_events_reach_the_broker_in_one_transaction(tmp_path: Path) -> None:
    broker = PatronEventBroker(db=str(tmp_path / "events.db"))
    store = PatronTrackerStore(domain=DOMAIN, db=str(tmp_path / "tracker.db"), event_broker=broker)
    commits: list[int] = []
    event.listen(broker.engine, "commit", lambda _connection: commits.append(1))
    save_two_turns(store)
    assert len(commits) == 2  # one per save, whatever the number of events (7, then 5)


def test_a_broker_batch_is_all_or_nothing(tmp_path: Path) -> None:
    broker = PatronEventBroker(db=str(tmp_path / "events.db"))
    with pytest.raises(StoreWriteError, match=r"could not write a turn .* \(TypeError at "):
        broker.publish_many([{"sender_id": SENDER, "event": "user"}, {"sender_id": SENDER, "x": object()}])
    assert rows(f"sqlite:///{tmp_path / 'events.db'}", "events", "id") == []


def test_sqlite_connections_are_reused_between_sessions(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    connects: list[int] = []
    event.listen(engine, "connect", lambda *_: connects.append(1))
    for _ in range(3):
        with session_scope(engine) as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    assert len(connects) == 1
    engine.dispose()


VALID = {"events": [{"event": "slot", "name": "language", "value": "zh"}], "responses": [{"text": "hi"}]}
INVALID = {"events": [{"event": "slot", "name": "language", "value": "zh"}], "responses": "hi"}


def test_action_responses_are_checked_as_rasa_checks_them() -> None:
    action = RemoteAction("action_answer_faq", None)
    original = RemoteAction._validate_action_result
    with pytest.raises(ValidationError) as stock_error:
        STOCK_VALIDATE_ACTION_RESULT(action, INVALID)
    install_rasa_speedups()
    installed = RemoteAction._validate_action_result
    install_rasa_speedups()
    try:
        assert installed is not STOCK_VALIDATE_ACTION_RESULT
        assert RemoteAction._validate_action_result is installed  # installing twice changes nothing
        assert action._validate_action_result(VALID) is True
        with pytest.raises(ValidationError) as error:
            action._validate_action_result(INVALID)
        assert error.value.message == stock_error.value.message
        assert "Failed to validate Action server response" in error.value.message
        with pytest.raises(ValidationError):
            action._validate_action_result({"events": [{"no_event_key": 1}]})
    finally:
        RemoteAction._validate_action_result = original


def test_a_patron_erased_during_a_turn_is_not_written_back(rasa_store_urls: tuple[str, str]) -> None:
    """Erasure deletes the stored events while a turn holds the tracker it read; the turn's save then
    writes only its own events (Rasa's own save counts the stored events and writes the session back)."""
    tracker_url, broker_url = rasa_store_urls
    tracker_store, _ = stores(rasa_store_urls)
    first = [*opening(), *turn("my card number is 1234", "greet", "Hello!")]
    asyncio.run(tracker_store.save(DialogueStateTracker.from_events(SENDER, first)))
    during = asyncio.run(tracker_store.retrieve(SENDER))
    assert during is not None
    for store in rasa_event_stores(tracker_url=tracker_url, broker_url=broker_url):
        assert store.delete_for({SENDER}) > 0  # `patronbot patron erase` while the turn runs
        store.dispose()
    second = turn("几点开门", "opening_hours", "8:00-22:00")
    for new_event in second:
        during.update(new_event)
    asyncio.run(tracker_store.save(during))

    stored = [json.loads(data) for (data,) in rows(tracker_url, "events", "data")]
    assert [e.get("text") for e in stored] == ["几点开门", None, "8:00-22:00", None]
    streamed = [json.loads(data) for _, data in rows(broker_url, "events", "sender_id, data") if data]
    assert "my card number is 1234" not in json.dumps(streamed, ensure_ascii=False)
    messages = [e.get("text") for e in streamed if e.get("event") in ("user", "bot")]
    assert messages == ["几点开门", "8:00-22:00"]


def test_publishers_on_postgresql_commit_in_the_order_of_their_ids(rasa_store_urls: tuple[str, str]) -> None:
    """Two Rasa instances publish at once. The first has its rows' ids but has not committed; the second
    must not commit rows with higher ids meanwhile, or the ingester (`id > cursor`) would pass the first's."""
    _, broker_url = rasa_store_urls
    if not broker_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time; the lock is PostgreSQL's")
    first, second = stores(rasa_store_urls)[1], stores(rasa_store_urls)[1]
    reader = make_engine(broker_url)
    seen_before_first_commit: list[tuple[Any, ...]] = []

    def meanwhile(*_: Any) -> None:
        """After the first publisher's INSERT, before its COMMIT: the second one publishes."""
        other = threading.Thread(
            target=second.publish_many, args=([{"sender_id": "rest:b", "event": "user"}],)
        )
        other.start()
        other.join(timeout=1.0)  # finishes only if it did not wait for the first
        with reader.connect() as connection:
            seen_before_first_commit.extend(connection.execute(text("SELECT id, sender_id FROM events")))
        threads.append(other)

    threads: list[threading.Thread] = []
    event.listen(first.sessionmaker, "after_flush", meanwhile, once=True)
    try:
        first.publish_many(
            [{"sender_id": "rest:a", "event": "user"}, {"sender_id": "rest:a", "event": "bot"}]
        )
        for thread in threads:
            thread.join(timeout=10)
        assert seen_before_first_commit == []
        assert [sender for _, sender in rows(broker_url, "events", "id, sender_id")] == [
            "rest:a",
            "rest:a",
            "rest:b",
        ]
    finally:
        reader.dispose()
        first.engine.dispose()
        second.engine.dispose()


def test_publish_many_takes_the_advisory_lock_on_postgresql(rasa_store_urls: tuple[str, str]) -> None:
    _, broker_url = rasa_store_urls
    if not broker_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time; the lock is PostgreSQL's")
    broker = stores(rasa_store_urls)[1]
    held: list[int] = []

    def look(session: Any, *_: Any) -> None:
        query = text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND ((classid::bigint << 32) | objid::bigint) = :key"
        )
        held.append(int(session.execute(query, {"key": PUBLISH_LOCK}).scalar_one()))

    event.listen(broker.sessionmaker, "after_flush", look, once=True)
    broker.publish_many([{"sender_id": SENDER, "event": "user"}])
    broker.engine.dispose()
    assert held == [1]
