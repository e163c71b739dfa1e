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
from collections.abc import Mapping, Sequence

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
    buttons: Sequence[Mapping[str, str]] | None = None,
) -> int:
    """Record `text` (and any Rasa `buttons`, {"title", "payload"}) for the conversation `recipient` (a
    Rasa sender id, "rest:abc"); return the outbox id.

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
        buttons=[dict(button) for button in buttons] if buttons else None,
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


def buttons_of(message: OutboxMessage) -> list[dict[str, str]]:
    """The message's buttons ({"title", "payload"}, each with a title), as stored; [] if none."""
    stored = message.buttons if isinstance(message.buttons, list) else []
    return [
        {"title": str(b["title"]), "payload": str(b.get("payload") or "")}
        for b in stored
        if isinstance(b, dict) and b.get("title")
    ]


def buttons_sent_since(
    *, session: Session, recipient: str, since: dt.datetime | None
) -> list[dict[str, str]]:
    """The buttons of the messages delivered to `recipient` since `since` (the patron's last message),
    oldest first: on a channel without buttons the patron answers one by typing its number or title."""
    query = select(OutboxMessage).where(
        OutboxMessage.recipient == recipient,
        OutboxMessage.buttons.is_not(None),
        OutboxMessage.status == "delivered",
    )
    if since is not None:
        query = query.where(OutboxMessage.delivered_at > since)
    messages = session.execute(query.order_by(OutboxMessage.id.desc()).limit(5)).scalars().all()
    return [button for message in reversed(messages) for button in buttons_of(message)]


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
