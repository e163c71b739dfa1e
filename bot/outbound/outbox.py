"""The one path to a patron for messages no Rasa turn produced: staff replies now, campaigns later.

In this order: `send` records the message as an outgoing interaction (so the CRM history shows it) and
as an outbox row, in the caller's transaction; the caller commits; the running bot's dispatcher
(bot/outbound/dispatcher.py) then pushes it through its channel (Telegram, WeChat, the widget) and
records each attempt. So a failed commit never leaves a message sent but not recorded, and a failed
push leaves it waiting. On the REST channel the row waits until the patron's client takes it.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot.crm.models import Conversation, Interaction, OutboxMessage, Patron, utcnow
from bot.crm.patrons import PatronNotFoundError, find_patron_ids, patron_key

log = logging.getLogger(__name__)


def send(
    *,
    session: Session,
    channel: str,
    recipient: str,
    text: str,
    produced_by: str,
    patron_id: int | None = None,
) -> int:
    """Record `text` for the conversation `recipient` (a Rasa sender id, "rest:abc"); return the outbox id.

    Runs in the caller's transaction: the interaction and the outbox row land together or not at all.
    Nothing is pushed here: once the caller has committed, `deliver` pushes what waits.
    """
    if not text.strip():
        raise ValueError("an outgoing message needs a text")
    if patron_id is None:
        patron_id = _patron_of(session=session, channel=channel, recipient=recipient)
    patron = session.get(Patron, patron_id)
    if patron is None:
        raise PatronNotFoundError(f"no patron {patron_id}: nothing sent")
    now = utcnow()
    message = OutboxMessage(
        channel=channel,
        recipient=recipient,
        patron_id=patron_id,
        text=text,
        produced_by=produced_by,
        created_at=now,
    )
    session.add(message)
    session.flush()
    conversation_id = session.execute(
        select(Conversation.id)
        .where(Conversation.rasa_sender_id == recipient, Conversation.patron_id == patron_id)
        .order_by(Conversation.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    session.add(
        Interaction(
            patron_id=patron_id,
            conversation_id=conversation_id,
            channel=channel,
            direction="out",
            text=text,
            language=patron.language,
            produced_by=produced_by,
            event_key=f"outbox:{message.id}",
            occurred_at=now,
            recorded_at=now,
        )
    )
    session.flush()
    return message.id


def _patron_of(*, session: Session, channel: str, recipient: str) -> int:
    key = patron_key(recipient, channel)
    found = find_patron_ids(session=session, keys=[key])
    if key not in found:
        raise PatronNotFoundError(f"no patron known on {channel} for this recipient: nothing sent")
    return found[key]


def take_pending(
    *, session: Session, channel: str, recipient: str, now: dt.datetime | None = None
) -> list[OutboxMessage]:
    """The conversation's undelivered messages, oldest first, marked delivered in the caller's transaction.

    A message is handed out once, even to two clients polling at the same time.
    """
    query = (
        select(OutboxMessage)
        .where(
            OutboxMessage.channel == channel,
            OutboxMessage.recipient == recipient,
            OutboxMessage.delivered_at.is_(None),
        )
        .order_by(OutboxMessage.id)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    delivered_at = now or utcnow()
    taken: list[OutboxMessage] = []
    for message in session.execute(query).scalars().all():
        claimed = session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.delivered_at.is_(None))
            .values(delivered_at=delivered_at, status="delivered")
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            set_committed_value(message, "delivered_at", delivered_at)
            set_committed_value(message, "status", "delivered")
            taken.append(message)
    return taken


def release(*, session: Session, ids: list[int], delivered_at: dt.datetime) -> int:
    """Put messages `take_pending` handed out at `delivered_at` back in the outbox: their response never
    reached the patron (the connection was lost). Returns how many went back."""
    if not ids:
        return 0
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(ids), OutboxMessage.delivered_at == delivered_at)
        .values(delivered_at=None, status="pending")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
