"""The campaign releaser's loop, and sending one campaign now in the foreground (`patronbot campaign run`)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import Delivery, OutboxMessage, utcnow
from bot.knowledge.facts import load_facts
from bot.outbound.dispatcher import Dispatcher
from bot.outreach.runs import finish_campaigns
from bot.outreach.sender import Released, SendRules, release_due
from bot.quiet_hours import QuietHours
from bot.redaction import describe_failure
from bot.settings import Settings

log = logging.getLogger(__name__)

# How often due deliveries are looked at.
EVERY = 1.0
# Deliveries checked in one transaction of the releaser: short ones, so that on SQLite the senders'
# writes (and the scheduler's lease) get their turn between them.
RELEASE_BATCH = 100


def rules_from_settings(settings: Settings) -> SendRules:
    """The send-time rules the settings make; Telegram's backlog in the outbox follows its rate."""
    return SendRules(
        quiet_hours=QuietHours.parse(settings.quiet_hours),
        cap=settings.campaign_cap,
        library_zone=load_facts(settings.path(settings.library_facts)).timezone,
        rates={**SendRules().rates, "telegram": settings.telegram_rate},
        wechat_template=bool(settings.wechat_template_id),
    )


def run_releaser(*, engine: Engine, rules: SendRules, stop: threading.Event, every: float = EVERY) -> None:
    """Check and queue due deliveries until `stop` is set (the scheduler process runs this)."""
    # SQLite has one writer at a time: between two busy batches the releaser waits as long as the last
    # one took, or the senders (whose busy wait backs off) would hardly ever get the lock.
    shared_lock = engine.dialect.name == "sqlite"
    while not stop.is_set():
        began = time.monotonic()
        try:
            released = release_due(engine=engine, rules=rules, limit=RELEASE_BATCH)
            if released.queued or released.skipped:
                log.info(
                    "campaigns: %s queued, %s skipped, %s waiting for the morning",
                    released.queued,
                    sum(released.skipped.values()),
                    released.waiting,
                )
            busy = released.queued > 0
            if not busy:
                finish_campaigns(engine=engine)
        except Exception as error:  # the CRM is down, say: try again at the next look
            log.error("campaigns: releasing deliveries failed (%s)", describe_failure(error))
            busy = False
        took = time.monotonic() - began
        stop.wait((took if shared_lock else 0.0) if busy else every)


@dataclass
class Progress:
    """Where a foreground run stands."""

    total: int
    done: int
    sent: int
    rate: float  # messages sent per second so far


def _standing(engine: Engine, campaign_id: int, channels: set[str]) -> tuple[int, int, int]:
    """(deliveries, settled, sent): settled means skipped, cancelled, or queued and no longer waiting in
    the outbox of a channel this process sends (other channels' clients take their own)."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(Delivery.state, Delivery.channel, OutboxMessage.status, func.count())
            .outerjoin(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.state, Delivery.channel, OutboxMessage.status)
        ).all()
    total = settled = sent = 0
    for state, channel, status, count in rows:
        total += count
        if status == "delivered":
            sent += count
        if state in ("skipped", "cancelled") or (
            state == "queued" and (status != "pending" or channel not in channels)
        ):
            settled += count
    return total, settled, sent


async def send_now(
    *,
    engine: Engine,
    campaign_id: int,
    rules: SendRules,
    dispatcher: Dispatcher,
    on_progress: Callable[[Progress], None] | None = None,
    until: dt.datetime | None = None,
) -> Released:
    """Queue and send the campaign's due deliveries until none is left to do here (or `until`).

    Releasing and sending run side by side: the outbox is drained batch after batch without waiting for
    the next release, so the channel's pace has no gap between batches. Deliveries waiting for the end
    of a patron's quiet hours stay queued for the scheduler's releaser.
    """
    released = Released()
    started = asyncio.get_running_loop().time()
    channels = set(dispatcher.channels)
    finished = asyncio.Event()

    async def sending() -> None:  # stops between two batches, never in the middle of one
        while not finished.is_set():
            if not await dispatcher.drain_once():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), timeout=0.2)

    sender = asyncio.get_running_loop().create_task(sending(), name="patronbot-campaign-send")
    try:
        while not sender.done():
            step = await asyncio.to_thread(release_due, engine=engine, rules=rules, campaign_id=campaign_id)
            released.add(step)
            total, settled, sent = await asyncio.to_thread(_standing, engine, campaign_id, channels)
            elapsed = max(asyncio.get_running_loop().time() - started, 1e-6)
            if on_progress is not None:
                on_progress(Progress(total=total, done=settled, sent=sent, rate=sent / elapsed))
            due_left = await asyncio.to_thread(_due_pending, engine, campaign_id)
            waiting = await asyncio.to_thread(_waiting, engine, campaign_id)
            if (not due_left and settled + waiting >= total) or (until and utcnow() >= until):
                break
            await asyncio.sleep(0.05 if step.queued else 0.2)
    finally:
        finished.set()
        await sender  # its error, if it failed, is this one's
    return released


def _due_pending(engine: Engine, campaign_id: int) -> int:
    with session_scope(engine) as session:
        query = select(func.count()).where(
            Delivery.campaign_id == campaign_id,
            Delivery.state == "pending",
            Delivery.scheduled_at <= utcnow(),
        )
        return int(session.execute(query).scalar_one())


def _waiting(engine: Engine, campaign_id: int) -> int:
    with session_scope(engine) as session:
        query = select(func.count()).where(
            Delivery.campaign_id == campaign_id, Delivery.state == "pending", Delivery.scheduled_at > utcnow()
        )
        return int(session.execute(query).scalar_one())
