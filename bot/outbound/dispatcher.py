"""Sending the outbox through the channels that push (Telegram, WeChat, the widget), once per message.

A channel registers an async sender that answers each message with an `Attempt`. The dispatcher, in
the Rasa server's event loop, claims each conversation's due messages in order (a lease in the
outbox row, with `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several processes share the work and no
message goes twice), sends them, and records every attempt and its outcome in the CRM: sent; retry
later (a 429's retry_after, a 5xx); blocked (the patron blocked the bot: marked unreachable, not
retried); unknown (the request went out and no answer came, or the process sending it died: not
blindly sent again); skipped by rule (WeChat's closed 48-hour window). A staff reply made anywhere (the
CLI, the console) is sent within POLL seconds, or at once when `wake` is called.
A message is marked in flight just before its request leaves (bot/outbound/claims.py); the claims of
a live process are renewed while it sends, and a dead one's run out in LEASE.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from bot.crm.database import session_scope
from bot.crm.models import DeliveryAttempt, OutboxMessage, Patron, utcnow
from bot.outbound.claims import (
    LEASE,
    RENEW,
    ClaimLostError,
    announces,
    mark_in_flight,
    on_leaving,
    renew_claims,
)
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# The channels whose messages the running bot pushes (the REST channel's wait for its client).
PUSH_CHANNELS = ("telegram", "wechat", "webchat")
# How often the outbox is looked at when nothing wakes the dispatcher.
POLL = 1.0
# Retries of a message the channel asked to send again later, before it is given up as failed.
MAX_ATTEMPTS = 8
# The wait before the n-th retry when the channel names none (doubling, at most an hour).
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 3600.0
# The most messages one look at the outbox claims, per channel.
BATCH = 200


@dataclass(frozen=True)
class Attempt:
    """What came of sending one message: an outcome of ATTEMPT_OUTCOMES, why, and when to retry."""

    outcome: str
    reason: str | None = None
    retry_after: float = 0.0


SENT = Attempt("sent")

# A channel's push: sends one message and says what came of it (it does not raise for a refusal).
ChannelSender = Callable[[OutboxMessage], Awaitable[Attempt]]
# Whether this process can reach a recipient (the widget: only the process holding their socket).
Holds = Callable[[str], bool]


@dataclass
class _Channel:
    send: ChannelSender
    holds: Holds | None


def claim_due(
    *, engine: Engine, channel: str, holds: Holds | None = None, limit: int = BATCH
) -> list[OutboxMessage]:
    """The channel's due messages, each conversation's in order and only up to its first message that
    is not due (a retry waiting, or another process's claim), claimed for this process."""
    now = utcnow()
    with session_scope(engine) as session:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.channel == channel, OutboxMessage.status == "pending")
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        stopped: set[str] = set()
        claimed: list[OutboxMessage] = []
        for message in session.execute(query).scalars().all():
            recipient = str(message.recipient)
            if recipient in stopped:
                continue
            due = message.next_attempt_at is None or message.next_attempt_at <= now
            free = message.claimed_until is None or message.claimed_until < now
            if free and message.in_flight_at is not None:
                # Its sender died with the request under way: whether it arrived is unknown, and a
                # patron must not get it twice, so it is not sent again.
                _give_up_in_flight(session, message, now)
                stopped.add(recipient)
                continue
            if not (due and free) or (holds is not None and not holds(recipient)):
                stopped.add(recipient)
                continue
            taken = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message.id,
                    OutboxMessage.status == "pending",
                    or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
                )
                .values(claimed_until=now + LEASE)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                stopped.add(recipient)
                continue
            set_committed_value(message, "claimed_until", now + LEASE)
            claimed.append(message)
        session.expunge_all()
        return claimed


def _give_up_in_flight(session: Session, message: OutboxMessage, now: dt.datetime) -> None:
    taken = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id,
            OutboxMessage.status == "pending",
            OutboxMessage.in_flight_at.is_not(None),
            or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now),
        )
        .values(status="unknown", claimed_until=None, attempts=OutboxMessage.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        session.add(
            DeliveryAttempt(
                outbox_id=message.id,
                channel=message.channel,
                attempted_at=now,
                outcome="unknown",
                reason="sender_died_in_flight",
            )
        )
        session.flush()  # before claim_due lets go of its objects


def record_attempt(*, engine: Engine, message: OutboxMessage, attempt: Attempt) -> str:
    """Record one attempt and move the message on; returns its new status."""
    now = utcnow()
    attempts = int(message.attempts or 0) + 1
    values: dict[str, object] = {"attempts": attempts, "claimed_until": None, "in_flight_at": None}
    if attempt.outcome == "sent":
        values |= {"status": "delivered", "delivered_at": now}
    elif attempt.outcome == "retry" and attempts < MAX_ATTEMPTS:
        wait = attempt.retry_after or min(FIRST_BACKOFF * 2 ** (attempts - 1), MAX_BACKOFF)
        values |= {"next_attempt_at": now + dt.timedelta(seconds=wait)}
    elif attempt.outcome == "skipped":
        values |= {"status": "skipped"}
    elif attempt.outcome == "unknown":
        values |= {"status": "unknown"}
    else:  # blocked, failed, or retried too often
        values |= {"status": "failed"}
    with session_scope(engine) as session:
        session.add(
            DeliveryAttempt(
                outbox_id=message.id,
                channel=message.channel,
                attempted_at=now,
                outcome=attempt.outcome,
                reason=(attempt.reason or None) and str(attempt.reason)[:64],
            )
        )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if attempt.outcome == "blocked" and message.patron_id is not None:
            session.execute(
                update(Patron)
                .where(Patron.id == message.patron_id)
                .values(reachable=False)
                .execution_options(synchronize_session=False)
            )
    return str(values.get("status", "pending"))


def release_claims(*, engine: Engine, ids: list[int]) -> None:
    """Give back messages claimed but not attempted (the conversation stopped at an earlier one)."""
    if not ids:
        return
    with session_scope(engine) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids), OutboxMessage.status == "pending")
            .values(claimed_until=None)
            .execution_options(synchronize_session=False)
        )


class Dispatcher:
    """Drains the outbox of the channels registered in this process."""

    def __init__(self, *, engine: Engine, poll: float = POLL) -> None:
        self.engine = engine
        self.poll = poll
        self.channels: dict[str, _Channel] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._claims = threading.Lock()

    def register(self, channel: str, send: ChannelSender, *, holds: Holds | None = None) -> None:
        self.channels[channel] = _Channel(send=send, holds=holds)
        self.wake()

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="patronbot-outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        while True:
            try:
                if await self.drain_once():
                    continue  # a batch went: more may be waiting (a campaign's thousands)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the CRM is down, say: try again at the next poll
                log.error("outbox: sending failed (%s)", describe_failure(error))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll)

    async def drain_once(self) -> int:
        """Claim and send what is due on every registered channel; returns how many were sent."""
        sent = 0
        for name, channel in list(self.channels.items()):
            claimed = await asyncio.to_thread(
                claim_due, engine=self.engine, channel=name, holds=channel.holds
            )
            by_recipient: dict[str, list[OutboxMessage]] = {}
            for message in claimed:
                by_recipient.setdefault(str(message.recipient), []).append(message)
            renewing = asyncio.get_running_loop().create_task(self._renewing(claimed))
            try:
                results = await asyncio.gather(
                    *(self._send_in_order(channel, messages) for messages in by_recipient.values())
                )
            finally:
                renewing.cancel()
                await asyncio.gather(renewing, return_exceptions=True)
            sent += sum(results)
        return sent

    async def _renewing(self, claimed: list[OutboxMessage]) -> None:
        """Keep this process's claims on `claimed` while it sends them."""
        while claimed:
            await asyncio.sleep(RENEW)
            try:
                await asyncio.to_thread(self._locked, renew_claims, engine=self.engine, messages=claimed)
            except Exception as error:  # the CRM is down, say: the claims may run out, then none is sent
                log.warning("outbox: claims could not be renewed (%s)", describe_failure(error))

    def _locked(self, work: Callable[..., _T], **arguments: object) -> _T:
        """Claims are renewed and checked one at a time (a renewal changes the claim each check compares)."""
        with self._claims:
            return work(**arguments)

    async def _send_in_order(self, channel: _Channel, messages: list[OutboxMessage]) -> int:
        """One conversation's messages in order, stopping at the first that is not sent."""
        sent = 0
        for index, message in enumerate(messages):
            marked = False

            async def leaving(message: OutboxMessage = message) -> None:
                nonlocal marked
                if not marked:
                    ours = await asyncio.to_thread(
                        self._locked, mark_in_flight, engine=self.engine, message=message
                    )
                    if not ours:
                        raise ClaimLostError(f"outbox message {message.id} is no longer claimed here")
                    marked = True

            try:
                with on_leaving(leaving):
                    if not announces(channel.send):
                        await leaving()
                    attempt = await channel.send(message)
            except asyncio.CancelledError:
                raise
            except ClaimLostError:  # another process may be sending it: this one leaves it and the rest
                log.warning("%s: outbox message %s was no longer claimed here", message.channel, message.id)
                return sent
            except Exception as error:  # a sender bug: recorded, retried later like a 5xx
                log.error(
                    "%s: sending outbox message %s to %s failed (%s)",
                    message.channel,
                    message.id,
                    fingerprint(str(message.recipient)),
                    describe_failure(error),
                )
                attempt = Attempt("retry", reason=type(error).__name__)
            status = await asyncio.to_thread(
                record_attempt, engine=self.engine, message=message, attempt=attempt
            )
            if status != "delivered":
                await asyncio.to_thread(
                    release_claims, engine=self.engine, ids=[int(later.id) for later in messages[index + 1 :]]
                )
                break
            sent += 1
        return sent
