"""The right to erasure: a patron's rows and Rasa events deleted, statistics kept anonymously."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Date, cast, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.database import erasure_lock
from bot.crm.models import (
    ChannelUpdate,
    ErasedSender,
    Escalation,
    Interaction,
    InteractionStat,
    Patron,
    StaffUser,
    TurnEffect,
    utcnow,
)
from bot.crm.models.feedback import ACTIVE_ESCALATION_STATUSES
from bot.crm.patrons import resolve_patron
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.records import belongs, patron_tables, rasa_sender_ids
from bot.pseudonyms import installation_key, keyed_digest

# Columns that may hold personal data (free text, channel ids), blanked when a row outlives its
# patron anonymously.
PERSONAL_TEXT = {
    "feedback": ("comment", "rasa_sender_id"),
    "suggestion": ("text", "library_answer", "rasa_sender_id"),
    "escalation": ("resolution_note", "rasa_sender_id"),
    "audit_log": ("detail",),
    "delivery": ("last_error",),
}


# The resolution note of the escalations an erasure closes: why, and nothing about the patron.
ERASED_NOTE = "closed: the patron's data was erased at their request"


def sender_digest(sender_id: str) -> str:
    """How `erased_sender` names a Rasa conversation id: an HMAC, with the installation's secret, of
    the id's SHA-256 (keying the SHA-256 rather than the id let migration 0005 convert the rows that
    held the plain SHA-256), so that no one without the secret finds the id by trying likely ids."""
    plain = hashlib.sha256(sender_id.encode("utf-8")).hexdigest()
    return keyed_digest(plain, key=installation_key())


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


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure removed and what it kept as anonymous counts."""

    patron_id: int
    deleted_rows: dict[str, int]
    anonymised_rows: dict[str, int]
    rasa_events_deleted: dict[str, int]
    interactions_counted: int
    # The escalations that were still open, now closed with ERASED_NOTE.
    escalations_closed: tuple[int, ...] = ()
    # The erased patron's Rasa conversation ids, for processes to forget them (never shown or logged).
    senders: frozenset[str] = field(default=frozenset(), repr=False)


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
    The patron's open escalations are closed (cancelled, with ERASED_NOTE): no one is left to answer.
    A message that arrives after the erasure starts a new record with no link to the old one.
    """
    erasure_lock(session=session, exclusive=True)  # ingests in flight commit first; new ones wait
    patron = resolve_patron(session=session, ref=patron_ref)
    patron_id = patron.id
    senders = rasa_sender_ids(session=session, patron=patron)
    rasa_deleted = {store.name: store.delete_for(senders) for store in rasa_stores}
    # Events of these conversations from before now that reach the ingester later (a RabbitMQ queue
    # cannot be searched and deleted from) are dropped rather than written as a new patron.
    now = utcnow()
    _mark_erased(session=session, senders=senders, at=now)
    counted = _count_interactions(session=session, patron_id=patron_id)
    escalations: Any = Escalation.__table__
    still_open = list(
        session.execute(
            select(escalations.c.id).where(
                belongs(escalations, patron_id, senders),
                escalations.c.status.in_(ACTIVE_ESCALATION_STATUSES),
            )
        ).scalars()
    )
    deleted: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    for table in reversed(patron_tables()):
        foreign_key = next(fk for fk in table.c.patron_id.foreign_keys if fk.column.table.name == "patron")
        condition = belongs(table, patron_id, senders)
        if foreign_key.ondelete == "CASCADE":
            result: Any = session.execute(delete(table).where(condition))
            deleted[table.name] = int(result.rowcount or 0)
        else:
            blanks: dict[str, Any] = dict.fromkeys(PERSONAL_TEXT.get(table.name, ()))
            if "conversation_id" in table.c:
                blanks["conversation_id"] = None
            result = session.execute(update(table).where(condition).values(patron_id=None, **blanks))
            anonymised[table.name] = int(result.rowcount or 0)
    if senders:
        # Updates a channel recorded to handle once keep their key (a redelivery is still recognised)
        # but lose the message they held and whose they were.
        updates: Any = ChannelUpdate.__table__
        result = session.execute(
            update(updates).where(updates.c.sender.in_(sorted(senders))).values(sender=None, body=None)
        )
        anonymised[updates.name] = int(result.rowcount or 0)
        # What their turns recorded once (the rows themselves are deleted or anonymised above).
        effects: Any = TurnEffect.__table__
        result = session.execute(delete(effects).where(effects.c.sender.in_(sorted(senders))))
        deleted[effects.name] = int(result.rowcount or 0)
    if still_open:
        # After the anonymising above, which blanks every resolution note.
        session.execute(
            update(escalations)
            .where(escalations.c.id.in_(still_open))
            .values(status="cancelled", resolved_at=now, resolution_note=ERASED_NOTE)
        )
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
        detail={
            "deleted": deleted,
            "anonymised": anonymised,
            "rasa_events_deleted": rasa_deleted,
            "escalations_closed": still_open,
        },
    )
    return ErasureReport(
        patron_id=patron_id,
        deleted_rows=deleted,
        anonymised_rows=anonymised,
        rasa_events_deleted=rasa_deleted,
        interactions_counted=counted,
        escalations_closed=tuple(still_open),
        senders=frozenset(senders),
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
