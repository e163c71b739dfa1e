"""The audit trail: every staff read or change of a patron's data goes through here and is logged."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.consent import current_consents
from bot.crm.conversations import patron_history
from bot.crm.models import AuditLog, ChannelIdentity, StaffUser
from bot.crm.patrons import resolve_patron


class AuditReasonError(ValueError):
    """A staff access without a reason; every access must say why."""


@dataclass(frozen=True)
class PatronRecord:
    """What a librarian sees of a patron: profile, channels, consents and recent messages."""

    patron_id: int
    display_name: str | None
    language: str | None
    patron_type: str | None
    interests: list[str]
    channels: list[str]
    consents: dict[str, bool]
    last_seen_at: dt.datetime | None
    recent: list[dict[str, Any]] = field(default_factory=list)


def log_access(
    *,
    session: Session,
    actor: str,
    action: str,
    patron_id: int | None,
    reason: str,
    staff_user: StaffUser | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    """Write one audit entry (in the caller's transaction, so it lands with the work it describes)."""
    if not reason.strip():
        raise AuditReasonError("a reason is required for every access to a patron's data")
    entry = AuditLog(
        staff_user_id=staff_user.id if staff_user else None,
        actor=actor,
        action=action,
        patron_id=patron_id,
        reason=reason.strip()[:500],
        detail=detail,
    )
    session.add(entry)
    session.flush()
    return entry


def read_patron_record(
    *,
    session: Session,
    actor: str,
    patron_ref: str,
    reason: str,
    staff_user: StaffUser | None = None,
    recent: int = 50,
) -> PatronRecord:
    """A patron's record for staff, with the read written to the audit log."""
    patron = resolve_patron(session=session, ref=patron_ref)
    log_access(
        session=session, actor=actor, action="read", patron_id=patron.id, reason=reason, staff_user=staff_user
    )
    channels = session.execute(
        select(ChannelIdentity.channel, ChannelIdentity.external_id).where(
            ChannelIdentity.patron_id == patron.id
        )
    ).all()
    messages = patron_history(session=session, patron_id=patron.id, limit=recent)
    return PatronRecord(
        patron_id=patron.id,
        display_name=patron.display_name,
        language=patron.language,
        patron_type=patron.patron_type,
        interests=[str(item) for item in (patron.interests if isinstance(patron.interests, list) else [])],
        channels=[f"{channel}:{external}" for channel, external in channels],
        consents=current_consents(session=session, patron_id=patron.id),
        last_seen_at=patron.last_seen_at,
        recent=[
            {
                "at": m.occurred_at.isoformat() if m.occurred_at else None,
                "direction": m.direction,
                "text": m.text,
                "intent": m.intent,
            }
            for m in reversed(messages)
        ],
    )
