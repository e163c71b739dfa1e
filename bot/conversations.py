"""Conversations: which one a message belongs to, and when a new one starts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.models import Conversation, Interaction

# A conversation with staff, or waiting for them, carries on across Rasa's session boundaries.
_STAYS_OPEN = ("pending_review", "with_staff")


def latest_conversation(*, session: Session, rasa_sender_id: str) -> Conversation | None:
    return session.execute(
        select(Conversation)
        .where(Conversation.rasa_sender_id == rasa_sender_id)
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def start_conversation(
    *, session: Session, patron_id: int, channel: str, rasa_sender_id: str, at: dt.datetime
) -> Conversation:
    """Begin a new conversation (Rasa started a new session), closing an idle previous one."""
    previous = latest_conversation(session=session, rasa_sender_id=rasa_sender_id)
    if previous is not None and (previous.status in _STAYS_OPEN or previous.started_at == at):
        # With staff, or the same session_started event delivered again.
        return previous
    if previous is not None and previous.status == "open":
        previous.status = "resolved"
        previous.resolved_at = max(at, previous.last_message_at or at)
    conversation = Conversation(
        patron_id=patron_id,
        channel=channel,
        rasa_sender_id=rasa_sender_id,
        status="open",
        started_at=at,
        last_message_at=at,
    )
    session.add(conversation)
    session.flush()
    return conversation


def conversation_for_message(
    *, session: Session, patron_id: int, channel: str, rasa_sender_id: str, at: dt.datetime
) -> Conversation:
    """The conversation a message at `at` belongs to: the latest one, or a new one if none."""
    current = latest_conversation(session=session, rasa_sender_id=rasa_sender_id)
    if current is None or current.patron_id != patron_id:
        return start_conversation(
            session=session, patron_id=patron_id, channel=channel, rasa_sender_id=rasa_sender_id, at=at
        )
    return current


def patron_history(*, session: Session, patron_id: int, limit: int = 50) -> list[Interaction]:
    """A patron's last `limit` interactions, newest first.

    For the bot's own use; a staff member reads a patron through bot.audit.read_patron_record,
    which writes the audit log.
    """
    return list(
        session.execute(
            select(Interaction)
            .where(Interaction.patron_id == patron_id)
            .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
            .limit(limit)
        ).scalars()
    )
