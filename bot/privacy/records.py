"""Where a patron's data is: every CRM table holding their key, and every Rasa conversation id they used."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, or_, select
from sqlalchemy.orm import Session

from bot.crm.models import (
    Base,
    Conversation,
    Patron,
)

# Tables whose rows also belong to a patron through a Rasa sender id column, even without the key.
SENDER_COLUMNS = {
    "outbox": "recipient",
    "escalation": "rasa_sender_id",
    "feedback": "rasa_sender_id",
    "suggestion": "rasa_sender_id",
}


def patron_tables() -> list[Table]:
    """Every CRM table that holds a patron key, in dependency order (children after parents)."""
    return [table for table in Base.metadata.sorted_tables if "patron_id" in table.c]


def belongs(table: Table, patron_id: int, senders: set[str]) -> Any:
    """The rows of `table` that are the patron's: by patron key, or by their conversations' ids."""
    condition: Any = table.c.patron_id == patron_id
    column = SENDER_COLUMNS.get(table.name)
    if column is not None and senders:
        condition = or_(condition, table.c[column].in_(sorted(senders)))
    return condition


def rasa_sender_ids(*, session: Session, patron: Patron) -> set[str]:
    """Every Rasa conversation id the patron has used: from their channels and their conversations."""
    senders = {f"{identity.channel}:{identity.external_id}" for identity in patron.identities}
    senders |= set(
        session.execute(
            select(Conversation.rasa_sender_id).where(Conversation.patron_id == patron.id)
        ).scalars()
    )
    return senders
