"""The campaign scheduler: the leader lease, one leader among several schedulers, runs made once at
their time, runs missed while no scheduler ran, one job per campaign, and `patronbot scheduler`."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    CampaignRun,
    Delivery,
    Patron,
    SchedulerLease,
    Segment,
    SegmentMembership,
    utcnow,
)
from bot.outreach.lease import Lease, make_holder
from bot.outreach.runs import occasion_of
from bot.outreach.scheduler import JOB_TABLE, CampaignScheduler

# Generous bounds for things that happen in a second or two: only a stuck test waits this long.
PATIENCE = 30.0


def wait_until(condition: Callable[[], bool], *, timeout: float = PATIENCE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# The lease


def expire(engine: Engine) -> None:
    """Make the lease's time run out (as if its holder had stopped renewing it long ago)."""
    with session_scope(engine) as session:
        session.execute(update(SchedulerLease).values(expires_at=utcnow() - dt.timedelta(seconds=1)))


def lease_holder(engine: Engine) -> str | None:
    with session_scope(engine) as session:
        holder = session.scalar(select(SchedulerLease.holder))
    return str(holder) if holder is not None else None


def test_the_lease_is_held_renewed_expired_and_taken_over(crm: Engine) -> None:
    first = Lease(engine=crm, holder="host:1:a", ttl=20)
    second = Lease(engine=crm, holder="host:2:b", ttl=20)

    assert first.acquire()
    assert first.acquire()  # already ours
    assert not second.acquire()
    assert first.renew()
    assert not second.renew()  # not ours
    assert first.held()
    assert not second.held()
    assert lease_holder(crm) == "host:1:a"

    expire(crm)
    assert not first.renew()  # expired: not renewed, even by its holder
    assert not first.held()
    assert second.acquire()
    assert not first.acquire()
    assert lease_holder(crm) == "host:2:b"

    first.release()  # not its lease: nothing happens
    assert lease_holder(crm) == "host:2:b"
    second.release()
    assert lease_holder(crm) is None
    assert first.acquire()


@pytest.mark.parametrize("expired", [False, True], ids=["no-lease-yet", "expired-lease"])
def test_holders_racing_for_the_lease_leave_one_winner(crm: Engine, expired: bool) -> None:
    if expired:
        assert Lease(engine=crm, holder="dead:0:0").acquire()
        expire(crm)
    leases = [Lease(engine=crm, holder=f"host:{n}:x", ttl=20) for n in range(6)]
    start = threading.Barrier(len(leases))
    won: list[str] = []

    def race(lease: Lease) -> None:
        start.wait()
        if lease.acquire():
            won.append(lease.holder)

    threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert lease_holder(crm) == won[0]


def test_holder_ids_name_the_host_and_process() -> None:
    host, pid, random = make_holder().split(":")
    assert pid == str(os.getpid())
    assert host
    assert random
    assert make_holder() != make_holder()


# Campaigns to schedule


def audience(session: Session, size: int = 3) -> int:
    """A hand-made segment of `size` patrons (start_run keeps a hand-made segment as it is)."""
    segment = Segment(name=f"segment-{utcnow().timestamp()}", definition=None)
    session.add(segment)
    session.flush()
    for _ in range(size):
        patron = Patron(display_name="p", language="en")
        session.add(patron)
        session.flush()
        session.add(SegmentMembership(segment_id=segment.id, patron_id=patron.id))
    return int(segment.id)


def campaign(engine: Engine, schedule: dict[str, object], *, at: dt.datetime | None = None) -> int:
    with session_scope(engine) as session:
        row = Campaign(
            name=f"campaign-{utcnow().timestamp()}",
            segment_id=audience(session),
            message={"en": "Hello {display_name}"},
            schedule=schedule,
            scheduled_at=at,
            status="scheduled",
        )
        session.add(row)
        session.flush()
        return int(row.id)


def at_campaign(engine: Engine, at: dt.datetime) -> int:
    return campaign(engine, {"at": at.isoformat()}, at=at)


def runs(engine: Engine, campaign_id: int) -> list[tuple[str, str, int]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(CampaignRun.occasion, CampaignRun.status, CampaignRun.filled).where(
                CampaignRun.campaign_id == campaign_id
            )
        ).all()
    return [(row[0], row[1], row[2]) for row in rows]


def delivery_count(engine: Engine, campaign_id: int) -> int:
    with session_scope(engine) as session:
        count = session.scalar(
            select(func.count()).select_from(Delivery).where(Delivery.campaign_id == campaign_id)
        )
    return int(count or 0)


def stored_jobs(engine: Engine) -> dict[str, str]:
    """The job store's rows: {job id: job name}, read from APScheduler's own table."""
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id, job_state FROM {JOB_TABLE}")).all()
    return {row[0]: pickle.loads(row[1])["name"] for row in rows}


@pytest.fixture
def schedulers(crm: Engine, crm_url: str) -> Iterator[Callable[..., CampaignScheduler]]:
    """Makes schedulers on the test's CRM, closed at the end of the test."""
    made: list[CampaignScheduler] = []

    def make(**options: float) -> CampaignScheduler:
        scheduler = CampaignScheduler(engine=crm, database_url=crm_url, **options)  # type: ignore[arg-type]
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.close()


# Leaders and standbys


def test_one_leader_takes_over_from_a_dead_one_and_a_run_is_made_once(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    ttl, check = 2.0, 0.5
    pair = [schedulers(lease_ttl=ttl, check_every=check) for _ in range(2)]
    stops = [threading.Event() for _ in pair]
    threads = [threading.Thread(target=s.run, args=(stop,)) for s, stop in zip(pair, stops, strict=True)]
    both_led = threading.Event()
    watching = threading.Event()

    def watch() -> None:  # samples, all along, whether both were leaders at once
        while not watching.is_set():
            if all(s.leader for s in pair):
                both_led.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in threads:
        thread.start()
    try:
        assert wait_until(lambda: any(s.leader for s in pair))
        due = utcnow().replace(microsecond=0) + dt.timedelta(seconds=2)
        campaign_id = at_campaign(crm, due)
        assert wait_until(lambda: [status for _, status, _ in runs(crm, campaign_id)] == ["filled"])

        # The leader dies: it stops renewing and leaves its lease to expire.
        dead = next(n for n, s in enumerate(pair) if s.leader)
        other = pair[1 - dead]
        pair[dead].lease.release = lambda: None  # type: ignore[method-assign]
        stops[dead].set()
        threads[dead].join()
        assert not other.leader
        assert lease_holder(crm) == pair[dead].holder
        assert wait_until(lambda: other.leader, timeout=ttl + check + 5)
        assert lease_holder(crm) == other.holder
        # The new leader has brought the jobs in step: the one-off campaign, already run, has none.
        assert "triggers" in other.jobs()
        assert f"campaign:{campaign_id}" not in stored_jobs(crm)
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join()
        watching.set()
        watcher.join()
    assert not both_led.is_set()
    assert runs(crm, campaign_id) == [(occasion_of(due), "filled", 3)]
    assert delivery_count(crm, campaign_id) == 3
    assert lease_holder(crm) is None  # the survivor gave its lease up when stopped


def test_a_leader_that_loses_its_lease_stops_its_jobs_at_once(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    scheduler = schedulers(lease_ttl=20, check_every=5)
    scheduler.step()
    assert scheduler.leader
    expire(crm)
    assert Lease(engine=crm, holder="usurper:1:x").acquire()
    scheduler.step()
    assert not scheduler.leader
    assert scheduler.jobs() == {}  # APScheduler stopped
    assert lease_holder(crm) == "usurper:1:x"


# Runs due while no scheduler ran


def test_a_run_due_while_no_scheduler_ran_is_made_once_within_grace(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    due = utcnow().replace(microsecond=0) - dt.timedelta(minutes=10)
    campaign_id = at_campaign(crm, due)
    scheduler = schedulers(grace=3600)
    scheduler.step()
    assert wait_until(lambda: [status for _, status, _ in runs(crm, campaign_id)] == ["filled"])
    scheduler.step()  # and again: the run made, its job is not added back
    scheduler.step()
    assert f"campaign:{campaign_id}" not in stored_jobs(crm)
    assert runs(crm, campaign_id) == [(occasion_of(due), "filled", 3)]
    assert delivery_count(crm, campaign_id) == 3


def test_a_run_due_longer_ago_than_the_grace_is_marked_missed(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    due = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
    campaign_id = at_campaign(crm, due)
    scheduler = schedulers(grace=3600)
    scheduler.step()
    assert wait_until(lambda: bool(runs(crm, campaign_id)))
    scheduler.step()
    scheduler.step()
    assert runs(crm, campaign_id) == [(occasion_of(due), "missed", 0)]
    assert delivery_count(crm, campaign_id) == 0
    assert f"campaign:{campaign_id}" not in stored_jobs(crm)


def minute(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


def test_cron_occasions_missed_while_down_run_once_for_the_latest(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    campaign_id = campaign(crm, {"cron": "* * * * *", "timezone": "UTC"})
    first = schedulers(grace=3600)
    first.step()
    first.close()  # the scheduler goes down with the campaign's job in the store
    # ... and stays down for three of its occasions: the stored job is still waiting for the first.
    down_since = minute(utcnow()) - dt.timedelta(minutes=3)
    job_id = f"campaign:{campaign_id}"
    with session_scope(crm) as session:
        state = pickle.loads(
            session.execute(
                text(f"SELECT job_state FROM {JOB_TABLE} WHERE id = :id"), {"id": job_id}
            ).scalar_one()
        )
        state["next_run_time"] = down_since
        session.execute(
            text(f"UPDATE {JOB_TABLE} SET job_state = :state, next_run_time = :at WHERE id = :id"),
            {"state": pickle.dumps(state), "at": down_since.timestamp(), "id": job_id},
        )

    before = minute(utcnow())
    second = schedulers(grace=3600)
    second.step()
    assert wait_until(lambda: any(status == "filled" for _, status, _ in runs(crm, campaign_id)))
    second.close()
    after = minute(utcnow())
    made = runs(crm, campaign_id)
    occasions = sorted(occasion for occasion, _, _ in made)
    # Coalesced: one run, for the latest occasion (its scheduled time, not the clock when it ran);
    # the three before it are not made one by one. A later run only if a minute turned meanwhile.
    assert occasions[0] in {occasion_of(before), occasion_of(after)}
    assert occasion_of(down_since) not in occasions
    assert len(occasions) == len(set(occasions)) <= 2


# Jobs in step with the campaigns


def test_a_cron_campaign_has_one_job_replaced_when_changed_and_removed_when_paused(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    campaign_id = campaign(crm, {"cron": "0 9 * * MON", "timezone": "Asia/Shanghai"})
    scheduler = schedulers()
    scheduler.step()
    jobs = stored_jobs(crm)
    # One job for the campaign (its segment holds 3 patrons), the triggered follow-ups' and the
    # interest vectors' jobs.
    assert sorted(jobs) == [f"campaign:{campaign_id}", "interests", "triggers"]
    first_name = jobs[f"campaign:{campaign_id}"]
    fires = scheduler.jobs()[f"campaign:{campaign_id}"]
    assert fires is not None
    assert (fires.weekday(), fires.hour, fires.minute) == (0, 1, 0)  # Monday 09:00 in Shanghai, in UTC

    scheduler.step()  # nothing changed: the job is left alone
    assert stored_jobs(crm) == jobs

    with session_scope(crm) as session:
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id)
            .values(schedule={"cron": "30 18 * * FRI", "timezone": "Asia/Shanghai"}, updated_at=utcnow())
        )
    scheduler.step()
    jobs = stored_jobs(crm)
    assert sorted(jobs) == [f"campaign:{campaign_id}", "interests", "triggers"]
    assert jobs[f"campaign:{campaign_id}"] != first_name

    with session_scope(crm) as session:
        session.execute(update(Campaign).where(Campaign.id == campaign_id).values(status="paused"))
    scheduler.step()
    assert sorted(stored_jobs(crm)) == ["interests", "triggers"]


def test_triggered_and_draft_campaigns_have_no_campaign_job(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    with session_scope(crm) as session:
        session.add(
            Campaign(
                name="after-rating",
                message={"en": "Sorry"},
                schedule={"after": {"event": "low_rating", "days": 3}},
                trigger_event="low_rating",
                trigger_days=3,
                status="scheduled",
            )
        )
        session.add(
            Campaign(
                name="draft",
                message={"en": "Soon"},
                schedule={"cron": "0 9 * * MON", "timezone": "UTC"},
                status="draft",
            )
        )
    scheduler = schedulers()
    scheduler.step()
    assert sorted(stored_jobs(crm)) == ["interests", "triggers"]


def test_a_deleted_campaign_loses_its_job(crm: Engine, schedulers: Callable[..., CampaignScheduler]) -> None:
    campaign_id = campaign(crm, {"cron": "0 9 * * *", "timezone": "UTC"})
    scheduler = schedulers()
    scheduler.step()
    assert f"campaign:{campaign_id}" in stored_jobs(crm)
    with session_scope(crm) as session:
        session.execute(text("DELETE FROM campaign WHERE id = :id"), {"id": campaign_id})
    scheduler.step()
    assert sorted(stored_jobs(crm)) == ["interests", "triggers"]


def test_the_job_store_is_left_out_of_the_migrations_comparison(
    crm: Engine, schedulers: Callable[..., CampaignScheduler]
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from bot.crm.migrate import include_object
    from bot.crm.models import Base

    schedulers().step()  # APScheduler creates its table (and its index) in the CRM database
    assert "triggers" in stored_jobs(crm)
    with crm.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": include_object}
        )
        assert compare_metadata(context, Base.metadata) == []


# `patronbot scheduler`


def test_the_scheduler_command_leads_until_a_signal_and_gives_the_lease_up(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.cli.scheduler import add_commands
    from bot.settings import load_settings

    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    parser = argparse.ArgumentParser(prog="patronbot")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scheduler"])
    previous = signal.getsignal(signal.SIGTERM)

    led: list[bool] = []

    def stop_once_leading() -> None:
        led.append(wait_until(lambda: lease_holder(crm) is not None))
        os.kill(os.getpid(), signal.SIGTERM)  # stops it either way, so a failure cannot hang the test

    stopper = threading.Thread(target=stop_once_leading)
    stopper.start()
    try:
        assert args.handler(load_settings(), args) == 0
    finally:
        stopper.join()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert led == [True]
    assert lease_holder(crm) is None
