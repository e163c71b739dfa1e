"""Escalations: conversations handed to staff, staff replies through the outbox, and handing back.

The bot's actions open escalations; staff (the command line now, the console later) list them, read
the conversation (audited), reply and resolve. The bot reads the CRM at every patron message
(actions/handoff.py, action_check_handoff), so a resolution hands the conversation back at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.conversations import sender_key
from bot.crm.models import Conversation, Escalation, Interaction, Patron, StaffUser, Suggestion, utcnow
from bot.crm.models.feedback import (
    ACTIVE_ESCALATION_STATUSES,
    ESCALATION_PRIORITIES,
    ESCALATION_REASONS,
    ESCALATION_STATUSES,
)
from bot.crm.patrons import PatronNotFoundError, patron_key
from bot.knowledge.facts import FactsError, LibraryFacts, load_facts
from bot.knowledge.staffed_hours import next_staffed
from bot.language import LANGUAGES, Language
from bot.outbound.outbox import send
from bot.settings import get_settings

ACTIVE = ACTIVE_ESCALATION_STATUSES
# Escalations in which a librarian talks with the patron (the bot steps back), as against complaints and
# low ratings, which staff follow up while the bot keeps helping.
LIVE_REASONS = ("requested", "fallback")
_RANK = {priority: rank for rank, priority in enumerate(ESCALATION_PRIORITIES)}

# Sent to the patron when staff resolve: the bot has the conversation again.
CLOSING_MESSAGE: dict[Language, str] = {
    "zh": "馆员已结束这次对话，现在由我（图书馆的智能助手）继续为您服务。",
    "en": "The librarian has closed this conversation; I'm the library's assistant again.",
}
CLOSING_PRODUCER = "resolve_escalation"
# When the facts file (staffed hours, response time) cannot be read: due within a day.
UNKNOWN_HOURS_DUE = dt.timedelta(days=1)


class EscalationError(Exception):
    """A staff action on an escalation that cannot be done; the message says why, in one line."""


class EscalationNotFoundError(EscalationError, LookupError):
    """No escalation has the id given."""


def due_time(*, facts: LibraryFacts, at: dt.datetime) -> dt.datetime:
    """When an escalation opened at `at` is due: the response time, counted from staffed hours."""
    start = next_staffed(facts=facts, at=at) or at
    return (start + facts.staff_response).astimezone(dt.UTC)


def open_for_sender(*, session: Session, rasa_sender_id: str) -> Escalation | None:
    """The escalation of this conversation that staff still have (open or assigned), if any."""
    return session.execute(
        select(Escalation)
        .where(Escalation.rasa_sender_id == rasa_sender_id, Escalation.status.in_(ACTIVE))
        .order_by(Escalation.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def open_escalation(
    *,
    session: Session,
    patron_id: int,
    channel: str,
    rasa_sender_id: str,
    reason: str,
    priority: str = "normal",
    facts: LibraryFacts | None = None,
    now: dt.datetime | None = None,
) -> Escalation:
    """Hand the conversation to staff, or return the escalation it already has (raising its priority,
    and making a follow-up a live one when the patron now asks for a librarian).

    The due time is the library's staff response time (facts file) from now, or from the next
    staffed hours when no librarian is on duty. A complaint's escalation takes up the complaints of
    this conversation not yet handed to staff (bot.engagement.feedback.record_report with the same
    `rasa_sender_id`), so the number the patron was told finds it.
    """
    if reason not in ESCALATION_REASONS:
        raise ValueError(f"reason must be one of {', '.join(ESCALATION_REASONS)}, got {reason!r}")
    if priority not in ESCALATION_PRIORITIES:
        raise ValueError(f"priority must be one of {', '.join(ESCALATION_PRIORITIES)}, got {priority!r}")
    existing = open_for_sender(session=session, rasa_sender_id=rasa_sender_id)
    if existing is not None:
        if _RANK[priority] > _RANK.get(existing.priority or "normal", 0):
            existing.priority = priority
        if reason in LIVE_REASONS and existing.reason not in LIVE_REASONS:
            # After a complaint or a low rating the patron asks for a person: staff now talk with them
            # (the complaint itself stays in the suggestion table, the rating in feedback).
            existing.reason = reason
        _attach_conversation(session=session, escalation=existing)
        session.flush()
        if reason == "complaint":
            _take_up_complaints(session=session, escalation=existing)
        return existing
    if session.get(Patron, patron_id) is None:
        raise PatronNotFoundError(f"no patron {patron_id}: cannot open an escalation")
    if facts is None:
        settings = get_settings()
        try:
            facts = load_facts(settings.path(settings.library_facts))
        except FactsError:
            facts = None  # the patron is still handed over; the due time is a guess (below)
    now = now or utcnow()
    escalation = Escalation(
        patron_id=patron_id,
        channel=channel,
        rasa_sender_id=rasa_sender_id,
        reason=reason,
        priority=priority,
        status="open",
        created_at=now,
        due_at=due_time(facts=facts, at=now) if facts is not None else now + UNKNOWN_HOURS_DUE,
    )
    session.add(escalation)
    _attach_conversation(session=session, escalation=escalation)
    session.flush()
    if reason == "complaint":
        _take_up_complaints(session=session, escalation=escalation)
    return escalation


def _take_up_complaints(*, session: Session, escalation: Escalation) -> None:
    """Link the complaints of the escalation's conversation that no escalation has yet."""
    session.execute(
        update(Suggestion)
        .where(
            Suggestion.rasa_sender_id == sender_key(escalation.rasa_sender_id),
            Suggestion.patron_id == escalation.patron_id,
            Suggestion.kind == "complaint",
            Suggestion.escalation_id.is_(None),
        )
        .values(escalation_id=escalation.id)
        .execution_options(synchronize_session="fetch")
    )


def _attach_conversation(*, session: Session, escalation: Escalation) -> None:
    """Link the conversation row once the ingester has made it, and mark it as with staff."""
    if escalation.conversation_id is None and escalation.rasa_sender_id and escalation.patron_id:
        escalation.conversation_id = session.execute(
            select(Conversation.id)
            .where(
                Conversation.rasa_sender_id == escalation.rasa_sender_id,
                Conversation.patron_id == escalation.patron_id,
            )
            .order_by(Conversation.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    if escalation.conversation_id is not None and escalation.status in ACTIVE:
        conversation = session.get(Conversation, escalation.conversation_id)
        if conversation is not None and conversation.status != "with_staff":
            conversation.status = "with_staff"


def list_escalations(*, session: Session, status: str | None = None) -> list[Escalation]:
    """Escalations (all, or those with `status`), the soonest due first."""
    if status is not None and status not in ESCALATION_STATUSES:
        raise EscalationError(f"status must be one of {', '.join(ESCALATION_STATUSES)}, got {status!r}")
    query = select(Escalation).order_by(Escalation.due_at, Escalation.id)
    if status is not None:
        query = query.where(Escalation.status == status)
    return list(session.execute(query).scalars())


def staff_member(*, session: Session, username: str) -> StaffUser:
    """The staff user `username`, created as a librarian on first use; an inactive one is refused."""
    username = username.strip()
    if not username or len(username) > 100:
        raise EscalationError("--staff must be a staff username of 1 to 100 characters")
    user = session.execute(select(StaffUser).where(StaffUser.username == username)).scalar_one_or_none()
    if user is None:
        user = StaffUser(username=username, role="librarian", active=True)
        session.add(user)
        session.flush()
    elif not user.active:
        raise EscalationError(f"staff user {username!r} is not active")
    return user


def _escalation(session: Session, escalation_id: int) -> Escalation:
    escalation = session.get(Escalation, escalation_id)
    if escalation is None:
        raise EscalationNotFoundError(f"no escalation {escalation_id}: `patronbot escalations` lists them")
    _attach_conversation(session=session, escalation=escalation)
    return escalation


def _active_with_patron(escalation: Escalation) -> tuple[int, str]:
    if escalation.patron_id is None:
        raise EscalationError(
            f"escalation {escalation.id} cannot take a reply: the patron's data was erased at their"
            " request, so there is no one to send it to"
        )
    if escalation.status not in ACTIVE:
        raise EscalationError(f"escalation {escalation.id} is {escalation.status}: nothing to do")
    if not escalation.rasa_sender_id:
        raise EscalationError(f"escalation {escalation.id} names no conversation to reply to")
    return escalation.patron_id, escalation.rasa_sender_id


def conversation_for_staff(*, session: Session, escalation_id: int, staff: str) -> list[Interaction]:
    """The escalated conversation's messages, oldest first, for a staff member; the read is audited."""
    escalation = _escalation(session, escalation_id)
    user = staff_member(session=session, username=staff)
    if escalation.patron_id is None:
        return []
    log_access(
        session=session,
        actor=f"staff:{user.username}",
        action="read",
        patron_id=escalation.patron_id,
        reason=f"answering escalation {escalation.id}",
        staff_user=user,
        detail={"escalation_id": escalation.id},
    )
    query = select(Interaction).where(Interaction.patron_id == escalation.patron_id)
    if escalation.conversation_id is not None:
        query = query.where(Interaction.conversation_id == escalation.conversation_id)
    elif escalation.channel:
        query = query.where(Interaction.channel == escalation.channel)
    newest = list(
        session.execute(
            query.order_by(Interaction.occurred_at.desc(), Interaction.id.desc()).limit(200)
        ).scalars()
    )
    return newest[::-1]


def staff_reply(*, session: Session, escalation_id: int, staff: str, text: str) -> int:
    """Send a staff member's reply to the patron (outbound.send); the escalation is then theirs.

    Returns the outbox message's id.
    """
    escalation = _escalation(session, escalation_id)
    patron_id, sender = _active_with_patron(escalation)
    if not text.strip():
        raise EscalationError("the reply is empty: nothing sent")
    user = staff_member(session=session, username=staff)
    outbox_id = send(
        session=session,
        channel=escalation.channel or patron_key(sender, None).channel,
        recipient=sender,
        text=text,
        produced_by=f"staff:{user.username}",
        patron_id=patron_id,
    )
    escalation.status = "assigned"
    escalation.assignee_id = user.id
    log_access(
        session=session,
        actor=f"staff:{user.username}",
        action="update",
        patron_id=patron_id,
        reason=f"reply to escalation {escalation.id}",
        staff_user=user,
        detail={"escalation_id": escalation.id, "outbox_id": outbox_id},
    )
    session.flush()
    return outbox_id


def resolve_escalation(
    *,
    session: Session,
    escalation_id: int,
    staff: str,
    note: str | None = None,
    now: dt.datetime | None = None,
) -> Escalation:
    """Close the escalation and tell the patron, in their language, that the bot has them again."""
    escalation = _escalation(session, escalation_id)
    if escalation.status not in ACTIVE:
        erased = ": the patron's data was erased at their request" if escalation.patron_id is None else ""
        raise EscalationError(f"escalation {escalation.id} is already {escalation.status}{erased}")
    user = staff_member(session=session, username=staff)
    escalation.status = "resolved"
    escalation.resolved_at = now or utcnow()
    escalation.resolution_note = note.strip() if note and note.strip() else None
    if escalation.assignee_id is None:
        escalation.assignee_id = user.id
    if escalation.conversation_id is not None:
        conversation = session.get(Conversation, escalation.conversation_id)
        if conversation is not None and conversation.status == "with_staff":
            conversation.status = "open"
    patron = session.get(Patron, escalation.patron_id) if escalation.patron_id is not None else None
    if patron is not None and escalation.rasa_sender_id:
        language: Language = next((lang for lang in LANGUAGES if lang == patron.language), "zh")
        send(
            session=session,
            channel=escalation.channel or patron_key(escalation.rasa_sender_id, None).channel,
            recipient=escalation.rasa_sender_id,
            text=CLOSING_MESSAGE[language],
            produced_by=CLOSING_PRODUCER,
            patron_id=patron.id,
        )
        log_access(
            session=session,
            actor=f"staff:{user.username}",
            action="update",
            patron_id=patron.id,
            reason=f"resolved escalation {escalation.id}",
            staff_user=user,
            detail={"escalation_id": escalation.id},
        )
    session.flush()
    return escalation
