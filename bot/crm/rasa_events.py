"""Rasa's own event tables (the SQL tracker store and the SQL event broker), for privacy requests."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from bot.crm.database import make_engine

# What an erased or purged broker row becomes when it is the newest row (see _delete_keeping_ids).
TOMBSTONE = json.dumps({"event": "erased"})

# Both stores name their table "events" (rasa.core.brokers.sql.SQLEventBroker.SQLBrokerEvent and
# rasa.core.tracker_store.SQLTrackerStore.SQLEvent); the tracker store adds columns the broker lacks.
EVENTS = Table(
    "events",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255)),
    Column("data", Text),
)
_tracker_events = Table(
    "events",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("sender_id", String(255)),
    Column("timestamp", Float),
    Column("data", Text),
)


class RasaEventStore:
    """One of Rasa's SQL event tables: read or delete a patron's events, or purge old ones."""

    def __init__(self, *, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def _table_exists(self) -> bool:
        return bool(inspect(self.engine).has_table("events"))

    def events_for(self, senders: Collection[str]) -> list[dict[str, Any]]:
        if not senders or not self._table_exists():
            return []
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(EVENTS.c.sender_id, EVENTS.c.data)
                .where(EVENTS.c.sender_id.in_(list(senders)))
                .order_by(EVENTS.c.id)
            ).all()
        result = []
        for sender_id, data in rows:
            try:
                event = json.loads(data)
            except (TypeError, ValueError):
                event = {"unparsed": data}
            result.append({"sender_id": sender_id, **event})
        return result

    def delete_for(self, senders: Collection[str]) -> int:
        if not senders or not self._table_exists():
            return 0
        with self.engine.begin() as connection:
            return self._delete(connection, EVENTS.c.sender_id.in_(list(senders)))

    def _delete(self, connection: Connection, condition: ColumnElement[Any]) -> int:
        """Delete the rows matching `condition`. In the event broker the newest row is blanked instead:
        SQLite gives a new row the highest id + 1, so deleting the newest rows would hand their ids to
        new events, which the ingester's cursor has already passed and would never read."""
        if self.name != "event_broker":
            result: Any = connection.execute(delete(EVENTS).where(condition))
            return int(result.rowcount or 0)
        newest = connection.execute(select(func.max(EVENTS.c.id))).scalar()
        keep = EVENTS.c.id == newest
        result = connection.execute(delete(EVENTS).where(condition, ~keep))
        blanked: Any = connection.execute(
            update(EVENTS).where(condition, keep).values(sender_id="", data=TOMBSTONE)
        )
        return int(result.rowcount or 0) + int(blanked.rowcount or 0)

    def _has_timestamps(self) -> bool:
        """Whether this is the tracker store's table (the broker's has no timestamp column)."""
        columns = {column["name"] for column in inspect(self.engine).get_columns("events")}
        return "timestamp" in columns

    def holds_since(self, senders: Collection[str], at: float) -> bool | None:
        """Whether the table holds an event of these conversations from `at` on; None where it cannot
        tell (the broker keeps no times)."""
        if not senders or not self._table_exists() or not self._has_timestamps():
            return None
        with self.engine.connect() as connection:
            found = connection.execute(
                select(_tracker_events.c.id)
                .where(_tracker_events.c.sender_id.in_(list(senders)), _tracker_events.c.timestamp >= at)
                .limit(1)
            ).first()
        return found is not None

    def delete_before(self, senders: Collection[str], at: float) -> int:
        """Delete these conversations' events from before `at` (a Unix time; the tracker store only)."""
        if not senders or not self._table_exists() or not self._has_timestamps():
            return 0
        with self.engine.begin() as connection:
            result: Any = connection.execute(
                delete(_tracker_events).where(
                    _tracker_events.c.sender_id.in_(list(senders)), _tracker_events.c.timestamp <= at
                )
            )
        return int(result.rowcount or 0)

    def purge_before(self, cutoff: float) -> int:
        """Delete events older than `cutoff` (a Unix time); only the tracker store has timestamps."""
        if not self._table_exists() or not self._has_timestamps():
            return 0
        with self.engine.begin() as connection:
            result: Any = connection.execute(
                delete(_tracker_events).where(_tracker_events.c.timestamp < cutoff)
            )
        return int(result.rowcount or 0)

    def purge_through(self, last_id: int, *, keep: Collection[int] = ()) -> int:
        """Delete rows up to and including id `last_id` (the broker's rows the ingester has copied),
        except those in `keep` (rows the ingester could not write and holds back)."""
        if not self._table_exists():
            return 0
        condition = EVENTS.c.id <= last_id
        if keep:
            condition = and_(condition, EVENTS.c.id.not_in(sorted(keep)))
        with self.engine.begin() as connection:
            return self._delete(connection, condition)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def rasa_event_stores(*, tracker_url: str, broker_url: str) -> list[RasaEventStore]:
    """Rasa's stores that hold patron events and that patronbot can reach (SQL ones)."""
    stores = []
    if tracker_url != "memory":
        stores.append(RasaEventStore(name="tracker_store", url=tracker_url))
    if not broker_url.startswith("amqp://"):
        stores.append(RasaEventStore(name="event_broker", url=broker_url))
    return stores
