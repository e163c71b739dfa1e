"""The campaign releaser's loop, and sending one campaign now in the foreground (`patronbot campaign run`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import Delivery, OutboxMessage, utcnow
from bot.knowledge.facts import load_facts
from bot.outbound.dispatcher import Dispatcher
from bot.outreach.sender import Released, SendRules, release_due
from bot.quiet_hours import QuietHours
from bot.redaction import describe_failure
from bot.settings import Settings

log = logging.getLogger(__name__)

# How often due deliveries are looked at.
EVERY = 1.0


def rules_from_settings(settings: Settings) -> SendRules:
    return SendRules(
        quiet_hours=QuietHours.parse(settings.quiet_hours),
        cap=settings.campaign_cap,
        library_zone=load_facts(settings.path(settings.library_facts)).timezone,
        wechat_template=bool(settings.wechat_template_id),
    )


def run_releaser(*, engine: Engine, rules: SendRules, stop: threading.Event, every: float = EVERY) -> None:
    """Check and queue due deliveries until `stop` is set (the scheduler process runs this)."""
    while not stop.is_set():
        try:
            released = release_due(engine=engine, rules=rules)
            if released.queued or released.skipped:
                log.info(
                    "campaigns: %s queued, %s skipped, %s waiting for the morning",
                    released.queued,
                    sum(released.skipped.values()),
                    released.waiting,
                )
            busy = released.queued > 0
        except Exception as error:  # the CRM is down, say: try again at the next look
            log.error("campaigns: releasing deliveries failed (%s)", describe_failure(error))
            busy = False
        stop.wait(0 if busy else every)


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

    Deliveries waiting for the end of a patron's quiet hours stay queued for the scheduler's releaser.
    """
    released = Released()
    started = asyncio.get_running_loop().time()
    channels = set(dispatcher.channels)
    while True:
        step = await asyncio.to_thread(release_due, engine=engine, rules=rules, campaign_id=campaign_id)
        released.add(step)
        await dispatcher.drain_once()
        total, settled, sent = await asyncio.to_thread(_standing, engine, campaign_id, channels)
        elapsed = max(asyncio.get_running_loop().time() - started, 1e-6)
        if on_progress is not None:
            on_progress(Progress(total=total, done=settled, sent=sent, rate=sent / elapsed))
        due_left = await asyncio.to_thread(_due_pending, engine, campaign_id)
        if (not due_left and settled + _waiting(engine, campaign_id) >= total) or (
            until and utcnow() >= until
        ):
            return released
        if not step.queued:
            await asyncio.sleep(0.2)


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
