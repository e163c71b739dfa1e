"""Rasa's SQL event broker: erasing or purging never gives a new event an id the ingester has passed."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import insert, select

from bot.crm.rasa_events import EVENTS, TOMBSTONE, RasaEventStore
from bot.ingest.sql_broker import SqlEventSource


def publish(store: RasaEventStore, sender: str, text: str) -> int:
    with store.engine.begin() as connection:
        data = json.dumps({"event": "user", "text": text})
        result = connection.execute(insert(EVENTS).values(sender_id=sender, data=data))
        return int(result.inserted_primary_key[0])


def test_erasing_the_newest_events_keeps_new_ids_above_the_cursor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rasa-events.db'}"
    broker = RasaEventStore(name="event_broker", url=url)
    EVENTS.metadata.create_all(broker.engine)
    publish(broker, "rest:alice", "hello")
    publish(broker, "rest:bob", "my card number is 1234")
    cursor = publish(broker, "rest:bob", "delete my data")  # the ingester has read up to here

    assert broker.delete_for({"rest:bob"}) == 2
    assert broker.events_for({"rest:bob"}) == []
    with broker.engine.connect() as connection:
        rows = connection.execute(select(EVENTS.c.id, EVENTS.c.sender_id, EVENTS.c.data)).all()
    assert [tuple(row) for row in rows] == [(1, "rest:alice", rows[0].data), (cursor, "", TOMBSTONE)]

    new_id = publish(broker, "rest:carol", "hi")
    assert new_id > cursor
    [(_, event)] = SqlEventSource(url).fetch(after=cursor, limit=10)
    assert (event.sender_id, event.data["text"]) == ("rest:carol", "hi")


def test_purging_everything_ingested_keeps_new_ids_above_the_cursor(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rasa-events.db'}"
    broker = RasaEventStore(name="event_broker", url=url)
    EVENTS.metadata.create_all(broker.engine)
    cursor = max(publish(broker, "rest:alice", str(n)) for n in range(3))
    assert broker.purge_through(cursor) == 3
    assert broker.events_for({"rest:alice"}) == []
    assert publish(broker, "rest:alice", "again") == cursor + 1


def test_the_tracker_store_deletes_outright(tmp_path: Path) -> None:
    tracker = RasaEventStore(name="tracker_store", url=f"sqlite:///{tmp_path / 'tracker.db'}")
    EVENTS.metadata.create_all(tracker.engine)
    publish(tracker, "rest:bob", "hello")
    assert tracker.delete_for({"rest:bob"}) == 1
    with tracker.engine.connect() as connection:
        assert connection.execute(select(EVENTS.c.id)).all() == []
