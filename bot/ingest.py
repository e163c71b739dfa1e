"""The ingester: Rasa's events, read from its event broker, become CRM interactions, each once."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session

from bot.conversations import ConversationBook
from bot.database import describe_error, make_engine, session_scope
from bot.erasure_requests import carry_out, note_requests, requested_in
from bot.language import detect_language
from bot.models import Conversation, IngestCursor, Interaction
from bot.patrons import PatronKey, patron_key, touch_patrons
from bot.rasa_events import EVENTS, RasaEventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerEvent:
    """One event as Rasa published it: the conversation's sender id and the event's dict."""

    sender_id: str
    data: dict[str, Any]


@dataclass
class IngestState:
    """What the ingester remembers between batches: the last action run in each conversation."""

    last_action: dict[str, str] = field(default_factory=dict)


def event_key(event: BrokerEvent) -> str:
    """A digest that is the same for a redelivered copy of an event and differs between events."""
    canonical = json.dumps(event.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{event.sender_id}\n{canonical}".encode()).hexdigest()


def _timestamp(data: dict[str, Any]) -> dt.datetime:
    value = data.get("timestamp")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return dt.datetime.now(dt.UTC)


def _user_language(data: dict[str, Any]) -> str | None:
    for entity in (data.get("parse_data") or {}).get("entities") or []:
        if entity.get("entity") == "language" and entity.get("value"):
            return str(entity["value"])
    return detect_language(str(data.get("text") or ""))


def ingest_events(*, session: Session, events: Sequence[BrokerEvent], state: IngestState) -> int:
    """Write the interactions these events describe; return how many new rows were written.

    User and bot events become interactions; a session_started event begins a new conversation;
    action events tell who produced the next bot message. Runs inside the caller's transaction, so a
    batch lands whole or not at all.
    """
    written = _ingest_messages(session=session, events=events, state=state)
    erasures = requested_in(events)
    if erasures:
        session.flush()
        note_requests(session=session, senders=erasures)
    return written


def _ingest_messages(*, session: Session, events: Sequence[BrokerEvent], state: IngestState) -> int:
    relevant = [e for e in events if e.data.get("event") in ("user", "bot", "session_started", "action")]
    keys: dict[str, PatronKey] = {}
    for event in relevant:
        if event.sender_id not in keys or event.data.get("event") == "user":
            input_channel = event.data.get("input_channel") if event.data.get("event") == "user" else None
            keys[event.sender_id] = patron_key(event.sender_id, input_channel)
    messages = [e for e in relevant if e.data.get("event") in ("user", "bot")]
    if not messages and not any(e.data.get("event") == "session_started" for e in relevant):
        _remember_actions(relevant, state)
        return 0
    last_seen: dict[PatronKey, dt.datetime] = {}
    languages: dict[PatronKey, str] = {}
    for event in messages:
        if event.data.get("event") == "user":
            key = keys[event.sender_id]
            last_seen[key] = max(_timestamp(event.data), last_seen.get(key, _timestamp(event.data)))
            language = _user_language(event.data)
            if language:
                languages[key] = language
    patron_ids = touch_patrons(
        session=session, keys=set(keys.values()), last_seen=last_seen, languages=languages
    )

    book = ConversationBook(session=session, rasa_sender_ids=keys.keys())
    last_language: dict[str, str | None] = {}
    rows: list[dict[str, Any]] = []
    for event in relevant:
        data, sender = event.data, event.sender_id
        kind = data.get("event")
        key = keys[sender]
        at = _timestamp(data)
        if kind == "action":
            state.last_action[sender] = str(data.get("name") or "")
            continue
        if kind == "session_started":
            book.start(patron_id=patron_ids[key], channel=key.channel, rasa_sender_id=sender, at=at)
            continue
        conversation = book.for_message(
            patron_id=patron_ids[key], channel=key.channel, rasa_sender_id=sender, at=at
        )
        text = data.get("text")
        row: dict[str, Any] = {
            "patron_id": patron_ids[key],
            "conversation": conversation,
            "channel": key.channel,
            "text": text,
            "event_key": event_key(event),
            "occurred_at": at,
        }
        if kind == "user":
            intent = (data.get("parse_data") or {}).get("intent") or {}
            language = _user_language(data)
            last_language[sender] = language
            row |= {
                "direction": "in",
                "intent": intent.get("name"),
                "confidence": intent.get("confidence"),
                "language": language,
                "produced_by": None,
            }
        else:
            metadata = data.get("metadata") or {}
            row |= {
                "direction": "out",
                "intent": None,
                "confidence": None,
                "language": detect_language(str(text or "")) or last_language.get(sender),
                "produced_by": metadata.get("utter_action") or state.last_action.get(sender),
            }
        rows.append(row)
    session.flush()  # gives the new conversations their ids
    for row in rows:
        owner: Conversation = row.pop("conversation")
        row["conversation_id"] = owner.id
    return _insert_new(session=session, rows=rows) if rows else 0


def _remember_actions(events: Sequence[BrokerEvent], state: IngestState) -> None:
    for event in events:
        if event.data.get("event") == "action":
            state.last_action[event.sender_id] = str(event.data.get("name") or "")


def _insert_new(*, session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose event_key is not stored yet (safe against a concurrent ingester too)."""
    unique: dict[str, dict[str, Any]] = {row["event_key"]: row for row in rows}
    dialect = session.get_bind().dialect.name
    table: Any = Interaction.__table__
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=["event_key"])
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=["event_key"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported CRM database dialect: {dialect}")
    result: Any = session.execute(statement, list(unique.values()))
    return int(result.rowcount or 0)


class SqlEventSource:
    """Reads Rasa's SQL event broker table in id order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"sql-broker:{_source_name(url)}"
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def fetch(self, *, after: int, limit: int) -> list[tuple[int, BrokerEvent]]:
        query = select(EVENTS).where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(limit)
        try:
            with self.engine.connect() as connection:
                result = connection.execute(query).all()
        except (OperationalError, ProgrammingError) as error:
            if "no such table" in str(error) or "does not exist" in str(error):
                return []  # Rasa has not published anything yet
            raise
        batch = []
        for row_id, sender_id, data in result:
            try:
                parsed = json.loads(data)
            except (TypeError, ValueError):
                log.warning("event %s in %s is not JSON; skipped", row_id, self.name)
                parsed = {}
            batch.append((int(row_id), BrokerEvent(sender_id=str(sender_id or ""), data=parsed)))
        return batch


def _source_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return f"{parsed.get_backend_name()}/{parsed.database}"


def ingest_once(*, crm: Engine, source: SqlEventSource, state: IngestState, limit: int = 1000) -> int:
    """Move one batch from the broker to the CRM; the cursor moves in the same transaction."""
    with session_scope(crm) as session:
        cursor = session.get(IngestCursor, source.name)
        if cursor is None:
            cursor = IngestCursor(source=source.name, position=0)
            session.add(cursor)
        batch = source.fetch(after=int(cursor.position or 0), limit=limit)
        if not batch:
            return 0
        ingest_events(session=session, events=[event for _, event in batch], state=state)
        cursor.position = batch[-1][0]
        return len(batch)


def purge_ingested(*, crm: Engine, source: SqlEventSource) -> int:
    """Delete the broker rows the ingester has already copied into the CRM."""
    with session_scope(crm) as session:
        cursor = session.get(IngestCursor, source.name)
        position = int(cursor.position or 0) if cursor else 0
    if position == 0:
        return 0
    return RasaEventStore(name="event_broker", url=source.url).purge_through(position)


def run_ingester(
    *,
    crm: Engine,
    crm_url: str,
    source: SqlEventSource,
    stop: threading.Event,
    poll_seconds: float = 0.1,
    rasa_stores: Sequence[RasaEventStore] = (),
) -> None:
    """Ingest until `stop` is set; database errors are logged (without patron data) and retried.

    After each batch, patrons who asked in the chat to be erased are erased (`rasa_stores` are the
    Rasa stores their events are deleted from).
    """
    state = IngestState()
    wait = poll_seconds
    log.info("ingesting Rasa events from %s", source.name)
    pending_erasures = True  # requests a previous run noted but did not carry out
    while not stop.is_set():
        if pending_erasures:
            try:
                # A request not yet settled, or one that failed: try again soon.
                pending_erasures = carry_out(crm=crm, crm_url=crm_url, rasa_stores=rasa_stores).waiting
            except SQLAlchemyError as error:
                log.error("cannot look for erasure requests: %s", describe_error(error, crm_url))
        try:
            moved = ingest_once(crm=crm, source=source, state=state)
        except SQLAlchemyError as error:
            log.error("ingest failed, will retry: %s", describe_error(error, crm_url))
            wait = min(max(wait, poll_seconds) * 2, 5.0)
            stop.wait(wait)
            continue
        if moved:
            wait = poll_seconds
            pending_erasures = True
        else:
            stop.wait(wait)
            wait = min(wait * 2, 1.0)  # idle: poll less often, at most a second apart
    # Stopping: copy what Rasa published before it stopped, so nothing waits for the next start.
    for _ in range(100):
        try:
            if not ingest_once(crm=crm, source=source, state=state):
                break
        except SQLAlchemyError as error:
            log.error(
                "final ingest failed; the rest is copied at the next start: %s",
                describe_error(error, crm_url),
            )
            break
