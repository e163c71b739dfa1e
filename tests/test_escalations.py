"""Escalations to staff, the outbound path, and handing a conversation back to the bot via Rasa's API."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions.handoff import with_staff
from bot.crm.database import session_scope
from bot.crm.models import (
    AuditLog,
    ChannelIdentity,
    Conversation,
    DeliveryAttempt,
    Escalation,
    Interaction,
    OutboxMessage,
    Patron,
    StaffUser,
)
from bot.engagement.escalations import (
    CLOSING_MESSAGE,
    EscalationError,
    EscalationNotFoundError,
    conversation_for_staff,
    list_escalations,
    open_escalation,
    open_for_sender,
    resolve_escalation,
    staff_reply,
)
from bot.knowledge.facts import LibraryFacts
from bot.outbound.dispatcher import SENT, Attempt, Dispatcher
from bot.outbound.outbox import send, take_pending

SHANGHAI = ZoneInfo("Asia/Shanghai")
WEDNESDAY_10 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)
FRIDAY_18 = dt.datetime(2026, 11, 27, 18, 0, tzinfo=SHANGHAI)


def add_patron(crm: Engine, external_id: str = "alice", language: str = "en") -> int:
    with session_scope(crm) as session:
        patron = Patron(language=language)
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel="rest", external_id=external_id))
        return patron.id


def escalate(crm: Engine, facts: LibraryFacts, patron_id: int, **options: Any) -> int:
    arguments: dict[str, Any] = {
        "channel": "rest",
        "rasa_sender_id": "rest:alice",
        "reason": "requested",
        "now": WEDNESDAY_10,
    } | options
    with session_scope(crm) as session:
        return open_escalation(session=session, patron_id=patron_id, facts=facts, **arguments).id


def test_escalation_in_staffed_hours_is_due_after_the_response_time(crm: Engine, facts: LibraryFacts) -> None:
    escalation_id = escalate(crm, facts, add_patron(crm))
    with Session(crm, future=True) as session:
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        assert escalation.due_at == dt.datetime(2026, 11, 25, 10, 45, tzinfo=SHANGHAI)
        assert (escalation.status, escalation.priority, escalation.channel) == ("open", "normal", "rest")
        assert escalation.rasa_sender_id == "rest:alice"


def test_escalation_out_of_hours_is_due_after_the_next_staffed_opening(
    crm: Engine, facts: LibraryFacts
) -> None:
    escalation_id = escalate(crm, facts, add_patron(crm), now=FRIDAY_18)
    with Session(crm, future=True) as session:
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        # Friday evening: the next librarian starts Monday 09:00.
        assert escalation.due_at == dt.datetime(2026, 11, 30, 9, 45, tzinfo=SHANGHAI)
        assert escalation.created_at == FRIDAY_18


def test_a_second_escalation_of_the_same_conversation_returns_the_first_raising_its_priority(
    crm: Engine, facts: LibraryFacts
) -> None:
    patron = add_patron(crm)
    first = escalate(crm, facts, patron)
    assert escalate(crm, facts, patron, reason="complaint", priority="high") == first
    assert escalate(crm, facts, patron, reason="fallback", priority="low") == first
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(Escalation)).scalar_one() == 1
        escalation = session.get(Escalation, first)
        assert escalation is not None
        assert (escalation.priority, escalation.reason) == ("high", "requested")
        found = open_for_sender(session=session, rasa_sender_id="rest:alice")
        assert found is not None
        assert found.id == first
        assert open_for_sender(session=session, rasa_sender_id="rest:bob") is None
    with session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=first, staff="li.wei")
    # Once resolved, the patron asking again opens a new escalation.
    assert escalate(crm, facts, patron) != first


def test_asking_for_a_librarian_after_a_complaint_makes_the_follow_up_a_live_handoff(
    crm: Engine, facts: LibraryFacts
) -> None:
    patron = add_patron(crm)
    first = escalate(crm, facts, patron, reason="complaint", priority="high")
    with Session(crm, future=True) as session:
        assert not with_staff(session.get(Escalation, first), staffed=True)
    assert escalate(crm, facts, patron, reason="requested") == first
    with Session(crm, future=True) as session:
        escalation = session.get(Escalation, first)
        assert escalation is not None
        assert (escalation.reason, escalation.priority) == ("requested", "high")
        # The bot now steps back while the librarian has the conversation.
        assert with_staff(escalation, staffed=True)
    # A later low rating does not turn the live handoff back into a follow-up.
    assert escalate(crm, facts, patron, reason="low_rating") == first
    with Session(crm, future=True) as session:
        escalation = session.get(Escalation, first)
        assert escalation is not None
        assert escalation.reason == "requested"


@pytest.mark.parametrize(("field", "value"), [("reason", "bored"), ("priority", "critical")])
def test_unknown_reason_or_priority_is_refused(
    crm: Engine, facts: LibraryFacts, field: str, value: str
) -> None:
    patron = add_patron(crm)
    with pytest.raises(ValueError, match=f"{field} must be one of"):
        escalate(crm, facts, patron, **{field: value})


def test_escalation_links_the_conversation_once_the_ingester_made_it(
    crm: Engine, facts: LibraryFacts
) -> None:
    patron = add_patron(crm)
    escalation_id = escalate(crm, facts, patron)
    with session_scope(crm) as session:
        assert session.get(Escalation, escalation_id).conversation_id is None  # type: ignore[union-attr]
        conversation = Conversation(patron_id=patron, channel="rest", rasa_sender_id="rest:alice")
        session.add(conversation)
        session.flush()
        conversation_id = conversation.id
    with session_scope(crm) as session:
        staff_reply(session=session, escalation_id=escalation_id, staff="li.wei", text="Hello, Li here.")
    with Session(crm, future=True) as session:
        assert session.get(Escalation, escalation_id).conversation_id == conversation_id  # type: ignore[union-attr]
        assert session.get(Conversation, conversation_id).status == "with_staff"  # type: ignore[union-attr]
        reply = session.execute(select(Interaction)).scalar_one()
        assert reply.conversation_id == conversation_id


def test_staff_reply_queues_an_outbox_message_and_records_the_interaction(
    crm: Engine, facts: LibraryFacts
) -> None:
    patron = add_patron(crm)
    escalation_id = escalate(crm, facts, patron)
    with session_scope(crm) as session:
        outbox_id = staff_reply(
            session=session, escalation_id=escalation_id, staff="li.wei", text="Your card is renewed."
        )
    with Session(crm, future=True) as session:
        message = session.get(OutboxMessage, outbox_id)
        assert message is not None
        assert (message.channel, message.recipient, message.patron_id) == ("rest", "rest:alice", patron)
        assert (message.text, message.produced_by, message.delivered_at) == (
            "Your card is renewed.",
            "staff:li.wei",
            None,
        )
        interaction = session.execute(select(Interaction)).scalar_one()
        assert (interaction.direction, interaction.text, interaction.produced_by) == (
            "out",
            "Your card is renewed.",
            "staff:li.wei",
        )
        assert (interaction.event_key, interaction.patron_id, interaction.channel) == (
            f"outbox:{outbox_id}",
            patron,
            "rest",
        )
        staff = session.execute(select(StaffUser)).scalar_one()
        assert (staff.username, staff.role) == ("li.wei", "librarian")
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        assert (escalation.status, escalation.assignee_id) == ("assigned", staff.id)
        audit = session.execute(select(AuditLog)).scalar_one()
        assert (audit.actor, audit.action, audit.patron_id) == ("staff:li.wei", "update", patron)


def test_take_pending_hands_each_message_out_once_oldest_first(crm: Engine) -> None:
    patron = add_patron(crm)
    with session_scope(crm) as session:
        for text in ("first", "second"):
            send(session=session, channel="rest", recipient="rest:alice", text=text, produced_by="staff:li")
        # Found by the recipient's channel identity when no patron is given.
        send(session=session, channel="rest", recipient="rest:alice", text="third", produced_by="staff:li")
        send(
            session=session,
            channel="rest",
            recipient="rest:bob",
            text="not alice's",
            produced_by="x",
            patron_id=patron,
        )
    with session_scope(crm) as session:
        taken = take_pending(session=session, channel="rest", recipient="rest:alice")
        assert [message.text for message in taken] == ["first", "second", "third"]
        assert all(message.patron_id == patron for message in taken)
    with session_scope(crm) as session:
        assert take_pending(session=session, channel="rest", recipient="rest:alice") == []
        assert [m.text for m in take_pending(session=session, channel="rest", recipient="rest:bob")] == [
            "not alice's"
        ]


def test_send_to_an_unknown_recipient_is_refused(crm: Engine) -> None:
    from bot.crm.patrons import PatronNotFoundError

    with pytest.raises(PatronNotFoundError), session_scope(crm) as session:
        send(session=session, channel="rest", recipient="rest:nobody", text="hi", produced_by="staff:li")


def test_a_push_channel_delivers_once_recorded_and_a_failed_push_stays_pending(crm: Engine) -> None:
    """Record, commit, push, record the outcome: a message is never sent without being recorded, and
    one the channel refused waits (with those after it, so the patron never gets them out of order)."""
    pushed: list[tuple[str, str]] = []

    async def push(message: OutboxMessage) -> Attempt:
        # The message is committed before it is pushed: another connection sees it.
        with Session(crm, future=True) as other:
            assert other.get(OutboxMessage, message.id) is not None
        if message.text == "fail":
            return Attempt("retry", reason="http_502")
        pushed.append((str(message.recipient), str(message.text)))
        return SENT

    def record_in(session: Session, *texts: str) -> list[int]:
        patron = Patron(language="zh")
        session.add(patron)
        session.flush()
        return [
            send(
                session=session,
                channel="telegram",
                recipient="telegram:42",
                text=text,
                produced_by="s",
                patron_id=patron.id,
            )
            for text in texts
        ]

    def record(*texts: str) -> list[int]:
        with session_scope(crm) as session:
            return record_in(session, *texts)

    def record_then_fail() -> None:
        with session_scope(crm) as session:
            ids = record_in(session, "lost")
            assert ids
            raise RuntimeError("the caller's transaction fails after send")

    async def scenario() -> tuple[list[int], int]:
        dispatcher = Dispatcher(engine=crm)
        dispatcher.register("telegram", push)
        with pytest.raises(RuntimeError, match="fails after send"):
            record_then_fail()
        assert await dispatcher.drain_once() == 0  # nothing left for a transaction that did not commit
        ids = record("hi", "fail", "later")
        assert pushed == []  # recorded, not yet pushed
        sent = await dispatcher.drain_once()
        assert await dispatcher.drain_once() == 0  # the failed one waits for its retry time
        return ids, sent

    (delivered, failed, after), sent = asyncio.run(scenario())
    assert sent == 1
    assert pushed == [("telegram:42", "hi")]
    with Session(crm, future=True) as session:
        assert session.get(OutboxMessage, delivered).status == "delivered"  # type: ignore[union-attr]
        waiting = session.get(OutboxMessage, failed)
        assert waiting is not None
        assert waiting.status == "pending"
        assert waiting.next_attempt_at is not None
        assert session.get(OutboxMessage, after).status == "pending"  # type: ignore[union-attr]
        assert session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 3
        outcomes = session.execute(
            select(DeliveryAttempt.outbox_id, DeliveryAttempt.outcome, DeliveryAttempt.reason).order_by(
                DeliveryAttempt.id
            )
        ).all()
    assert outcomes == [(delivered, "sent", None), (failed, "retry", "http_502")]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_resolving_tells_the_patron_in_their_language_that_the_bot_is_back(
    crm: Engine, facts: LibraryFacts, language: str
) -> None:
    patron = add_patron(crm, language=language)
    with session_scope(crm) as session:
        session.add(Conversation(patron_id=patron, channel="rest", rasa_sender_id="rest:alice"))
    escalation_id = escalate(crm, facts, patron)
    with session_scope(crm) as session:
        resolve_escalation(
            session=session, escalation_id=escalation_id, staff="li.wei", note="renewed her card"
        )
    with Session(crm, future=True) as session:
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        assert (escalation.status, escalation.resolution_note) == ("resolved", "renewed her card")
        assert escalation.resolved_at is not None
        assert escalation.assignee_id is not None
        message = session.execute(select(OutboxMessage)).scalar_one()
        assert message.text == CLOSING_MESSAGE[language]  # type: ignore[index]
        assert message.recipient == "rest:alice"
        conversation = session.execute(select(Conversation)).scalar_one()
        assert conversation.status == "open"
        assert session.execute(select(Interaction.text)).scalar_one() == CLOSING_MESSAGE[language]  # type: ignore[index]


def test_a_resolved_escalation_takes_no_reply_and_no_second_resolution(
    crm: Engine, facts: LibraryFacts
) -> None:
    escalation_id = escalate(crm, facts, add_patron(crm))
    with session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=escalation_id, staff="li.wei")
    with pytest.raises(EscalationError, match="is already resolved"), session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=escalation_id, staff="li.wei")
    with pytest.raises(EscalationError, match="is resolved"), session_scope(crm) as session:
        staff_reply(session=session, escalation_id=escalation_id, staff="li.wei", text="hello?")
    with pytest.raises(EscalationNotFoundError, match="no escalation 999"), session_scope(crm) as session:
        staff_reply(session=session, escalation_id=999, staff="li.wei", text="hello?")


def test_reading_the_conversation_is_audited_and_in_order(crm: Engine, facts: LibraryFacts) -> None:
    patron = add_patron(crm)
    now = dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC)
    with session_scope(crm) as session:
        conversation = Conversation(patron_id=patron, channel="rest", rasa_sender_id="rest:alice")
        session.add(conversation)
        session.flush()
        for minute, (direction, text) in enumerate(
            [("in", "I lost my card"), ("out", "Let me find a librarian")]
        ):
            session.add(
                Interaction(
                    patron_id=patron,
                    conversation_id=conversation.id,
                    channel="rest",
                    direction=direction,
                    text=text,
                    event_key=f"k{minute}",
                    occurred_at=now + dt.timedelta(minutes=minute),
                )
            )
    escalation_id = escalate(crm, facts, patron)
    with session_scope(crm) as session:
        texts = [
            m.text
            for m in conversation_for_staff(session=session, escalation_id=escalation_id, staff="li.wei")
        ]
    assert texts == ["I lost my card", "Let me find a librarian"]
    with Session(crm, future=True) as session:
        audit = session.execute(select(AuditLog)).scalar_one()
        assert (audit.action, audit.actor, audit.patron_id) == ("read", "staff:li.wei", patron)
        assert audit.detail == {"escalation_id": escalation_id}


def test_list_escalations_by_status_soonest_due_first(crm: Engine, facts: LibraryFacts) -> None:
    late = escalate(crm, facts, add_patron(crm, "alice"), now=FRIDAY_18)
    soon = escalate(crm, facts, add_patron(crm, "bob"), rasa_sender_id="rest:bob")
    with session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=late, staff="li.wei")
    with Session(crm, future=True) as session:
        assert [e.id for e in list_escalations(session=session)] == [soon, late]
        assert [e.id for e in list_escalations(session=session, status="open")] == [soon]
        assert [e.id for e in list_escalations(session=session, status="resolved")] == [late]
        with pytest.raises(EscalationError, match="status must be one of"):
            list_escalations(session=session, status="closed")
