"""The staff inbox: escalations as the console lists them, claiming, transfer, internal notes, handing a
conversation back to the bot. Every read of a patron's words writes the audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, true, update
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.models import Escalation, EscalationNote, Interaction, StaffUser, utcnow
from bot.engagement.escalations import (
    ACTIVE,
    EscalationError,
    EscalationNotFoundError,
    resolve_escalation,
)

_PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
GIVEN_BACK_NOTE = "given back to the bot"
LONGEST_NOTE = 4000


@dataclass(frozen=True)
class InboxItem:
    """One escalation in the inbox, with the patron's latest message."""

    id: int
    patron_id: int | None
    channel: str | None
    sender_id: str | None
    reason: str
    priority: str
    status: str
    created_at: dt.datetime
    due_at: dt.datetime
    assignee: str | None
    latest_message: str | None
    latest_at: dt.datetime | None


def inbox(
    *, session: Session, staff: StaffUser, include_closed: bool = False, now: dt.datetime | None = None
) -> list[InboxItem]:
    """Escalations staff still have (or all), the most urgent and longest waiting first, each with the
    patron's latest message; showing those messages is a read of each patron's data, audited."""
    query = select(Escalation, StaffUser.username).outerjoin(
        StaffUser, StaffUser.id == Escalation.assignee_id
    )
    if not include_closed:
        query = query.where(Escalation.status.in_(ACTIVE))
    rows = session.execute(query.order_by(Escalation.due_at, Escalation.id)).all()
    items: list[InboxItem] = []
    for escalation, assignee in rows:
        latest = _latest_from_patron(session, escalation)
        items.append(
            InboxItem(
                id=int(escalation.id),
                patron_id=escalation.patron_id,
                channel=escalation.channel,
                sender_id=escalation.rasa_sender_id,
                reason=str(escalation.reason),
                priority=str(escalation.priority or "normal"),
                status=str(escalation.status),
                created_at=escalation.created_at,
                due_at=escalation.due_at,
                assignee=assignee,
                latest_message=latest.text if latest is not None else None,
                latest_at=latest.occurred_at if latest is not None else None,
            )
        )
    for patron_id in sorted({item.patron_id for item in items if item.patron_id is not None}):
        log_access(
            session=session,
            actor=f"staff:{staff.username}",
            action="read",
            patron_id=patron_id,
            reason="inbox: the patron's latest message",
            staff_user=staff,
        )
    items.sort(key=lambda item: (_PRIORITY_RANK.get(item.priority, 2), item.due_at, item.id))
    return items


def _latest_from_patron(session: Session, escalation: Escalation) -> Interaction | None:
    if escalation.patron_id is None:
        return None
    query = select(Interaction).where(
        Interaction.patron_id == escalation.patron_id, Interaction.direction == "in"
    )
    if escalation.conversation_id is not None:
        query = query.where(Interaction.conversation_id == escalation.conversation_id)
    return session.execute(
        query.order_by(Interaction.occurred_at.desc(), Interaction.id.desc()).limit(1)
    ).scalar_one_or_none()


def _active(session: Session, escalation_id: int) -> Escalation:
    escalation = session.get(Escalation, escalation_id)
    if escalation is None:
        raise EscalationNotFoundError(f"no escalation {escalation_id}")
    if escalation.status not in ACTIVE:
        raise EscalationError(f"escalation {escalation_id} is {escalation.status}: nothing to do")
    return escalation


def claim(*, session: Session, escalation_id: int, staff: StaffUser) -> Escalation:
    """Make the escalation `staff`'s. Two librarians cannot both claim one: the update takes it only while
    it is unclaimed (or already theirs), so the second is told who has it."""
    escalation = _active(session, escalation_id)
    taken = session.execute(
        update(Escalation)
        .where(
            Escalation.id == escalation_id,
            Escalation.status.in_(ACTIVE),
            or_(Escalation.assignee_id.is_(None), Escalation.assignee_id == staff.id),
        )
        .values(assignee_id=staff.id, status="assigned")
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(escalation)
        holder = session.get(StaffUser, escalation.assignee_id) if escalation.assignee_id else None
        who = holder.username if holder is not None else "someone else"
        raise EscalationError(f"escalation {escalation_id} is already claimed by {who}")
    session.refresh(escalation)
    return escalation


def transfer(*, session: Session, escalation_id: int, staff: StaffUser, to: str) -> Escalation:
    """Hand a claimed escalation to another active staff member (by their username)."""
    escalation = _active(session, escalation_id)
    target = session.execute(select(StaffUser).where(StaffUser.username == to.strip())).scalar_one_or_none()
    if target is None or not target.active:
        raise EscalationError(f"no active staff member {to!r} to transfer to")
    mine = or_(Escalation.assignee_id.is_(None), Escalation.assignee_id == staff.id)
    moved = session.execute(
        update(Escalation)
        .where(Escalation.id == escalation_id, Escalation.status.in_(ACTIVE))
        .where(true() if staff.role == "admin" else mine)
        .values(assignee_id=target.id, status="assigned")
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise EscalationError(
            f"escalation {escalation_id} is claimed by someone else: only they or an admin can transfer it"
        )
    session.refresh(escalation)
    return escalation


def add_note(*, session: Session, escalation_id: int, staff: StaffUser, text: str) -> EscalationNote:
    """An internal note on the escalation: for staff only, never sent to the patron."""
    note = text.strip()
    if not note:
        raise EscalationError("the note is empty")
    if len(note) > LONGEST_NOTE:
        raise EscalationError(f"a note has at most {LONGEST_NOTE} characters")
    if session.get(Escalation, escalation_id) is None:
        raise EscalationNotFoundError(f"no escalation {escalation_id}")
    row = EscalationNote(escalation_id=escalation_id, staff_user_id=staff.id, text=note, at=utcnow())
    session.add(row)
    session.flush()
    return row


def notes(*, session: Session, escalation_id: int) -> list[tuple[EscalationNote, str | None]]:
    rows = session.execute(
        select(EscalationNote, StaffUser.username)
        .outerjoin(StaffUser, StaffUser.id == EscalationNote.staff_user_id)
        .where(EscalationNote.escalation_id == escalation_id)
        .order_by(EscalationNote.at, EscalationNote.id)
    ).all()
    return [(note, username) for note, username in rows]


def give_back(*, session: Session, escalation_id: int, staff: StaffUser) -> Escalation:
    """Hand the conversation back to the bot: the escalation is resolved (noted as given back) and the
    patron told, in their language, that the assistant has them again."""
    _active(session, escalation_id)
    return resolve_escalation(
        session=session, escalation_id=escalation_id, staff=str(staff.username), note=GIVEN_BACK_NOTE
    )
