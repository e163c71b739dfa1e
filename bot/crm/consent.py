"""Patrons' consents: recorded as history, in force at once, and withdrawn in one step."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.crm.models import (
    CONSENT_PURPOSES,
    Campaign,
    Consent,
    Delivery,
    Patron,
    PatronInterest,
    Segment,
    SegmentMembership,
    utcnow,
)

# What a patron is taken to have agreed to before saying anything: being answered when they write.
DEFAULTS = {"service": True, "follow_up": False, "profiling": False, "cross_border": False}


@dataclass(frozen=True)
class ConsentChange:
    """The outcome of a consent decision: whether it changed anything, and what it cancelled."""

    purpose: str
    granted: bool
    changed: bool
    cancelled_deliveries: int = 0


def current_consents(*, session: Session, patron_id: int) -> dict[str, bool]:
    """The consent in force for every purpose: the latest decision, else the default."""
    state = dict(DEFAULTS)
    rows = session.execute(
        select(Consent.purpose, Consent.granted)
        .where(Consent.patron_id == patron_id)
        .order_by(Consent.recorded_at, Consent.id)
    )
    for purpose, granted in rows:
        state[str(purpose)] = bool(granted)
    return state


def has_consent(*, session: Session, patron_id: int, purpose: str) -> bool:
    return current_consents(session=session, patron_id=patron_id)[purpose]


def record_consent(
    *,
    session: Session,
    patron_id: int,
    purpose: str,
    granted: bool,
    channel: str | None = None,
    wording_version: str | None = None,
    at: dt.datetime | None = None,
) -> ConsentChange:
    """Record a patron's decision. Repeating their last recorded decision changes nothing (no new
    row); a first explicit decision is recorded even when it equals the default.

    Withdrawing takes effect at once: pending deliveries that need the purpose are skipped (opted_out), and
    withdrawing profiling clears the interests, interest vector, persona and rule-made segment
    memberships built on it.
    """
    if purpose not in CONSENT_PURPOSES:
        raise ValueError(f"unknown consent purpose {purpose!r}; one of {', '.join(CONSENT_PURPOSES)}")
    if session.get(Patron, patron_id) is None:
        raise LookupError(f"no patron {patron_id}")
    latest = session.execute(
        select(Consent.granted)
        .where(Consent.patron_id == patron_id, Consent.purpose == purpose)
        .order_by(Consent.recorded_at.desc(), Consent.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if latest is not None and bool(latest) == granted:
        return ConsentChange(purpose=purpose, granted=granted, changed=False)
    session.add(
        Consent(
            patron_id=patron_id,
            purpose=purpose,
            granted=granted,
            channel=channel,
            wording_version=wording_version,
            recorded_at=at or utcnow(),
        )
    )
    cancelled = 0 if granted else _withdraw_effects(session=session, patron_id=patron_id, purpose=purpose)
    session.flush()
    return ConsentChange(purpose=purpose, granted=granted, changed=True, cancelled_deliveries=cancelled)


def _withdraw_effects(*, session: Session, patron_id: int, purpose: str) -> int:
    campaigns = select(Campaign.id).where(Campaign.purpose == purpose).scalar_subquery()
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.patron_id == patron_id, Delivery.state == "pending", Delivery.campaign_id.in_(campaigns)
        )
        .values(state="skipped", reason="opted_out", last_error="consent withdrawn")
        .execution_options(synchronize_session=False)
    )
    if purpose == "profiling":
        session.execute(
            update(Patron)
            .where(Patron.id == patron_id)
            .values(interests=[], persona_id=None)
            .execution_options(synchronize_session=False)
        )
        # The vector made of their questions, and so the interest segments built on it.
        session.execute(
            delete(PatronInterest)
            .where(PatronInterest.patron_id == patron_id)
            .execution_options(synchronize_session=False)
        )
        rule_segments = select(Segment.id).where(Segment.definition.is_not(None)).scalar_subquery()
        session.execute(
            delete(SegmentMembership)
            .where(SegmentMembership.patron_id == patron_id, SegmentMembership.segment_id.in_(rule_segments))
            .execution_options(synchronize_session=False)
        )
    return int(getattr(result, "rowcount", 0) or 0)
