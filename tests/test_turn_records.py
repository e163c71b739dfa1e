"""Feedback and suggestions written during a turn get the turn's conversation once the ingester has it.

The actions write them while Rasa handles the turn, before the ingester has made (or found) the
conversation row from Rasa's events; they carry the Rasa conversation id, and the ingester links them.
"""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import Conversation, Feedback, Suggestion
from bot.crm.patrons import PatronKey, get_or_create_patron
from bot.engagement.feedback import record_feedback, record_helpful, record_report
from bot.ingest.events import BrokerEvent, IngestState, ingest_events
from tests.factories import action_event, bot_event, user_event
from tests.test_ingest import session_started


def ingest(crm: Engine, events: list[BrokerEvent]) -> None:
    with session_scope(crm) as session:
        ingest_events(session=session, events=events, state=IngestState())


def write_during_the_turn(crm: Engine, sender: str = "rest:ann") -> tuple[int, int, int]:
    """What the actions write in a turn: a rating, a "did this help?" tap and a complaint, as
    actions/feedback.py writes them (the patron found or made by their channel identity)."""
    channel, external_id = sender.split(":", 1)
    with session_scope(crm) as session:
        patron = get_or_create_patron(session=session, key=PatronKey(channel, external_id), language="en")
        rating = record_feedback(session=session, patron_id=patron, csat=4, rasa_sender_id=sender)
        tap = record_helpful(
            session=session, patron_id=patron, helpful=True, topic="renewal", rasa_sender_id=sender
        )
        report = record_report(
            session=session,
            patron_id=patron,
            kind="complaint",
            text="The renewal page never loads",
            topic=None,
            rasa_sender_id=sender,
        )
        return rating.id, tap.id, report.id


def conversation_ids(crm: Engine, rating: int, tap: int, report: int) -> list[int | None]:
    with Session(crm, future=True) as session:
        return [
            session.get(Feedback, rating).conversation_id,  # type: ignore[union-attr]
            session.get(Feedback, tap).conversation_id,  # type: ignore[union-attr]
            session.get(Suggestion, report).conversation_id,  # type: ignore[union-attr]
        ]


def conversations(crm: Engine, sender: str) -> list[int]:
    with Session(crm, future=True) as session:
        query = select(Conversation.id).where(Conversation.rasa_sender_id == sender).order_by(Conversation.id)
        return list(session.execute(query).scalars())


def test_rows_written_during_a_turn_get_the_conversation_the_turn_begins(crm: Engine) -> None:
    now = time.time()
    asked = user_event("rest:ann", "I want to complain: the renewal page never loads", timestamp=now - 1)
    rows = write_during_the_turn(crm)
    written = time.time()  # the reply comes after the rows, however long writing them took
    assert conversation_ids(crm, *rows) == [None, None, None]  # no conversation row yet
    ingest(
        crm,
        [
            session_started("rest:ann", now - 2),
            asked,
            action_event("rest:ann", "action_submit_report", timestamp=written + 0.5),
            bot_event("rest:ann", "Recorded as no. 1", timestamp=written + 0.6),
        ],
    )
    [conversation] = conversations(crm, "rest:ann")
    assert conversation_ids(crm, *rows) == [conversation, conversation, conversation]


def test_rows_written_during_a_turn_get_the_conversation_that_existed_already(crm: Engine) -> None:
    now = time.time()
    ingest(
        crm,
        [
            user_event("rest:ann", "hello", timestamp=now - 60),
            bot_event("rest:ann", "Hi!", timestamp=now - 59),
        ],
    )
    [conversation] = conversations(crm, "rest:ann")
    # The turn's own message reaches the CRM before its actions run (the tracker store's first commit).
    ingest(crm, [user_event("rest:ann", "the renewal page never loads", timestamp=now - 1)])
    rows = write_during_the_turn(crm)
    written = time.time()
    ingest(crm, [action_event("rest:ann", "action_submit_report", timestamp=written + 0.5)])
    ingest(crm, [bot_event("rest:ann", "Recorded as no. 1", timestamp=written + 0.6)])
    assert conversation_ids(crm, *rows) == [conversation, conversation, conversation]
    assert conversations(crm, "rest:ann") == [conversation]


def test_rows_of_a_new_session_are_not_given_the_previous_one(crm: Engine) -> None:
    """The ingester may still be on the patron's previous session (yesterday's conversation is the
    latest row) when this session's actions write: the rows wait for their own conversation."""
    now = time.time()
    ingest(
        crm,
        [
            session_started("rest:ann", now - 86_400),
            user_event("rest:ann", "hello", timestamp=now - 86_399),
        ],
    )
    rows = write_during_the_turn(crm)
    written = time.time()
    # Yesterday's last events arrive late (or are delivered again): the rows are not yesterday's.
    ingest(crm, [bot_event("rest:ann", "Hi!", timestamp=now - 86_398)])
    assert conversation_ids(crm, *rows) == [None, None, None]
    ingest(
        crm,
        [
            session_started("rest:ann", now - 2),
            user_event("rest:ann", "I want to complain", timestamp=now - 1),
            bot_event("rest:ann", "Recorded as no. 1", timestamp=written + 0.6),
        ],
    )
    yesterday, today = conversations(crm, "rest:ann")
    assert yesterday != today
    assert conversation_ids(crm, *rows) == [today, today, today]


def test_other_conversations_rows_are_left_alone(crm: Engine) -> None:
    now = time.time()
    rows = write_during_the_turn(crm, "rest:bob")
    with session_scope(crm) as session:
        unkeyed = record_feedback(session=session, patron_id=None, csat=3).id  # written by an older action
    ingest(
        crm,
        [
            user_event("rest:ann", "hi", timestamp=now - 1),
            bot_event("rest:ann", "Hi!", timestamp=time.time() + 1),  # after bob's rows
        ],
    )
    assert conversation_ids(crm, *rows) == [None, None, None]
    with Session(crm, future=True) as session:
        assert session.get(Feedback, unkeyed).conversation_id is None  # type: ignore[union-attr]
