"""Rasa's SQL event broker as the ingester's source: read in id order behind a cursor that moves with the
CRM rows, events that fail held back in the broker, and the ingester's loop."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.database import describe_error, make_engine, session_scope
from bot.crm.models import IngestCursor
from bot.crm.rasa_events import EVENTS, RasaEventStore
from bot.ingest.events import BrokerEvent, IngestState, database_failed, event_kind, ingest_events
from bot.privacy.requests import ResidueSweeps, carry_out

log = logging.getLogger(__name__)


class SqlEventSource:
    """Reads Rasa's SQL event broker table in id order."""

    def __init__(self, url: str, *, name: str | None = None) -> None:
        self.url = url
        self.name = name or f"sql-broker:{_source_name(url)}"
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def fetch(self, *, after: int, limit: int) -> list[tuple[int, BrokerEvent]]:
        return self._read(select(EVENTS).where(EVENTS.c.id > after).order_by(EVENTS.c.id).limit(limit))

    def fetch_ids(self, ids: Sequence[int]) -> list[tuple[int, BrokerEvent]]:
        """The rows with these ids that are still there (erasure may have deleted some)."""
        return self._read(select(EVENTS).where(EVENTS.c.id.in_(list(ids))).order_by(EVENTS.c.id))

    def _read(self, query: Any) -> list[tuple[int, BrokerEvent]]:
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
            if not isinstance(parsed, dict):
                log.warning("event %s in %s is not a JSON object; skipped", row_id, self.name)
                parsed = {}
            batch.append((int(row_id), BrokerEvent(sender_id=str(sender_id or ""), data=parsed)))
        return batch


def _source_name(url: str, *, legacy: bool = False) -> str:
    """What the ingester's cursor is called for this broker: the database as the server knows it (host,
    port, database and PostgreSQL schema; a SQLite file by its path), never the user or password. A
    new broker database of the same name elsewhere is another source, with a cursor of its own.
    `legacy`: the name before the host was part of it (backend and database only)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if legacy or parsed.host is None:
        return f"{backend}/{parsed.database}"
    options = parsed.query.get("options")
    schema = f"?{options}" if isinstance(options, str) else ""
    return f"{backend}://{parsed.host}:{parsed.port or ''}/{parsed.database}{schema}"


def adopt_legacy_cursor(*, crm: Engine, source: SqlEventSource) -> bool:
    """Give this source the cursor and held-back markers kept under its name from before the host was
    part of it, if it has none of its own yet (an upgrade); returns whether there were any."""
    legacy = SqlEventSource(source.url, name=f"sql-broker:{_source_name(source.url, legacy=True)}")
    if legacy.name == source.name:
        return False
    with session_scope(crm) as session:
        if session.get(IngestCursor, source.name) is not None:
            return False
        cursor = session.get(IngestCursor, legacy.name)
        if cursor is None:
            return False
        session.add(IngestCursor(source=source.name, position=cursor.position))
        session.delete(cursor)
        for marker in held_back(session=session, source=legacy):
            row_id = str(marker.source).removeprefix(_held_prefix(legacy))
            session.add(IngestCursor(source=f"{_held_prefix(source)}{row_id}", position=marker.position))
            session.delete(marker)
    log.info("the ingester's cursor of %s now names its host", source.name)
    return True


def _held_prefix(source: SqlEventSource) -> str:
    """How the ingest_cursor rows marking this source's held-back broker rows begin."""
    return f"held:{hashlib.sha256(source.name.encode()).hexdigest()[:16]}:"


def held_back(*, session: Session, source: SqlEventSource) -> list[IngestCursor]:
    """The markers of the broker rows that failed to ingest, kept in the broker (see `ingest_once`)."""
    query = select(IngestCursor).where(IngestCursor.source.startswith(_held_prefix(source)))
    return list(session.execute(query.order_by(IngestCursor.position)).scalars())


def _hold(
    *, session: Session, source: SqlEventSource, row_id: int, event: BrokerEvent, error: Exception
) -> None:
    """Mark a broker row that failed to ingest: it stays in the broker (retention keeps it) until it is
    ingested at a later start or its patron is erased. The log line names no patron and no text."""
    marker = f"{_held_prefix(source)}{row_id}"
    if session.get(IngestCursor, marker) is None:
        session.add(IngestCursor(source=marker, position=row_id))
        session.flush()
    log.error(
        "event %d (%s) in %s could not be ingested (%s); kept in the broker, retried at the next start",
        row_id,
        event_kind(event),
        source.name,
        type(error).__name__,
    )


def _ingest_batch(
    *, session: Session, source: SqlEventSource, batch: Sequence[tuple[int, BrokerEvent]], state: IngestState
) -> None:
    """The batch in one SAVEPOINT; if an event spoils it, each event in its own, holding back those that
    still fail. A database failure is raised: nothing is held and the cursor does not move."""
    try:
        with session.begin_nested():
            ingest_events(session=session, events=[event for _, event in batch], state=state)
        return
    except Exception as error:
        if database_failed(error):
            raise
    for row_id, event in batch:
        _ingest_or_hold(session=session, source=source, row_id=row_id, event=event, state=state)


def _ingest_or_hold(
    *, session: Session, source: SqlEventSource, row_id: int, event: BrokerEvent, state: IngestState
) -> bool:
    """One event in its own SAVEPOINT; held back (False) if it fails for its own sake."""
    try:
        with session.begin_nested():
            ingest_events(session=session, events=[event], state=state)
    except Exception as error:
        if database_failed(error):
            raise
        _hold(session=session, source=source, row_id=row_id, event=event, error=error)
        return False
    return True


def ingest_once(*, crm: Engine, source: SqlEventSource, state: IngestState, limit: int = 1000) -> int:
    """Move one batch from the broker to the CRM; the cursor moves in the same transaction.

    An event that cannot be written does not stop the ones after it: it is held back (`_hold`) and the
    cursor moves past it.
    """
    with session_scope(crm) as session:
        cursor = session.get(IngestCursor, source.name)
        if cursor is None:
            cursor = IngestCursor(source=source.name, position=0)
            session.add(cursor)
        batch = source.fetch(after=int(cursor.position or 0), limit=limit)
        if not batch:
            return 0
        _ingest_batch(session=session, source=source, batch=batch, state=state)
        cursor.position = batch[-1][0]
        return len(batch)


def retry_held(*, crm: Engine, source: SqlEventSource, state: IngestState) -> int:
    """Ingest the held-back broker rows again (the ingester does at start, so a fixed bug lets them
    in); returns how many are settled: ingested, or gone from the broker (their patron was erased)."""
    with session_scope(crm) as session:
        markers = held_back(session=session, source=source)
        if not markers:
            return 0
        events = dict(source.fetch_ids([int(marker.position or 0) for marker in markers]))
        settled = 0
        for marker in markers:
            row_id = int(marker.position or 0)
            event = events.get(row_id)
            if event is not None and not _ingest_or_hold(
                session=session, source=source, row_id=row_id, event=event, state=state
            ):
                continue
            session.delete(marker)
            settled += 1
        return settled


def purge_ingested(*, crm: Engine, source: SqlEventSource) -> int:
    """Delete the broker rows the ingester has already copied into the CRM (not the held-back ones)."""
    adopt_legacy_cursor(crm=crm, source=source)
    with session_scope(crm) as session:
        cursor = session.get(IngestCursor, source.name)
        position = int(cursor.position or 0) if cursor else 0
        held = [int(marker.position or 0) for marker in held_back(session=session, source=source)]
    if position == 0:
        return 0
    return RasaEventStore(name="event_broker", url=source.url).purge_through(position, keep=held)


def run_ingester(
    *,
    crm: Engine,
    crm_url: str,
    source: SqlEventSource,
    stop: threading.Event,
    poll_seconds: float = 0.1,
    rasa_stores: Sequence[RasaEventStore] = (),
    state: IngestState | None = None,
) -> None:
    """Ingest until `stop` is set; database errors are logged (without patron data) and retried, an
    event that cannot be written is held back (see `ingest_once`); held-back events are retried first.

    After each batch, patrons who asked in the chat to be erased are erased (`rasa_stores` are the
    Rasa stores their events are deleted from).
    """
    state = state if state is not None else IngestState()
    wait = poll_seconds
    log.info("ingesting Rasa events from %s", source.name)
    try:
        adopt_legacy_cursor(crm=crm, source=source)
    except SQLAlchemyError as error:
        log.error("cannot look for the cursor's former name: %s", describe_error(error, crm_url))
    pending_erasures = True  # requests a previous run noted but did not carry out
    sweeps = ResidueSweeps()
    try:
        retry_held(crm=crm, source=source, state=state)
    except SQLAlchemyError as error:
        log.error("cannot retry held-back events: %s", describe_error(error, crm_url))
    while not stop.is_set():
        if pending_erasures:
            try:
                # A request not yet settled, or one that failed: try again soon.
                erasure = carry_out(crm=crm, crm_url=crm_url, rasa_stores=rasa_stores)
                state.forget(erasure.senders)
                sweeps.add(erasure)
                pending_erasures = erasure.waiting
            except SQLAlchemyError as error:
                log.error("cannot look for erasure requests: %s", describe_error(error, crm_url))
        try:
            sweeps.run_due(rasa_stores)
        except SQLAlchemyError as error:
            log.error("cannot sweep the tracker store after an erasure: %s", describe_error(error, crm_url))
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
