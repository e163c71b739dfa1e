"""The staff inbox: escalations as the console lists them, claiming, transfer, internal notes, handing a
conversation back to the bot. Every read of a patron's words writes the audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, or_, select, true, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect

from bot.crm.models import AuditLog, Escalation, EscalationNote, Interaction, StaffUser, utcnow
from bot.engagement.escalations import (
    ACTIVE,
    EscalationError,
    EscalationNotFoundError,
    resolve_escalation,
)

_PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
GIVEN_BACK_NOTE = "given back to the bot"
LONGEST_NOTE = 4000
INBOX_READ_REASON = "inbox: the patron's latest message"


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


# The inbox page refreshes itself every 3 s: a patron it shows is logged as read by that staff member once
# per window (who saw whose words, and from when), not 1,200 times an hour.
AUDIT_REPEAT_WINDOW = dt.timedelta(minutes=10)


def inbox(
    *, session: Session, staff: StaffUser, include_closed: bool = False, now: dt.datetime | None = None
) -> list[InboxItem]:
    """Escalations staff still have (or all), the most urgent and longest waiting first, each with the
    patron's latest message; showing those messages is a read of each patron's data, audited."""
    query = select(
        Escalation.id,
        Escalation.patron_id,
        Escalation.channel,
        Escalation.rasa_sender_id,
        Escalation.reason,
        Escalation.priority,
        Escalation.status,
        Escalation.created_at,
        Escalation.due_at,
        StaffUser.username,
        _latest_from_patron().label("latest_id"),
    ).outerjoin(StaffUser, StaffUser.id == Escalation.assignee_id)
    if not include_closed:
        query = query.where(Escalation.status.in_(ACTIVE))
    rows = session.execute(query.order_by(Escalation.due_at, Escalation.id)).all()
    wanted = [row.latest_id for row in rows if row.latest_id is not None]
    latest = {}
    if wanted:
        messages = select(Interaction.id, Interaction.text, Interaction.occurred_at)
        found = session.execute(messages.where(Interaction.id.in_(wanted)))
        latest = {message.id: message for message in found}
    items = []
    for row in rows:
        message = latest.get(row.latest_id)
        items.append(
            InboxItem(
                id=int(row.id),
                patron_id=row.patron_id,
                channel=row.channel,
                sender_id=row.rasa_sender_id,
                reason=str(row.reason),
                priority=str(row.priority or "normal"),
                status=str(row.status),
                created_at=row.created_at,
                due_at=row.due_at,
                assignee=row.username,
                latest_message=message.text if message is not None else None,
                latest_at=message.occurred_at if message is not None else None,
            )
        )
    _audit_reads(session, staff, sorted({item.patron_id for item in items if item.patron_id is not None}))
    items.sort(key=lambda item: (_PRIORITY_RANK.get(item.priority, 2), item.due_at, item.id))
    return items


def _latest_from_patron() -> ColumnElement[Any]:
    """The id of the patron's latest message in the escalation's conversation (in any, without one).

    Two correlated subqueries, so that each is answered by one index (a conversation's messages by
    ix_interaction_conversation_id, a patron's by ix_interaction_patron_id_occurred_at) rather than
    by a scan of the patron's whole history; the second runs only for an escalation without a
    conversation.
    """

    def latest(*conditions: ColumnElement[Any]) -> ScalarSelect:
        return (
            select(Interaction.id)
            .where(Interaction.patron_id == Escalation.patron_id, Interaction.direction == "in", *conditions)
            .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
            .limit(1)
            .correlate(Escalation)
            .scalar_subquery()
        )

    return func.coalesce(
        latest(Interaction.conversation_id == Escalation.conversation_id),
        latest(Escalation.conversation_id.is_(None)),
    )


def _audit_reads(session: Session, staff: StaffUser, patron_ids: list[int]) -> None:
    """One audit entry per patron shown, as log_access writes it, in one multi-row insert (not a
    round trip per patron); a patron already logged in this staff member's inbox within
    AUDIT_REPEAT_WINDOW is not logged again (the open inbox refreshes every few seconds)."""
    if not patron_ids:
        return
    since = utcnow() - AUDIT_REPEAT_WINDOW
    logged = select(AuditLog.patron_id).where(
        AuditLog.patron_id.in_(patron_ids),
        AuditLog.at >= since,
        AuditLog.staff_user_id == staff.id,
        AuditLog.reason == INBOX_READ_REASON,
    )
    already = set(session.execute(logged).scalars())
    patron_ids = [patron_id for patron_id in patron_ids if patron_id not in already]
    if not patron_ids:
        return
    entry = {"staff_user_id": staff.id, "actor": f"staff:{staff.username}", "action": "read"}
    session.execute(
        insert(AuditLog),
        [
            entry | {"patron_id": patron_id, "reason": INBOX_READ_REASON, "at": utcnow()}
            for patron_id in patron_ids
        ],
    )


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
