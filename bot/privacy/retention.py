"""Retention: message texts, Rasa events and outbox messages older than the retention period are purged."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from bot.crm.models import (
    ErasedSender,
    Interaction,
    OutboxMessage,
    utcnow,
)
from bot.crm.rasa_events import RasaEventStore


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
