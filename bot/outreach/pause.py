"""A patron's pause of campaign messages ("pause" / "暂停推送"): held for 30 days, their consent kept."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.consent import has_consent
from bot.crm.models import Patron, utcnow

# How long "pause" holds campaign messages (the opt-out hint of every campaign message says 30 days).
PAUSE_DAYS = 30
# What the audit log says: a pause changes how the patron's consent is applied, so it is kept with
# the consent changes (action "consent"), with the date it ends.
PAUSED = "the patron paused the library's messages for 30 days"
RESUMED = "the patron ended their pause of the library's messages"


@dataclass(frozen=True)
class PauseState:
    """Where a patron's pause stands after their request."""

    paused_until: dt.datetime | None  # None: not paused
    subscribed: bool  # whether they get the library's follow-up messages at all
    changed: bool = True  # False: a resume with no pause to end


def pause_messages(
    *, session: Session, patron_id: int, now: dt.datetime | None = None, days: int = PAUSE_DAYS
) -> PauseState:
    """Hold the patron's campaign messages for `days` from now (a second pause starts the days again);
    recorded in the audit log. The sender skips their deliveries with the reason `paused` meanwhile."""
    patron = session.get(Patron, patron_id)
    if patron is None:
        raise LookupError(f"no patron {patron_id}")
    until = (now or utcnow()) + dt.timedelta(days=days)
    patron.paused_until = until
    log_access(
        session=session,
        actor="patron",
        action="consent",
        patron_id=patron_id,
        reason=PAUSED,
        detail={"paused_until": until.isoformat()},
    )
    session.flush()
    return PauseState(
        paused_until=until, subscribed=has_consent(session=session, patron_id=patron_id, purpose="follow_up")
    )


def resume_messages(*, session: Session, patron_id: int, now: dt.datetime | None = None) -> PauseState:
    """End the patron's pause, if one is running (recorded in the audit log); else change nothing."""
    patron = session.get(Patron, patron_id)
    if patron is None:
        raise LookupError(f"no patron {patron_id}")
    subscribed = has_consent(session=session, patron_id=patron_id, purpose="follow_up")
    paused = patron.paused_until is not None and patron.paused_until > (now or utcnow())
    if not paused:
        return PauseState(paused_until=None, subscribed=subscribed, changed=False)
    patron.paused_until = None
    log_access(session=session, actor="patron", action="consent", patron_id=patron_id, reason=RESUMED)
    session.flush()
    return PauseState(paused_until=None, subscribed=subscribed)


def resume_date(until: dt.datetime, *, language: str, zone: ZoneInfo) -> str:
    """The day messages come again, as the patron reads it: "2027年1月15日", "15 January 2027"."""
    day = until.astimezone(zone).date()
    if language == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {day:%B} {day.year}"
