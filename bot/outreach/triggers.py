"""Triggered follow-ups: the deliveries of campaigns sent N days after an event the CRM records."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import String, and_, cast, exists, func, literal, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    Conversation,
    Delivery,
    Escalation,
    Feedback,
    Segment,
    SegmentMembership,
    Suggestion,
    utcnow,
)
from bot.outreach.runs import add_deliveries

log = logging.getLogger(__name__)

# Campaigns whose triggered deliveries are still being made.
TRIGGERED_STATUSES = ("scheduled", "running")
# A rule-made segment older than this is recomputed before its triggered campaign uses it.
SEGMENT_FRESH_FOR = dt.timedelta(minutes=10)
# What counts as a low rating: the bottom two of CSAT's five, NPS's detractors.
LOW_CSAT, LOW_NPS = 2, 6


def fill_triggered(*, engine: Engine, now: dt.datetime | None = None, lookback_days: float = 7.0) -> int:
    """Add the pending deliveries of every active triggered campaign whose event happened its days ago.

    An event counts from the campaign's creation on, and only within `lookback_days` before it became
    due: a new campaign does not write to everyone who ever rated the library, and a scheduler that
    was down for a few days catches up. Each (campaign, patron, occasion) is made once, however often
    this runs. Returns how many deliveries were new."""
    now = now or utcnow()
    with session_scope(engine) as session:
        campaigns = session.execute(
            select(
                Campaign.id,
                Campaign.trigger_event,
                Campaign.trigger_days,
                Campaign.segment_id,
                Campaign.created_at,
            ).where(
                Campaign.status.in_(TRIGGERED_STATUSES),
                Campaign.trigger_event.is_not(None),
                Campaign.trigger_days.is_not(None),
            )
        ).all()
    made = 0
    for campaign_id, event, days, segment_id, created_at in campaigns:
        if event not in EVENTS:
            log.warning("campaign %s follows an unknown event %r: skipped", campaign_id, event)
            continue
        delay = dt.timedelta(days=float(days))
        upper = now - delay
        lower = max(created_at, upper - dt.timedelta(days=lookback_days))
        if lower > upper:
            continue  # the campaign is younger than its delay: nothing can be due yet
        if segment_id is not None:
            _refresh_if_stale(engine=engine, segment_id=segment_id)
        query = EVENTS[event](lower, upper)
        patron, occasion, _ = query.selected_columns
        query = query.where(~_delivered(campaign_id, patron, occasion))
        if segment_id is not None:
            members = select(SegmentMembership.patron_id).where(SegmentMembership.segment_id == segment_id)
            query = query.where(patron.in_(members))
        with session_scope(engine) as session:
            wanted = [(row[0], row[1], row[2] + delay) for row in session.execute(query)]
            if wanted:
                new = add_deliveries(session=session, campaign_id=campaign_id, wanted=wanted)
                made += new
                log.info("triggered campaign %s: %d follow-ups added (%s)", campaign_id, new, event)
    return made


def _delivered(campaign_id: int, patron: Any, occasion: Any) -> Any:
    # Rows already made are left out here rather than ignored on insert: the lookback window means
    # each event is seen again every minute for days.
    return exists().where(
        and_(
            Delivery.campaign_id == campaign_id,
            Delivery.patron_id == patron,
            Delivery.occasion == occasion,
        )
    )


def _occasion(prefix: str, id_column: Any) -> Any:
    """`prefix:<id>`, made by the database: 'low_rating:' || CAST(id AS VARCHAR)."""
    return (literal(f"{prefix}:", String) + cast(id_column, String)).label("occasion")


def _first_conversation(lower: dt.datetime, upper: dt.datetime) -> Select:
    # A patron's first conversation falls in the window when they have one in it and none before it.
    earlier = aliased(Conversation)
    return (
        select(
            Conversation.patron_id,
            literal("first_conversation", String).label("occasion"),
            func.min(Conversation.started_at).label("happened_at"),
        )
        .where(
            Conversation.started_at >= lower,
            Conversation.started_at <= upper,
            ~exists().where(and_(earlier.patron_id == Conversation.patron_id, earlier.started_at < lower)),
        )
        .group_by(Conversation.patron_id)
    )


def _low_rating(lower: dt.datetime, upper: dt.datetime) -> Select:
    return select(Feedback.patron_id, _occasion("low_rating", Feedback.id), Feedback.created_at).where(
        Feedback.patron_id.is_not(None),
        or_(Feedback.csat <= LOW_CSAT, Feedback.nps <= LOW_NPS),
        Feedback.created_at >= lower,
        Feedback.created_at <= upper,
    )


def _escalation_resolved(lower: dt.datetime, upper: dt.datetime) -> Select:
    return select(
        Escalation.patron_id, _occasion("escalation_resolved", Escalation.id), Escalation.resolved_at
    ).where(
        and_(
            Escalation.patron_id.is_not(None),
            Escalation.status == "resolved",
            Escalation.resolved_at >= lower,
            Escalation.resolved_at <= upper,
        )
    )


def _suggestion_answered(lower: dt.datetime, upper: dt.datetime) -> Select:
    return select(
        Suggestion.patron_id, _occasion("suggestion_answered", Suggestion.id), Suggestion.answered_at
    ).where(
        Suggestion.patron_id.is_not(None),
        Suggestion.answered_at >= lower,
        Suggestion.answered_at <= upper,
    )


# Each event as one query of (patron_id, occasion, when it happened) within a window.
EVENTS: dict[str, Callable[[dt.datetime, dt.datetime], Select]] = {
    "first_conversation": _first_conversation,
    "low_rating": _low_rating,
    "escalation_resolved": _escalation_resolved,
    "suggestion_answered": _suggestion_answered,
}


def _refresh_if_stale(*, engine: Engine, segment_id: int) -> None:
    """Recompute a rule-made segment's members when they are older than SEGMENT_FRESH_FOR."""
    with session_scope(engine) as session:
        segment = session.get(Segment, segment_id)
        if segment is None or segment.definition is None:
            return  # gone (the campaign's filter then finds nobody), or made by hand: nothing to compute
        if segment.refreshed_at is not None and utcnow() - segment.refreshed_at < SEGMENT_FRESH_FOR:
            return
    try:
        refresh: Callable[..., object] = importlib.import_module("bot.outreach.segments").refresh_membership
    except (ImportError, AttributeError):
        return  # segments are not computed by this build: the stored membership is used as it is
    try:
        refresh(engine=engine, segment_id=segment_id)
    except Exception:  # one broken segment must not stop every other follow-up
        log.exception("segment %s could not be refreshed; its stored members are used", segment_id)
