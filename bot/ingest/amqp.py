"""The ingester's RabbitMQ side: Rasa's Pika event broker's queue, acknowledged after the CRM commit."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.crm.database import describe_error, session_scope
from bot.crm.rasa_events import RasaEventStore
from bot.ingest.events import BrokerEvent, IngestState, database_failed, event_kind, ingest_events
from bot.privacy.requests import SETTLE, ErasureRound, ResidueSweeps, carry_out, requested_in
from bot.redaction import redact_url

log = logging.getLogger(__name__)


def parse_message(body: bytes) -> BrokerEvent | None:
    """The event in a broker message, or None for a message that is not a Rasa event."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    return BrokerEvent(sender_id=str(data.get("sender_id") or ""), data=data)


# An event that cannot be written waits in this queue beside the broker's (`<queue>.held`), retried
# at every start, after every erasure and every RETRY_HELD_SECONDS: a bug fixed later still brings it
# to the CRM, and a patron erased meanwhile (also by staff, from another process) has it dropped.
HELD_SUFFIX = ".held"
RETRY_HELD_SECONDS = 600.0


def held_queue(queue: str) -> str:
    return f"{queue}{HELD_SUFFIX}"


def _ingest(crm: Engine, events: list[BrokerEvent], state: IngestState) -> list[int]:
    """Write the batch in one transaction; if an event spoils it, each event in its own. Returns the
    positions of the events that still fail (logged by their type and the error's class, nothing of
    the patron): the caller holds them back, so they cannot hold up the queue. A database failure is
    raised, and the batch goes back to the queue."""
    try:
        with session_scope(crm) as session:
            ingest_events(session=session, events=events, state=state)
        return []
    except Exception as error:
        if database_failed(error):
            raise
    failed = []
    for position, event in enumerate(events):
        try:
            with session_scope(crm) as session:
                ingest_events(session=session, events=[event], state=state)
        except Exception as error:
            if database_failed(error):
                raise
            log.error(
                "a %s event from RabbitMQ could not be ingested (%s); held back in the queue's %s twin",
                event_kind(event),
                type(error).__name__,
                HELD_SUFFIX,
            )
            failed.append(position)
    return failed


async def _hold(channel: AbstractChannel, queue: str, bodies: Sequence[bytes]) -> None:
    """Publish the events that failed to the held queue, persistent and confirmed, before the batch
    they came in is acknowledged."""
    for body in bodies:
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=held_queue(queue),
        )


async def retry_held(*, channel: AbstractChannel, crm: Engine, queue: str, state: IngestState) -> int:
    """Ingest the held-back events again: each one written (or dropped, its patron erased since) is
    acknowledged; one that still fails goes back to the held queue. Returns how many are left there."""
    held = await channel.declare_queue(held_queue(queue), durable=True)
    loop = asyncio.get_running_loop()
    still: list[AbstractIncomingMessage] = []
    for _ in range(int(held.declaration_result.message_count or 0)):
        message = await held.get(no_ack=False, fail=False)
        if message is None:
            break
        event = parse_message(message.body)
        try:
            failed = [] if event is None else await loop.run_in_executor(None, _ingest, crm, [event], state)
        except SQLAlchemyError:
            await message.nack(requeue=True)
            for kept in still:
                await kept.nack(requeue=True)
            raise
        if failed:
            still.append(message)
        else:
            await message.ack()
    for kept in still:
        await kept.nack(requeue=True)
    if still:
        log.warning("%d held-back events from RabbitMQ still cannot be ingested", len(still))
    return len(still)


def _erase(crm: Engine, crm_url: str, rasa_stores: Sequence[RasaEventStore]) -> ErasureRound:
    """Carry out the settled requests."""
    return carry_out(crm=crm, crm_url=crm_url, rasa_stores=rasa_stores)


@dataclass
class Chores:
    """What the consumer does between batches, when due: erasures asked for in the chat, and another
    try at the held-back events. Both are due at start (a previous run may have left some)."""

    crm: Engine
    crm_url: str
    queue: str
    rasa_stores: Sequence[RasaEventStore]
    erase_at: float | None
    retry_at: float
    sweeps: ResidueSweeps = field(default_factory=ResidueSweeps)

    def erasure_asked(self, at: float) -> None:
        due = at + SETTLE.total_seconds()
        self.erase_at = due if self.erase_at is None else min(self.erase_at, due)

    async def run_due(self, channel: AbstractChannel, state: IngestState) -> None:
        loop = asyncio.get_running_loop()
        if self.erase_at is not None and loop.time() >= self.erase_at:
            try:
                erasure = await loop.run_in_executor(None, _erase, self.crm, self.crm_url, self.rasa_stores)
            except SQLAlchemyError as error:
                log.error("erasure failed, will retry: %s", describe_error(error, self.crm_url))
                erasure = ErasureRound(erased=0, waiting=True)
            self.erase_at = loop.time() + 1.0 if erasure.waiting else None
            state.forget(erasure.senders)
            self.sweeps.add(erasure)
            if erasure.erased:
                self.retry_at = loop.time()  # the erased patrons' held events are dropped now
        try:
            await loop.run_in_executor(None, self.sweeps.run_due, self.rasa_stores)
        except SQLAlchemyError as error:
            log.error(
                "cannot sweep the tracker store after an erasure: %s", describe_error(error, self.crm_url)
            )
        if loop.time() >= self.retry_at:
            try:
                await retry_held(channel=channel, crm=self.crm, queue=self.queue, state=state)
                self.retry_at = loop.time() + RETRY_HELD_SECONDS
            except SQLAlchemyError as error:
                log.error("cannot retry held-back events: %s", describe_error(error, self.crm_url))
                self.retry_at = loop.time() + 5.0


async def consume(
    *,
    crm: Engine,
    crm_url: str,
    amqp_url: str,
    queue: str,
    stop: threading.Event,
    batch_size: int = 500,
    flush_seconds: float = 0.1,
    rasa_stores: Sequence[RasaEventStore] = (),
) -> None:
    """Consume until `stop` is set. A batch is acknowledged only after its CRM transaction commits,
    so a crash redelivers it, and the event digests make the redelivery write nothing twice. Only a
    database failure sends a batch back to the queue; an event that cannot be written is logged and
    held back in `<queue>.held` (see `_ingest`) and retried (see HELD_SUFFIX)."""
    connection = await aio_pika.connect_robust(amqp_url)
    log.info("ingesting Rasa events from %s queue %s", redact_url(amqp_url), queue)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=batch_size * 2)
        # Declared as Rasa's Pika broker declares it, so either may start first.
        amqp_queue = await channel.declare_queue(queue, durable=True)
        pending: list[AbstractIncomingMessage] = []

        async def on_message(message: AbstractIncomingMessage) -> None:
            pending.append(message)

        consumer_tag = await amqp_queue.consume(on_message, no_ack=False)
        state = IngestState()
        loop = asyncio.get_running_loop()
        backoff = flush_seconds
        chores = Chores(crm, crm_url, queue, rasa_stores, erase_at=loop.time(), retry_at=loop.time())
        while not stop.is_set():
            await chores.run_due(channel, state)
            if not pending:
                await asyncio.sleep(flush_seconds)
                continue
            batch = pending[:batch_size]
            del pending[: len(batch)]
            parsed = [(m, parse_message(m.body)) for m in batch]
            readable = [(m, event) for m, event in parsed if event is not None]
            events = [event for _, event in readable]
            try:
                failed = await loop.run_in_executor(None, _ingest, crm, events, state)
                await _hold(channel, queue, [readable[i][0].body for i in failed])
            except SQLAlchemyError as error:
                log.error("ingest failed, messages go back to the queue: %s", describe_error(error, crm_url))
                await batch[-1].nack(multiple=True, requeue=True)
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)
                continue
            backoff = flush_seconds
            await batch[-1].ack(multiple=True)
            if requested_in(events):
                chores.erasure_asked(loop.time())
        await amqp_queue.cancel(consumer_tag)


def run_amqp_ingester(**options: Any) -> None:
    """`consume` in its own event loop (the `patronbot ingest` process)."""
    asyncio.run(consume(**options))
