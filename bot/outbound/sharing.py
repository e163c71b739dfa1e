"""A channel's rate shared among the sender processes: each registers in `sender_worker`, beats, and paces
itself at the channel's rate divided by the senders seen alive.

A sender that dies stops beating; once its last beat is EXPIRES old it no longer counts and the others
take its share. A sender that starts waits one beat before sending, so the ones already running have
lowered their pace by then and the channel's limit is never crossed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Mapping

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import SenderWorker, utcnow
from bot.redaction import describe_failure

log = logging.getLogger(__name__)

# Seconds between a sender's beats; a sender not seen for EXPIRES seconds no longer counts.
BEAT = 1.0
EXPIRES = 4.0
# Rows of senders dead this long are deleted.
FORGOTTEN = dt.timedelta(hours=1)


class Pace:
    """Evenly spaced slots at `per_second`, a rate that may change while it is used: waiters take their
    slot one at a time, each the interval after the previous slot (no burst, no drift)."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("a pace needs a positive rate")
        self.per_second = per_second
        self._lock = asyncio.Lock()
        self._last = float("-inf")

    async def slot(self) -> None:
        """Wait for this caller's slot."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            at = max(now, self._last + 1.0 / self.per_second)
            if at > now:
                await asyncio.sleep(at - now)
            self._last = at


def worker_id() -> str:
    """This process's sender id: "hostname:pid:random" (a restarted process may get the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def beat(*, engine: Engine, worker: str, channels: list[str], now: dt.datetime | None = None) -> None:
    """Register `worker` as a live sender of `channels`, or say it is still alive."""
    now = now or utcnow()
    names = ",".join(sorted(channels))
    with session_scope(engine) as session:
        seen = session.execute(
            update(SenderWorker).where(SenderWorker.id == worker).values(seen_at=now, channels=names)
        )
        if not seen.rowcount:  # type: ignore[attr-defined]
            session.execute(insert(SenderWorker).values(id=worker, channels=names, seen_at=now))
        session.execute(delete(SenderWorker).where(SenderWorker.seen_at < now - FORGOTTEN))


def forget(*, engine: Engine, worker: str) -> None:
    """Take `worker` off the live senders (it stops): the others take its share at their next beat."""
    with session_scope(engine) as session:
        session.execute(delete(SenderWorker).where(SenderWorker.id == worker))


def live_senders(*, engine: Engine, channel: str, now: dt.datetime | None = None) -> int:
    """How many senders of `channel` beat within the last EXPIRES seconds."""
    since = (now or utcnow()) - dt.timedelta(seconds=EXPIRES)
    with session_scope(engine) as session:
        rows = session.execute(select(SenderWorker.channels).where(SenderWorker.seen_at >= since)).scalars()
        return sum(1 for names in rows if channel in str(names).split(","))


def share(*, total: float, senders: int) -> float:
    """One sender's part of a channel's rate."""
    return total / max(senders, 1)


class RateShare:
    """Keeps this process registered as a sender and each channel's pace at its share of the channel's
    rate: `paces` is {channel: (its pace, the channel's whole rate)}."""

    def __init__(
        self,
        *,
        engine: Engine,
        paces: Mapping[str, tuple[Pace, float]],
        worker: str | None = None,
        every: float = BEAT,
    ) -> None:
        self.engine = engine
        self.paces = dict(paces)
        self.worker = worker or worker_id()
        self.every = every
        self._task: asyncio.Task[None] | None = None

    def refresh(self) -> dict[str, int]:
        """Beat, count the live senders of each channel and set the paces; returns the counts."""
        beat(engine=self.engine, worker=self.worker, channels=list(self.paces))
        counts: dict[str, int] = {}
        for channel, (pace, total) in self.paces.items():
            counts[channel] = live_senders(engine=self.engine, channel=channel)
            rate = share(total=total, senders=counts[channel])
            if rate != pace.per_second:
                log.info(
                    "%s: %s senders alive, sending %.2f messages a second", channel, counts[channel], rate
                )
                pace.per_second = rate
        return counts

    async def start(self) -> None:
        """Register, wait a beat for the other senders to slow down, take this share, and keep beating."""
        if not self.paces:
            return
        await asyncio.to_thread(self.refresh)
        await asyncio.sleep(self.every * 1.5)
        await asyncio.to_thread(self.refresh)
        self._task = asyncio.get_running_loop().create_task(self._beating(), name="patronbot-rate-share")

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as error:  # the CRM is down, say: keep the pace, try at the next beat
                log.warning("sender %s could not beat (%s)", self.worker, describe_failure(error))

    async def stop(self) -> None:
        """Stop beating and leave the share to the others."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.paces:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(forget, engine=self.engine, worker=self.worker)
