"""Campaign runs: each occasion of a campaign made once, filling the delivery outbox in one SQL statement."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    CampaignRun,
    Delivery,
    OutboxMessage,
    SegmentMembership,
    UTCDateTime,
    utcnow,
)

log = logging.getLogger(__name__)

# A campaign in one of these states makes runs; a paused, cancelled or finished one does not.
ACTIVE = ("draft", "scheduled", "running")


def occasion_of(due_at: dt.datetime) -> str:
    """A run's occasion for its due time: the time in UTC, to the second, ISO 8601."""
    return due_at.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def recurring(campaign: Campaign) -> bool:
    """Whether the campaign sends again on later occasions (a cron schedule)."""
    schedule = campaign.schedule
    return isinstance(schedule, dict) and "cron" in schedule


def _insert_ignoring_duplicates(session: Session) -> Any:
    """An INSERT into delivery that skips rows already there (the same campaign, patron and occasion)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(Delivery.__table__).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(Delivery.__table__).on_conflict_do_nothing()
    return insert(Delivery.__table__).prefix_with("IGNORE")


def _new_run(
    *, engine: Engine, campaign_id: int, due_at: dt.datetime, occasion: str, status: str
) -> int | None:
    """The run's row, made once: None when the occasion already has one (another process made it)."""
    try:
        with session_scope(engine) as session:
            run = CampaignRun(
                campaign_id=campaign_id, occasion=occasion, due_at=due_at, status=status, started_at=utcnow()
            )
            session.add(run)
            session.flush()
            return int(run.id)
    except IntegrityError:
        return None


def start_run(
    *, engine: Engine, campaign_id: int, due_at: dt.datetime, occasion: str | None = None
) -> int | None:
    """Make the campaign's run for `occasion` (default: due_at as ISO UTC) once: refresh its segment,
    insert one pending delivery per member (INSERT ... SELECT, duplicates ignored), mark the run filled.

    Returns the run id, or None when this occasion already had a run or the campaign is not active
    (paused, cancelled, done). Safe to call twice or from two processes: the run is made once. A patron
    gets a one-off campaign once, however often it is run; a cron campaign once per occasion.
    """
    occasion = occasion or occasion_of(due_at)
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status not in ACTIVE or campaign.segment_id is None:
            return None
        segment_id, again = int(campaign.segment_id), recurring(campaign)
    run_id = _new_run(
        engine=engine, campaign_id=campaign_id, due_at=due_at, occasion=occasion, status="filling"
    )
    if run_id is None:
        return None
    from bot.outreach.segments import refresh_membership  # segments load encoders: only when a run is made

    refresh_membership(engine=engine, segment_id=segment_id)
    now = utcnow()
    with session_scope(engine) as session:
        members = select(
            literal(campaign_id),
            literal(run_id),
            literal(occasion if again else ""),
            SegmentMembership.patron_id,
            literal("pending"),
            literal(0),
            literal(due_at, UTCDateTime()),
            literal(now, UTCDateTime()),
        ).where(SegmentMembership.segment_id == segment_id)
        columns = [
            "campaign_id",
            "run_id",
            "occasion",
            "patron_id",
            "state",
            "attempts",
            "scheduled_at",
            "created_at",
        ]
        result = session.execute(_insert_ignoring_duplicates(session).from_select(columns, members))
        filled = int(result.rowcount or 0)  # type: ignore[attr-defined]
        session.execute(
            update(CampaignRun)
            .where(CampaignRun.id == run_id)
            .values(status="filled", filled=filled, finished_at=utcnow())
        )
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status.in_(("draft", "scheduled")))
            .values(status="running")
        )
    log.info("campaign %s: run %s for %s filled %s deliveries", campaign_id, run_id, occasion, filled)
    return run_id


def mark_missed(
    *, engine: Engine, campaign_id: int, due_at: dt.datetime, occasion: str | None = None
) -> bool:
    """Record the occasion as missed (a CampaignRun with status 'missed'), unless it already has a run."""
    made = _new_run(
        engine=engine,
        campaign_id=campaign_id,
        due_at=due_at,
        occasion=occasion or occasion_of(due_at),
        status="missed",
    )
    if made is not None:
        log.warning("campaign %s: the run due %s was missed (past its grace period)", campaign_id, due_at)
    return made is not None


def add_deliveries(
    *, session: Session, campaign_id: int, wanted: Iterable[tuple[int, str, dt.datetime]]
) -> int:
    """Insert pending deliveries (patron_id, occasion, scheduled_at) for a triggered campaign, ignoring
    ones that exist (unique campaign, patron, occasion); returns how many were new."""
    now = utcnow()
    rows = [
        {
            "campaign_id": campaign_id,
            "patron_id": patron_id,
            "occasion": occasion,
            "state": "pending",
            "attempts": 0,
            "scheduled_at": scheduled_at,
            "created_at": now,
        }
        for patron_id, occasion, scheduled_at in wanted
    ]
    if not rows:
        return 0
    before = _count(session, campaign_id)
    session.execute(_insert_ignoring_duplicates(session), rows)
    return _count(session, campaign_id) - before


def _count(session: Session, campaign_id: int) -> int:
    query = select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id)
    return int(session.execute(query).scalar_one())


def finish_campaigns(*, engine: Engine) -> list[int]:
    """Mark `done` each running one-off campaign (no cron schedule, no trigger) with nothing left to send:
    none of its deliveries waits to be checked (pending, the morning's included) or to go out (queued
    with its outbox message still pending). Returns their ids. A recurring or triggered campaign runs
    until it is cancelled."""
    with session_scope(engine) as session:
        candidates = session.scalars(
            select(Campaign).where(Campaign.status == "running", Campaign.trigger_event.is_(None))
        ).all()
        finished: list[int] = []
        for campaign in candidates:
            if recurring(campaign):
                continue
            unsent = session.execute(
                select(func.count())
                .select_from(Delivery)
                .outerjoin(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
                .where(
                    Delivery.campaign_id == campaign.id,
                    (Delivery.state == "pending")
                    | ((Delivery.state == "queued") & (OutboxMessage.status == "pending")),
                )
            ).scalar_one()
            if unsent:
                continue
            # Conditional: a pause or cancel that came meanwhile wins.
            changed = session.execute(
                update(Campaign)
                .where(Campaign.id == campaign.id, Campaign.status == "running")
                .values(status="done")
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                finished.append(int(campaign.id))
    for campaign_id in finished:
        log.info("campaign %s: everything sent or settled; done", campaign_id)
    return finished
