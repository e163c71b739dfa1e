"""Two real `patronbot scheduler` processes on one CRM: one leads, the other stands by; the leader is
SIGKILLed before a campaign's time, the standby takes over within 30 s (the lease's 20 s time to live
and its 5 s checks), and each campaign run is made once: one campaign_run row, one delivery per
patron, one outbox message per delivery (both processes' releasers hand deliveries to the outbox).

tests/test_scheduler.py proves the same hand-over with schedulers in threads; this one kills a process.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    CampaignRun,
    Delivery,
    Feedback,
    OutboxMessage,
    SchedulerLease,
    SegmentMembership,
    utcnow,
)
from bot.outreach.scheduler import JOB_TABLE
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.mass_campaign import TOKEN, Processes, make_audience, make_campaign, patronbot_env, wait_until

PATRONS = 40
LOW_RATINGS = 10
# The bound on a take-over; the lease's own is 20 s + 5 s.
TAKE_OVER = 30.0


def stored_jobs(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(row[0]) for row in connection.execute(text(f"SELECT id FROM {JOB_TABLE}"))}


def lease_holder(engine: Engine) -> str | None:
    with session_scope(engine) as session:
        holder = session.scalar(select(SchedulerLease.holder))
    return str(holder) if holder is not None else None


def triggered_campaign(engine: Engine, segment_id: int) -> int:
    """A follow-up sent as soon as a patron gives a low rating (0 days after it)."""
    with session_scope(engine) as session:
        campaign = Campaign(
            name="sorry-to-hear",
            segment_id=segment_id,
            purpose="follow_up",
            message={"en": "Sorry to hear that, {display_name}.", "zh": "{display_name}，抱歉。"},
            trigger_event="low_rating",
            trigger_days=0,
            status="scheduled",
            created_at=utcnow() - dt.timedelta(minutes=1),
        )
        session.add(campaign)
        session.flush()
        return int(campaign.id)


def rate_low(engine: Engine, segment_first: int, count: int) -> None:
    with session_scope(engine) as session:
        for patron_id in range(segment_first, segment_first + count):
            session.add(Feedback(patron_id=patron_id, csat=1, created_at=utcnow()))


def counts(engine: Engine, campaign_id: int) -> tuple[int, int, int, int]:
    """(runs, deliveries, patrons with a delivery, outbox messages) of a campaign."""
    with session_scope(engine) as session:
        runs = session.scalar(select(func.count()).where(CampaignRun.campaign_id == campaign_id))
        deliveries, patrons = session.execute(
            select(func.count(), func.count(func.distinct(Delivery.patron_id))).where(
                Delivery.campaign_id == campaign_id
            )
        ).one()
        outbox = session.scalar(
            select(func.count()).where(OutboxMessage.produced_by == f"campaign:{campaign_id}")
        )
    return int(runs or 0), int(deliveries), int(patrons), int(outbox or 0)


def test_the_standby_takes_over_from_a_killed_leader_and_each_run_is_made_once(
    crm: Engine, crm_url: str, tmp_path: Path
) -> None:
    segment_id = make_audience(crm, patrons=PATRONS, name="two")
    follow_up = triggered_campaign(crm, segment_id)
    with FakeTelegramAPI(token=TOKEN) as api:  # no sender runs: the outbox only fills
        processes = Processes(
            env=patronbot_env(crm_url=crm_url, api_url=api.url, rate=29.6, workdir=tmp_path),
            workdir=tmp_path,
        )
        try:
            leader = processes.start("scheduler-a", "scheduler")
            assert wait_until(lambda: f":{leader.pid}:" in (lease_holder(crm) or ""), timeout=60), (
                processes.output()
            )
            standby = processes.start("scheduler-b", "scheduler")
            due = utcnow().replace(microsecond=0) + dt.timedelta(seconds=15)
            announcement = make_campaign(
                crm, segment_id=segment_id, name="at", schedule={"at": due.isoformat()}
            )
            rate_low(crm, _first_patron(crm, segment_id), LOW_RATINGS)
            # The leader has stored the campaign's job; its time has not come when the leader dies.
            assert wait_until(lambda: f"campaign:{announcement}" in stored_jobs(crm), timeout=10)
            assert utcnow() < due
            processes.kill("scheduler-a")
            killed_at = time.monotonic()
            took_over = wait_until(
                lambda: f":{standby.pid}:" in (lease_holder(crm) or ""), timeout=TAKE_OVER + 5
            )
            taken_after = time.monotonic() - killed_at
            assert took_over, processes.output()
            assert taken_after <= TAKE_OVER + 1  # wait_until polls: a second of slack
            processes.start("scheduler-a", "scheduler")  # back, as a standby now
            assert wait_until(lambda: counts(crm, announcement)[3] == PATRONS, timeout=60), processes.output()
            assert wait_until(lambda: counts(crm, follow_up)[3] == LOW_RATINGS, timeout=60), (
                processes.output()
            )
            time.sleep(3)  # both releasers and the new leader's triggers job look again: nothing more
        finally:
            processes.stop_all()

    assert counts(crm, announcement) == (1, PATRONS, PATRONS, PATRONS)
    with session_scope(crm) as session:
        run = session.execute(select(CampaignRun.status, CampaignRun.filled)).one()
    assert tuple(run) == ("filled", PATRONS)
    # A triggered follow-up makes no campaign_run: one delivery and one message per low rating.
    assert counts(crm, follow_up) == (0, LOW_RATINGS, LOW_RATINGS, LOW_RATINGS)


def _first_patron(engine: Engine, segment_id: int) -> int:
    with session_scope(engine) as session:
        return int(
            session.scalar(
                select(func.min(SegmentMembership.patron_id)).where(
                    SegmentMembership.segment_id == segment_id
                )
            )
        )
