"""The console's escalation views and the audit log (admins only); a patron's profile: console/profile.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.models import AuditLog, Escalation, StaffUser
from bot.crm.models.staff import AUDIT_ACTIONS
from bot.engagement import inbox
from bot.engagement.escalations import EscalationNotFoundError, conversation_for_staff
from console.answers import answer, error
from console.gate import ADMIN, Staff, staff_only


def escalation_state(escalation: Escalation, session: Session) -> dict[str, Any]:
    assignee = session.get(StaffUser, escalation.assignee_id) if escalation.assignee_id else None
    return {
        "id": escalation.id,
        "status": escalation.status,
        "assignee": assignee.username if assignee is not None else None,
        "resolved_at": escalation.resolved_at,
    }


def escalation_view(session: Session, staff: StaffUser, escalation_id: int) -> dict[str, Any]:
    """An escalation with its whole conversation (the read audited), intents and confidences, and notes."""
    messages = conversation_for_staff(session=session, escalation_id=escalation_id, staff=str(staff.username))
    escalation = session.get(Escalation, escalation_id)
    if escalation is None:
        raise EscalationNotFoundError(f"no escalation {escalation_id}")
    return {
        **escalation_state(escalation, session),
        "patron_id": escalation.patron_id,
        "channel": escalation.channel,
        "sender_id": escalation.rasa_sender_id,
        "reason": escalation.reason,
        "priority": escalation.priority,
        "due_at": escalation.due_at,
        "messages": [
            {
                "at": m.occurred_at,
                "direction": m.direction,
                "text": m.text,
                "intent": m.intent,
                "confidence": m.confidence,
                "produced_by": m.produced_by,
            }
            for m in messages
        ],
        "notes": [
            {"at": note.at, "staff": username, "text": note.text}
            for note, username in inbox.notes(session=session, escalation_id=escalation_id)
        ],
    }


def audit_entries(
    session: Session, *, staff: str | None, patron: int | None, action: str | None, limit: int
) -> list[dict[str, Any]]:
    """The audit log, newest first, filtered by staff member, patron and action."""
    query = select(AuditLog, StaffUser.username).outerjoin(StaffUser, StaffUser.id == AuditLog.staff_user_id)
    if patron is not None:
        query = query.where(AuditLog.patron_id == patron)
    if action is not None:
        query = query.where(AuditLog.action == action)
    if staff is not None:
        query = query.where(StaffUser.username == staff)
    rows = session.execute(query.order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit)).all()
    return [
        {
            "id": entry.id,
            "at": entry.at,
            "staff": username,
            "actor": entry.actor,
            "action": entry.action,
            "patron_id": entry.patron_id,
            "reason": entry.reason,
        }
        for entry, username in rows
    ]


@staff_only(ADMIN)
async def audit_log(request: Request, staff: Staff) -> Response:
    params = request.query_params
    try:
        limit = min(max(int(params.get("limit", "100")), 1), 1000)
        patron = int(params["patron"]) if params.get("patron") else None
        if patron is not None and not 0 < patron < 10**18:
            raise ValueError(patron)
    except ValueError:
        return error(400, "'limit' and 'patron' are whole numbers")
    action = params.get("action") or None
    if action is not None and action not in AUDIT_ACTIONS:
        return error(400, f"'action' must be one of {', '.join(AUDIT_ACTIONS)}")
    who = params.get("staff") or None
    if who is not None and ("\x00" in who or len(who) > 100):  # PostgreSQL refuses NUL in a string
        return error(400, "'staff' is a staff member's username")

    def read(session: Session, _: StaffUser) -> dict[str, Any]:
        return {"entries": audit_entries(session, staff=who, patron=patron, action=action, limit=limit)}

    return answer(await staff.crm(read))


ROUTES = [
    Route("/api/audit", audit_log, methods=["GET"]),
]
