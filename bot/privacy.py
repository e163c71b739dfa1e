"""Patrons' privacy rights: export everything held about a patron, erase it, and purge old texts."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, Table, cast, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.audit import log_access
from bot.models import (
    Base,
    Conversation,
    ErasedSender,
    Interaction,
    InteractionStat,
    OutboxMessage,
    Patron,
    StaffUser,
    utcnow,
)
from bot.patrons import resolve_patron
from bot.rasa_events import RasaEventStore

EXPORT_FORMAT = "patronbot-patron-export/1"

# Columns that may hold personal data (free text, channel ids), blanked when a row outlives its
# patron anonymously.
PERSONAL_TEXT = {
    "feedback": ("comment",),
    "suggestion": ("text", "library_answer"),
    "escalation": ("resolution_note", "rasa_sender_id"),
    "audit_log": ("detail",),
    "delivery": ("last_error",),
}

# Tables whose rows also belong to a patron through a Rasa sender id column, even without the key.
SENDER_COLUMNS = {"outbox": "recipient", "escalation": "rasa_sender_id"}


def patron_tables() -> list[Table]:
    """Every CRM table that holds a patron key, in dependency order (children after parents)."""
    return [table for table in Base.metadata.sorted_tables if "patron_id" in table.c]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def _belongs(table: Table, patron_id: int, senders: set[str]) -> Any:
    """The rows of `table` that are the patron's: by patron key, or by their conversations' ids."""
    condition: Any = table.c.patron_id == patron_id
    column = SENDER_COLUMNS.get(table.name)
    if column is not None and senders:
        condition = or_(condition, table.c[column].in_(sorted(senders)))
    return condition


def _rows(session: Session, table: Table, patron_id: int, senders: set[str]) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    result = session.execute(select(table).where(_belongs(table, patron_id, senders)).order_by(*order))
    return [{key: _jsonable(value) for key, value in row._mapping.items()} for row in result]


def rasa_sender_ids(*, session: Session, patron: Patron) -> set[str]:
    """Every Rasa conversation id the patron has used: from their channels and their conversations."""
    senders = {f"{identity.channel}:{identity.external_id}" for identity in patron.identities}
    senders |= set(
        session.execute(
            select(Conversation.rasa_sender_id).where(Conversation.patron_id == patron.id)
        ).scalars()
    )
    return senders


def sender_digest(sender_id: str) -> str:
    """How `erased_sender` names a Rasa conversation id: its SHA-256, not the id itself."""
    return hashlib.sha256(sender_id.encode("utf-8")).hexdigest()


def _mark_erased(*, session: Session, senders: Iterable[str], at: dt.datetime) -> None:
    for sender in senders:
        digest = sender_digest(sender)
        row = session.get(ErasedSender, digest)
        if row is None:
            session.add(ErasedSender(sender_digest=digest, erased_at=at))
        elif row.erased_at is None or row.erased_at < at:
            row.erased_at = at


def erased_at(*, session: Session, senders: Iterable[str]) -> dict[str, dt.datetime]:
    """When the patron of each of these Rasa conversations was last erased (for those that were)."""
    digests = {sender_digest(sender): sender for sender in senders}
    if not digests:
        return {}
    query = select(ErasedSender).where(ErasedSender.sender_digest.in_(sorted(digests)))
    return {digests[row.sender_digest]: row.erased_at for row in session.execute(query).scalars()}


def export_patron(
    *,
    session: Session,
    patron_ref: str,
    actor: str,
    reason: str,
    rasa_stores: list[RasaEventStore],
    staff_user: StaffUser | None = None,
) -> dict[str, Any]:
    """One JSON-ready document with everything held about a patron, in every table and Rasa store."""
    patron = resolve_patron(session=session, ref=patron_ref)
    patron_table: Table = Patron.__table__
    profile = session.execute(select(patron_table).where(patron_table.c.id == patron.id)).one()
    senders = rasa_sender_ids(session=session, patron=patron)
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": utcnow().isoformat(),
        "patron": {key: _jsonable(value) for key, value in profile._mapping.items()},
        "tables": {table.name: _rows(session, table, patron.id, senders) for table in patron_tables()},
        "rasa": {store.name: store.events_for(senders) for store in rasa_stores},
    }
    log_access(
        session=session,
        actor=actor,
        action="export",
        patron_id=patron.id,
        reason=reason,
        staff_user=staff_user,
        detail={"tables": {name: len(rows) for name, rows in document["tables"].items()}},
    )
    return document


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure removed and what it kept as anonymous counts."""

    patron_id: int
    deleted_rows: dict[str, int]
    anonymised_rows: dict[str, int]
    rasa_events_deleted: dict[str, int]
    interactions_counted: int


def erase_patron(
    *,
    session: Session,
    patron_ref: str,
    actor: str,
    reason: str,
    rasa_stores: list[RasaEventStore],
    staff_user: StaffUser | None = None,
) -> ErasureReport:
    """Remove a patron from the CRM and their events from Rasa's stores, keeping anonymous counts.

    Rasa's events go first: if the CRM step then fails, running the erasure again finds the patron
    and finishes; the CRM part is one transaction (the caller's), so it lands whole or not at all.
    A message that arrives after the erasure starts a new record with no link to the old one.
    """
    patron = resolve_patron(session=session, ref=patron_ref)
    patron_id = patron.id
    senders = rasa_sender_ids(session=session, patron=patron)
    rasa_deleted = {store.name: store.delete_for(senders) for store in rasa_stores}
    # Events of these conversations from before now that reach the ingester later (a RabbitMQ queue
    # cannot be searched and deleted from) are dropped rather than written as a new patron.
    _mark_erased(session=session, senders=senders, at=utcnow())
    counted = _count_interactions(session=session, patron_id=patron_id)
    deleted: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    for table in reversed(patron_tables()):
        foreign_key = next(fk for fk in table.c.patron_id.foreign_keys if fk.column.table.name == "patron")
        condition = _belongs(table, patron_id, senders)
        if foreign_key.ondelete == "CASCADE":
            result: Any = session.execute(delete(table).where(condition))
            deleted[table.name] = int(result.rowcount or 0)
        else:
            blanks: dict[str, Any] = dict.fromkeys(PERSONAL_TEXT.get(table.name, ()))
            if "conversation_id" in table.c:
                blanks["conversation_id"] = None
            result = session.execute(update(table).where(condition).values(patron_id=None, **blanks))
            anonymised[table.name] = int(result.rowcount or 0)
    session.expunge(patron)
    result = session.execute(delete(Patron.__table__).where(Patron.__table__.c.id == patron_id))
    deleted["patron"] = int(result.rowcount or 0)
    log_access(
        session=session,
        actor=actor,
        action="erase",
        patron_id=None,
        reason=reason,
        staff_user=staff_user,
        detail={"deleted": deleted, "anonymised": anonymised, "rasa_events_deleted": rasa_deleted},
    )
    return ErasureReport(
        patron_id=patron_id,
        deleted_rows=deleted,
        anonymised_rows=anonymised,
        rasa_events_deleted=rasa_deleted,
        interactions_counted=counted,
    )


def _count_interactions(*, session: Session, patron_id: int) -> int:
    """Fold a patron's interactions into the anonymous daily counts (one INSERT ... SELECT)."""
    dialect = session.get_bind().dialect.name
    # The day in UTC on both databases (PostgreSQL would otherwise use its session's time zone).
    day = (
        func.date(Interaction.occurred_at)
        if dialect == "sqlite"
        else cast(func.timezone("UTC", Interaction.occurred_at), Date)
    )
    intent = func.coalesce(Interaction.intent, "")
    language = func.coalesce(Interaction.language, "")
    groups = (
        select(day, Interaction.channel, Interaction.direction, intent, language, func.count())
        .where(Interaction.patron_id == patron_id)
        .group_by(day, Interaction.channel, Interaction.direction, intent, language)
    )
    total = session.execute(
        select(func.count()).select_from(Interaction).where(Interaction.patron_id == patron_id)
    ).scalar_one()
    table: Any = InteractionStat.__table__
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).from_select(
        ["day", "channel", "direction", "intent", "language", "count"], groups
    )
    statement = statement.on_conflict_do_update(
        index_elements=["day", "channel", "direction", "intent", "language"],
        set_={"count": table.c.count + statement.excluded.count},
    )
    session.execute(statement)
    return int(total)


@dataclass(frozen=True)
class RetentionReport:
    """What a retention run purged."""

    cutoff: dt.datetime
    interaction_texts_purged: int
    rasa_events_purged: dict[str, int]
    outbox_messages_purged: int = 0


def purge_expired(
    *,
    session: Session,
    retention_days: int,
    rasa_stores: list[RasaEventStore],
    now: dt.datetime | None = None,
) -> RetentionReport:
    """Blank interaction texts older than the retention period and delete Rasa's events and outbox
    messages as old (a staff reply's text is in both the interaction and the outbox).

    The interaction rows stay (direction, intent, language, channel, time), so every count survives.
    """
    cutoff = (now or utcnow()) - dt.timedelta(days=retention_days)
    result: Any = session.execute(
        update(Interaction)
        .where(Interaction.occurred_at < cutoff, Interaction.text.is_not(None))
        .values(text=None)
        .execution_options(synchronize_session=False)
    )
    outbox: Any = session.execute(
        delete(OutboxMessage)
        .where(OutboxMessage.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    # No event older than the cutoff is left to arrive late.
    session.execute(
        delete(ErasedSender)
        .where(ErasedSender.erased_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    purged = {store.name: store.purge_before(cutoff.timestamp()) for store in rasa_stores}
    return RetentionReport(
        cutoff=cutoff,
        interaction_texts_purged=int(result.rowcount or 0),
        rasa_events_purged=purged,
        outbox_messages_purged=int(outbox.rowcount or 0),
    )
