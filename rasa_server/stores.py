"""Rasa's SQL tracker store and event broker, with a turn's events written in two commits, not ten.

Rasa 3.6's `SQLTrackerStore.save` reads the whole stored tracker back to find the new events, then
hands them to the event broker one at a time, and `SQLEventBroker.publish` opens a connection and
commits for each. These subclasses keep Rasa's tables, rows and order (broker first, then tracker
store). The new events are those after what the turn read (so an erasure during a turn is not
undone by its save); the broker gets them in one transaction; SQLite connections are pooled. `patronbot run`
names them in the endpoints file. Rasa falls back to an in-memory store (or no broker) when such a
class cannot be imported, so tests/test_rasa_stores.py loads them from that file as Rasa does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from rasa.core.brokers.pika import PikaEventBroker
from rasa.core.brokers.sql import SQLEventBroker
from rasa.core.tracker_store import SQLTrackerStore, create_engine_kwargs
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot.crm.database import sqlite_file_pool, tune_every_sqlite_connection
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure

log = logging.getLogger(__name__)

# The PostgreSQL advisory lock key that orders publishers' transactions (any fixed 64-bit number:
# "patronbo" in ASCII). Advisory locks are per database, so it serialises every broker table in it.
PUBLISH_LOCK = 0x70_61_74_72_6F_6E_62_6F


class StoreWriteError(RuntimeError):
    """A Rasa store could not write a turn. Its message names the store, the conversation's pseudonym
    and the failure's kind, never the events: Rasa logs this message (its fail-safe tracker store), and
    a database error's own message quotes the statement's values, the patron's words among them."""


def _write_error(store: str, sender_id: str, error: Exception) -> StoreWriteError:
    return StoreWriteError(
        f"the {store} could not write a turn of conversation {fingerprint(sender_id)} "
        f"({describe_failure(error)})"
    )


def _engine(engine: Engine) -> Engine:
    """The same database with statement parameters kept out of errors (a failed insert's error would
    otherwise carry the sender id and the event's JSON), and a SQLite file's connections pooled."""
    url = engine.url
    engine.dispose()
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        tune_every_sqlite_connection()
        pooled: Engine = sa.create_engine(url, hide_parameters=True, **sqlite_file_pool())
        return pooled
    made: Engine = sa.create_engine(url, hide_parameters=True, **create_engine_kwargs(url))
    return made


class PatronEventBroker(SQLEventBroker):  # type: ignore[misc]
    """Rasa's SQL event broker (same `events` table), publishing a turn's events in one transaction."""

    def __init__(  # noqa: PLR0917 (Rasa's signature: it passes these by keyword)
        self,
        dialect: str = "sqlite",
        host: str | None = None,
        port: int | None = None,
        db: str = "events.db",
        username: str | None = None,
        password: str | None = None,
        query: dict[str, str] | None = None,
    ) -> None:
        # Not super().__init__: Rasa's broker ignores `query` (a PostgreSQL schema is set there).
        url = SQLTrackerStore.get_db_url(dialect, host, port, db, username, password, query=query)
        self.engine = _engine(sa.create_engine(url))
        self.Base.metadata.create_all(self.engine)
        self.sessionmaker = sa.orm.sessionmaker(bind=self.engine)

    def publish(self, event: dict[str, Any]) -> None:
        """Store one event (as Rasa's own `publish`, through the same lock as `publish_many`)."""
        self.publish_many([event])

    def publish_many(self, events: Sequence[dict[str, Any]]) -> None:
        """Store `events` in order, all or none.

        On PostgreSQL, publishers (several Rasa instances) take turns: each holds an advisory lock from
        before its rows get their ids until its commit. Without it one could take ids 101-110, another
        111-115 and commit first; the ingester, which reads `id > cursor`, would pass 101-110 for good.
        SQLite has one writer at a time already.
        """
        if not events:
            return
        try:
            with self.session_scope() as session:
                if self.engine.dialect.name == "postgresql":
                    session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PUBLISH_LOCK})
                session.add_all(
                    self.SQLBrokerEvent(sender_id=event.get("sender_id"), data=json.dumps(event))
                    for event in events
                )
                session.commit()
        except Exception as error:
            raise _write_error("event broker", str(events[0].get("sender_id") or ""), error) from None


class PatronTrackerStore(SQLTrackerStore):  # type: ignore[misc]
    """Rasa's SQL tracker store (same `events` table and rows), without re-reading the tracker to save it.

    A turn reads its conversation's tracker, then saves it, under the lock store's lock; what it
    saves is what came after what it read. Rasa counts the stored events instead, so a patron erased
    during a turn had the whole session written back by that turn's save; here only the turn's own
    events are. A save with no read before it (a new conversation) counts, as Rasa does.
    """

    REMEMBERED = 10_000  # conversations whose read length is kept; more means a leak, so start over

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine: Engine = _engine(self.engine)
        self.sessionmaker: sessionmaker = sa.orm.sessionmaker(bind=self.engine)  # type: ignore[type-arg]
        self._read: dict[str, int] = {}

    async def retrieve(self, sender_id: str) -> DialogueStateTracker | None:
        tracker: DialogueStateTracker | None = await super().retrieve(sender_id)
        if len(self._read) >= self.REMEMBERED:
            self._read.clear()
        self._read[sender_id] = len(tracker.events) if tracker is not None else 0
        return tracker

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Publish the events not yet stored, then store them (the order of Rasa's own `save`). A failure
        is raised as a StoreWriteError, which says what failed without the events."""
        try:
            await self._save(tracker)
        except StoreWriteError:
            raise
        except Exception as error:
            raise _write_error("tracker store", tracker.sender_id, error) from None

    async def _retrieve(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> DialogueStateTracker | None:
        """Rasa's own read, in a worker thread: the query and rebuilding the tracker held the event loop,
        and with it every webhook request under way."""
        return await asyncio.to_thread(self._read_tracker, sender_id, fetch_events_from_all_sessions)

    def _read_tracker(self, sender_id: str, all_sessions: bool) -> DialogueStateTracker | None:
        with self.session_scope() as session:
            rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=all_sessions).all()
            events = [json.loads(row.data) for row in rows]
        if self.domain and events:
            return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots)
        return None

    async def _save(self, tracker: DialogueStateTracker) -> None:
        read = self._read.pop(tracker.sender_id, None)
        events = list(tracker.events)
        if self.event_broker is None or isinstance(self.event_broker, PatronEventBroker):
            # All of it is database work: done in a worker thread, off the event loop.
            await asyncio.to_thread(self._write, tracker.sender_id, events, read)
            return
        with self.session_scope() as session:  # a broker that publishes on the event loop (RabbitMQ)
            if read is None:
                query = self._event_query(session, tracker.sender_id, fetch_events_from_all_sessions=False)
                read = query.count()
            new_events = events[read:]
            await self._stream_new_events(self.event_broker, new_events, tracker.sender_id)
            session.add_all(self._row(tracker.sender_id, event, event.as_dict()) for event in new_events)
            session.commit()

    def _write(self, sender_id: str, events: list[Event], read: int | None) -> None:
        """Publish the events after the first `read` to the SQL broker (if any), then store them."""
        with self.session_scope() as session:
            if read is None:
                query = self._event_query(session, sender_id, fetch_events_from_all_sessions=False)
                read = query.count()
            # Each event serialised once, for the broker and the tracker row alike.
            serialised = [(event, event.as_dict()) for event in events[read:]]
            if isinstance(self.event_broker, PatronEventBroker):
                sender = {"sender_id": sender_id}
                self.event_broker.publish_many([sender | data for _, data in serialised])
            session.add_all(self._row(sender_id, event, data) for event, data in serialised)
            session.commit()

    def _row(self, sender_id: str, event: Event, data: dict[str, Any]) -> Any:
        return self.SQLEvent(
            sender_id=sender_id,
            type_name=event.type_name,
            timestamp=data.get("timestamp"),
            intent_name=data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY),
            action_name=data.get("name"),
            data=json.dumps(data),
        )


class PatronPikaEventBroker(PikaEventBroker):  # type: ignore[misc]
    """Rasa's RabbitMQ broker, whose failed publish is logged without the event: Rasa's own logs "a
    reduced version" of it at ERROR, which holds the patron's words and conversation id."""

    async def _publish(self, event: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        if self._exchange is None:
            return
        try:
            await self._exchange.publish(self._message(event, headers), "")
        except Exception as error:
            sender = str(event.get("sender_id") or "")
            log.error(
                "event broker: publishing an event of conversation %s to RabbitMQ failed (%s)",
                fingerprint(sender),
                describe_failure(error),
            )
            if self.should_keep_unpublished_messages:
                self._unpublished_events.append(event)
            if self.raise_on_failure:
                await self.close()
                raise _write_error("event broker", sender, error) from None
