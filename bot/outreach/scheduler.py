"""The campaign scheduler: APScheduler 3 with its job store in the CRM, run only by the lease's holder."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.crm.database import describe_error, session_scope
from bot.crm.models import Campaign, CampaignRun
from bot.knowledge.encoders import MultilingualEncoder
from bot.outreach.interests import refresh_interests
from bot.outreach.lease import DEFAULT_NAME, Lease, make_holder
from bot.outreach.runs import mark_missed, occasion_of, start_run
from bot.outreach.triggers import fill_triggered

# APScheduler 3.9 imports pkg_resources, which warns on import; the warning says nothing to an operator.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED  # type: ignore[import-untyped]
    from apscheduler.executors.base import run_job  # type: ignore[import-untyped]
    from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
    from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.date import DateTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

JOB_TABLE = "apscheduler_jobs"
# How late a run may start and still be made (the default of PATRONBOT_CAMPAIGN_GRACE_SECONDS); a run
# later than this is recorded as missed.
GRACE_SECONDS = 3600.0
TRIGGERS_EVERY = 60.0
# Campaigns that have jobs: a paused, cancelled, finished or draft one has none.
SCHEDULED_STATUSES = ("scheduled", "running")
CAMPAIGN_JOB = "campaign:"
TRIGGERS_JOB = "triggers"
INTERESTS_JOB = "interests"
# How often patrons' interest vectors take in their new questions (for segments' interest_like).
INTERESTS_EVERY = 600.0

# The time the run being executed was scheduled for, set by _OccasionExecutor around each run.
_SCHEDULED_FOR: ContextVar[dt.datetime | None] = ContextVar("scheduled_for", default=None)
# The job functions' engines, by job store. A job is pickled into the store with a key, not the URL,
# so that no database password is written into the database.
_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def store_key(database_url: str) -> str:
    """A job store's name in its jobs: a digest of the database URL."""
    return hashlib.sha256(database_url.encode()).hexdigest()[:16]


def _engine_for(store: str) -> Engine:
    with _ENGINES_LOCK:
        engine = _ENGINES.get(store)
    if engine is None:
        raise LookupError(f"job store {store} has no CampaignScheduler in this process")
    return engine


def scheduled_for() -> dt.datetime:
    """The time the job being run was scheduled for (UTC), inside a job run by CampaignScheduler."""
    when = _SCHEDULED_FOR.get()
    if when is None:
        raise RuntimeError("not inside a job run by CampaignScheduler")
    return when.astimezone(dt.UTC)


def run_campaign_job(campaign_id: int, store: str) -> None:
    """The job of a campaign with a time or cron schedule: make its run for the time it was due.

    The occasion is the scheduled fire time, not the clock when the job runs, so a run fired twice
    (by two leaders in a hand-over, or a retry) is made once by start_run."""
    due_at = scheduled_for()
    run_id = start_run(engine=_engine_for(store), campaign_id=campaign_id, due_at=due_at)
    if run_id is None:
        log.info("campaign %s: no run made for %s (made before, or not active)", campaign_id, due_at)


def fill_triggers_job(store: str) -> None:
    """The job that adds triggered follow-ups (N days after an event) every TRIGGERS_EVERY seconds."""
    fill_triggered(engine=_engine_for(store))


def refresh_interests_job(store: str) -> None:
    """The job that brings patrons' interest vectors up to date with their new questions."""
    encoded = refresh_interests(engine=_engine_for(store), encoder=_encoder(MultilingualEncoder))
    if encoded:
        log.info("interests: %s new texts taken into patrons' interest vectors", encoded)


_ENCODERS: dict[type, Any] = {}


def _encoder(kind: type) -> Any:
    """One encoder of a kind per process: the model is loaded once."""
    if kind not in _ENCODERS:
        _ENCODERS[kind] = kind()
    return _ENCODERS[kind]


def _run_at_scheduled_times(job: Any, jobstore_alias: str, run_times: list[dt.datetime], logger: str) -> Any:
    events = []
    for run_time in run_times:
        token = _SCHEDULED_FOR.set(run_time)
        try:
            events.extend(run_job(job, jobstore_alias, [run_time], logger))
        finally:
            _SCHEDULED_FOR.reset(token)
    return events


class _OccasionExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """A thread pool that tells each job the time it was scheduled for.

    APScheduler 3 calls a job's function without its scheduled run time, and a campaign run's
    occasion must be that time. The alternatives are unsound: EVENT_JOB_SUBMITTED is dispatched after
    the job has been handed to the pool, so it races the job; the latest fire time before "now"
    changes if the job starts late. An executor is APScheduler's documented extension point
    (`_do_submit_job`), and the scheduler hands it exactly the run times (one, with coalesce). The
    misfire check stays APScheduler's own run_job, run for one time at a time."""

    def _do_submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
        def done(future: Any) -> None:
            error = future.exception()
            if error is not None:
                self._run_job_error(job.id, error, error.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        submitted = self._pool.submit(
            _run_at_scheduled_times, job, job._jobstore_alias, run_times, self._logger.name
        )
        submitted.add_done_callback(done)


def _fingerprint(schedule: Mapping[str, Any], timezone: str) -> str:
    canonical = json.dumps({"schedule": schedule, "timezone": timezone}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


class CampaignScheduler:
    """One process's scheduler: standby until it holds the lease, then leader running APScheduler.

    Exactly one scheduler per job store is active: standbys try the lease every `check_every` s; the
    leader renews it as often and, once a renewal fails, shuts APScheduler down at once and stands by.
    A standby takes over at most `lease_ttl` + `check_every` s after the leader died. Should a stalled
    leader wake up after its lease passed to another, the job it may still fire is harmless: a run is
    made once per occasion (start_run)."""

    def __init__(
        self,
        *,
        engine: Engine,
        database_url: str,
        holder: str | None = None,
        lease_ttl: float = 20.0,
        check_every: float = 5.0,
        grace: float = GRACE_SECONDS,
        timezone: str = "UTC",
        triggers_every: float = TRIGGERS_EVERY,
        lease_name: str = DEFAULT_NAME,
    ) -> None:
        if check_every >= lease_ttl:
            raise ValueError("the lease must live longer than the time between its renewals")
        self.engine = engine
        self.database_url = database_url
        self.lease = Lease(engine=engine, name=lease_name, holder=holder or make_holder(), ttl=lease_ttl)
        self.check_every = check_every
        self.grace = grace
        self.timezone = timezone  # for a cron schedule that names no zone
        self.triggers_every = triggers_every
        self.store = store_key(database_url)
        self._scheduler: Any = None
        # `at` jobs this leader added: once APScheduler has fired one it removes it, and it must not
        # be added again while its run is being made.
        self._added: set[str] = set()
        with _ENGINES_LOCK:
            _ENGINES[self.store] = engine

    @property
    def holder(self) -> str:
        return self.lease.holder

    @property
    def leader(self) -> bool:
        """Whether this scheduler runs the jobs now (APScheduler started, and the lease its own)."""
        return self._scheduler is not None and self.lease.held()

    def jobs(self) -> dict[str, dt.datetime | None]:
        """The jobs this scheduler runs and when each fires next (UTC); none while standing by."""
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        return {
            str(job.id): job.next_run_time.astimezone(dt.UTC) if job.next_run_time else None
            for job in scheduler.get_jobs()
        }

    def run(self, stop: threading.Event) -> None:
        """Lead or stand by until `stop` is set; then stop APScheduler and give the lease up."""
        log.info("campaign scheduler %s: standing by for the lease", self.holder)
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.check_every)
        finally:
            self.close()

    def close(self) -> None:
        """Stop APScheduler (when leading) and give the lease up, so a standby takes over at once."""
        self._stand_by(stopping=True)
        try:
            self.lease.release()
        except SQLAlchemyError as error:
            log.warning("could not release the scheduler lease: %s", self._describe(error))
        log.info("campaign scheduler %s stopped", self.holder)

    def step(self) -> None:
        """One check: take or renew the lease, start or stop APScheduler, and bring the jobs in step."""
        try:
            held = self.lease.renew() if self._scheduler is not None else self.lease.acquire()
        except SQLAlchemyError as error:
            log.error("campaign scheduler: the lease cannot be checked: %s", self._describe(error))
            held = False
        if not held:
            if self._scheduler is not None:
                log.warning("campaign scheduler %s lost the lease: standing by", self.holder)
                self._stand_by()
            return
        try:
            if self._scheduler is None:
                self._lead()
            else:
                self.sync_jobs()
        except SQLAlchemyError as error:
            log.error("campaign scheduler: the jobs cannot be updated: %s", self._describe(error))

    def _describe(self, error: SQLAlchemyError) -> str:
        return describe_error(error, self.database_url)

    def _lead(self) -> None:
        options: dict[str, Any] = {}
        if make_url(self.database_url).get_backend_name() == "sqlite":
            options["connect_args"] = {"timeout": 30}  # wait for a run's long write, as the CRM does
        scheduler = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(
                    url=self.database_url, tablename=JOB_TABLE, engine_options=options
                )
            },
            executors={"default": _OccasionExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": self.grace},
            timezone="UTC",
        )
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)
        # Paused until the jobs are in step with the campaigns: a campaign changed while no scheduler
        # ran is not fired from its stale job first.
        scheduler.start(paused=True)
        self._added.clear()
        try:
            scheduler.add_job(
                fill_triggers_job,
                IntervalTrigger(seconds=self.triggers_every),
                args=[self.store],
                id=TRIGGERS_JOB,
                name=TRIGGERS_JOB,
                replace_existing=True,
                # at once on taking the lead: follow-ups due during a hand-over wait no longer
                next_run_time=dt.datetime.now(dt.UTC),
            )
            scheduler.add_job(
                refresh_interests_job,
                IntervalTrigger(seconds=INTERESTS_EVERY),
                args=[self.store],
                id=INTERESTS_JOB,
                name=INTERESTS_JOB,
                replace_existing=True,
            )
            self._sync(scheduler)
        except BaseException:
            scheduler.shutdown(wait=False)
            raise
        scheduler.resume()
        self._scheduler = scheduler  # leader from here on: its jobs are in step with the campaigns
        log.info("campaign scheduler %s is the leader", self.holder)

    def _stand_by(self, *, stopping: bool = False) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=False)
            if not stopping:
                log.info("campaign scheduler %s is standing by", self.holder)

    def _on_missed(self, event: Any) -> None:
        if not str(event.job_id).startswith(CAMPAIGN_JOB):
            return
        campaign_id = int(str(event.job_id).removeprefix(CAMPAIGN_JOB))
        mark_missed(
            engine=self.engine, campaign_id=campaign_id, due_at=event.scheduled_run_time.astimezone(dt.UTC)
        )

    def _on_error(self, event: Any) -> None:
        # APScheduler has logged the traceback; this says which campaign's occasion was lost.
        log.error("job %s scheduled for %s failed", event.job_id, event.scheduled_run_time)

    def sync_jobs(self) -> None:
        """One job per campaign with a time or cron schedule that is scheduled or running: added when
        missing, replaced when its schedule changed, removed when the campaign is not."""
        if self._scheduler is not None:
            self._sync(self._scheduler)

    def _sync(self, scheduler: Any) -> None:
        wanted = self._wanted()
        present = {job.id: job for job in scheduler.get_jobs() if str(job.id).startswith(CAMPAIGN_JOB)}
        for job_id, job in present.items():
            if job_id not in wanted:
                self._added.discard(job.name)
                with contextlib.suppress(JobLookupError):  # it fired its last time meanwhile
                    scheduler.remove_job(job_id)
        for job_id, (name, campaign_id, trigger) in wanted.items():
            job = present.get(job_id)
            if job is not None and job.name == name:
                continue
            if job is None and name in self._added:
                continue  # an `at` job that fired: its run is being made
            scheduler.add_job(
                run_campaign_job,
                trigger,
                args=[campaign_id, self.store],
                id=job_id,
                name=name,
                replace_existing=True,
            )
            self._added.add(name)

    def _wanted(self) -> dict[str, tuple[str, int, Any]]:
        """The jobs the campaigns call for: {job id: (name with schedule fingerprint, campaign, trigger)}."""
        with session_scope(self.engine) as session:
            campaigns = session.execute(
                select(Campaign.id, Campaign.schedule).where(
                    Campaign.status.in_(SCHEDULED_STATUSES), Campaign.trigger_event.is_(None)
                )
            ).all()
            made = set(
                session.execute(
                    select(CampaignRun.campaign_id, CampaignRun.occasion).where(
                        CampaignRun.campaign_id.in_([row.id for row in campaigns])
                    )
                ).all()
            )
        wanted: dict[str, tuple[str, int, Any]] = {}
        for campaign_id, schedule in campaigns:
            if not isinstance(schedule, Mapping):
                continue
            try:
                trigger, at = self._trigger(schedule)
            except (ValueError, TypeError, LookupError) as error:
                log.warning("campaign %s: its schedule cannot be used (%s)", campaign_id, error)
                continue
            if trigger is None:
                continue
            if at is not None and (campaign_id, occasion_of(at)) in made:
                continue  # its one run has been made (or marked missed)
            fingerprint = _fingerprint(schedule, self.timezone)
            job_id = f"{CAMPAIGN_JOB}{campaign_id}"
            wanted[job_id] = (f"{job_id}:{fingerprint}", int(campaign_id), trigger)
        return wanted

    def _trigger(self, schedule: Mapping[str, Any]) -> tuple[Any, dt.datetime | None]:
        """APScheduler's trigger for a stored schedule, and the time of a one-off one."""
        if "at" in schedule:
            at = dt.datetime.fromisoformat(str(schedule["at"]))
            if at.tzinfo is None:
                raise ValueError("its time has no offset")
            return DateTrigger(run_date=at.astimezone(dt.UTC)), at.astimezone(dt.UTC)
        if "cron" in schedule:
            zone = str(schedule.get("timezone") or self.timezone)
            return CronTrigger.from_crontab(str(schedule["cron"]), timezone=zone), None
        return None, None
