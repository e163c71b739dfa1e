"""Conversations: which one a message belongs to, and when a new one starts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from bot.crm.models import Conversation, Feedback, Interaction, Suggestion

# A conversation with staff, or waiting for them, carries on across Rasa's session boundaries.
_STAYS_OPEN = ("pending_review", "with_staff")


class ConversationBook:
    """The conversations a batch of events belongs to: each Rasa conversation id's latest, and those
    the batch's session starts began, each loaded in one query.

    A conversation is known by its session's start: a session_started event delivered again (RabbitMQ
    redelivering a batch, Rasa's fail-safe store publishing a whole tracker again) finds the
    conversation it began and changes nothing, even when later sessions have begun since.
    New conversations are added to the session without a flush; flush once before reading their ids.
    """

    def __init__(
        self,
        *,
        session: Session,
        rasa_sender_ids: Collection[str],
        session_starts: Collection[tuple[str, dt.datetime]] = (),
    ) -> None:
        self.session = session
        self.latest: dict[str, Conversation] = {}
        self.started: dict[tuple[str, dt.datetime], Conversation] = {}
        senders = list(rasa_sender_ids)
        for start in range(0, len(senders), 500):
            chunk = senders[start : start + 500]
            newest = (
                select(func.max(Conversation.id))
                .where(Conversation.rasa_sender_id.in_(chunk))
                .group_by(Conversation.rasa_sender_id)
                .scalar_subquery()
            )
            for conversation in session.execute(
                select(Conversation).where(Conversation.id.in_(newest))
            ).scalars():
                self.latest[conversation.rasa_sender_id] = conversation
        starts = sorted(set(session_starts))
        for start in range(0, len(starts), 500):
            pairs = starts[start : start + 500]
            query = select(Conversation).where(
                Conversation.rasa_sender_id.in_({sender for sender, _ in pairs}),
                Conversation.started_at.in_({at for _, at in pairs}),
            )
            for conversation in session.execute(query).scalars():
                self.started[(conversation.rasa_sender_id, conversation.started_at)] = conversation

    def start(self, *, patron_id: int, channel: str, rasa_sender_id: str, at: dt.datetime) -> Conversation:
        """Begin a new conversation (Rasa started a new session), closing an idle previous one."""
        begun = self.started.get((rasa_sender_id, at))
        if begun is not None and begun.patron_id == patron_id:
            # This session's start delivered again: its conversation, as it is, takes the messages after it.
            self.latest[rasa_sender_id] = begun
            return begun
        previous = self.latest.get(rasa_sender_id)
        if previous is not None and previous.patron_id == patron_id:
            if previous.status in _STAYS_OPEN or previous.started_at == at:
                return previous  # with staff, or the same session_started event delivered again
            if previous.status == "open":
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
        self.session.add(conversation)
        self.latest[rasa_sender_id] = conversation
        self.started[(rasa_sender_id, at)] = conversation
        return conversation

    def for_message(
        self, *, patron_id: int, channel: str, rasa_sender_id: str, at: dt.datetime
    ) -> Conversation:
        """The conversation a message belongs to: the latest one, or a new one if none."""
        current = self.latest.get(rasa_sender_id)
        if current is None or current.patron_id != patron_id:
            return self.start(patron_id=patron_id, channel=channel, rasa_sender_id=rasa_sender_id, at=at)
        if current.last_message_at is None or at > current.last_message_at:
            current.last_message_at = at
        return current


def sender_key(rasa_sender_id: str | None) -> str | None:
    """Rasa's conversation id as the conversation table holds it (cut to its column, as the ingester
    cuts it), so that a row keyed by it finds its conversation."""
    length = Conversation.__table__.c.rasa_sender_id.type.length
    return rasa_sender_id[:length] if rasa_sender_id else None


# Rows the actions write during a turn, keyed by the turn's Rasa conversation id.
_WRITTEN_IN_A_TURN = (Feedback, Suggestion)


def link_to_conversations(*, session: Session) -> None:
    """Give feedback and suggestions written during a turn their conversation row.

    The actions write them while Rasa handles the turn, before the ingester has made (or found) the
    turn's conversation, so they keep the turn's Rasa conversation id and the ingester calls this with
    each batch, in its transaction: one UPDATE per table, over the few rows still waiting (an index
    finds them). A row belongs to the conversation of its sender and patron that had begun when it
    was written: the latest started at or before it (the earliest, if a clock running a little behind
    Rasa's puts it before them all). It is linked only once a message at least as late has been
    ingested, so that the turn's own conversation exists: until then the latest conversation row may
    be the patron's previous session.
    """
    for model in _WRITTEN_IN_A_TURN:
        table: Any = model.__table__
        same = (Conversation.rasa_sender_id == table.c.rasa_sender_id) & (
            Conversation.patron_id == table.c.patron_id
        )
        begun = (
            select(Conversation.id)
            .where(same, Conversation.started_at <= table.c.created_at)
            .order_by(Conversation.started_at.desc(), Conversation.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        first = (
            select(Conversation.id)
            .where(same)
            .order_by(Conversation.started_at, Conversation.id)
            .limit(1)
            .scalar_subquery()
        )
        caught_up = exists().where(same & (Conversation.last_message_at >= table.c.created_at))
        session.execute(
            update(table)
            .where(table.c.conversation_id.is_(None), table.c.rasa_sender_id.is_not(None), caught_up)
            .values(conversation_id=func.coalesce(begun, first))
            .execution_options(synchronize_session=False)
        )


def patron_history(*, session: Session, patron_id: int, limit: int = 50) -> list[Interaction]:
    """A patron's last `limit` interactions, newest first.

    For the bot's own use; a staff member reads a patron through bot.crm.audit.read_patron_record,
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
