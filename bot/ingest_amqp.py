"""The ingester's RabbitMQ side: Rasa's Pika event broker's queue, acknowledged after the CRM commit."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.database import describe_error, session_scope
from bot.erasure_requests import SETTLE, carry_out, requested_in
from bot.ingest import BrokerEvent, IngestState, database_failed, event_kind, ingest_events
from bot.rasa_events import RasaEventStore
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


def _ingest(crm: Engine, events: list[BrokerEvent], state: IngestState) -> int:
    """Write the batch in one transaction; if an event spoils it, each event in its own. An event that
    still fails is logged (its type and the error's class, nothing of the patron) and acknowledged with
    the rest, so it cannot hold up the queue; Rasa's tracker store keeps the event itself. A database
    failure is raised, and the batch goes back to the queue."""
    try:
        with session_scope(crm) as session:
            return ingest_events(session=session, events=events, state=state)
    except Exception as error:
        if database_failed(error):
            raise
    written = 0
    for event in events:
        try:
            with session_scope(crm) as session:
                written += ingest_events(session=session, events=[event], state=state)
        except Exception as error:
            if database_failed(error):
                raise
            log.error(
                "a %s event from RabbitMQ could not be ingested (%s); acknowledged, Rasa's tracker store "
                "keeps it",
                event_kind(event),
                type(error).__name__,
            )
    return written


def _erase(crm: Engine, crm_url: str, rasa_stores: Sequence[RasaEventStore]) -> bool:
    """Carry out the settled requests; whether any request still waits."""
    return carry_out(crm=crm, crm_url=crm_url, rasa_stores=rasa_stores).waiting


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
    acknowledged (see `_ingest`)."""
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
        erase_at: float | None = loop.time()  # requests a previous run noted but did not carry out
        while not stop.is_set():
            if erase_at is not None and loop.time() >= erase_at:
                try:
                    still_waiting = await loop.run_in_executor(None, _erase, crm, crm_url, rasa_stores)
                except SQLAlchemyError as error:
                    log.error("erasure failed, will retry: %s", describe_error(error, crm_url))
                    still_waiting = True
                erase_at = loop.time() + 1.0 if still_waiting else None
            if not pending:
                await asyncio.sleep(flush_seconds)
                continue
            batch = pending[:batch_size]
            del pending[: len(batch)]
            events = [event for event in (parse_message(m.body) for m in batch) if event is not None]
            try:
                await loop.run_in_executor(None, _ingest, crm, events, state)
            except SQLAlchemyError as error:
                log.error("ingest failed, messages go back to the queue: %s", describe_error(error, crm_url))
                await batch[-1].nack(multiple=True, requeue=True)
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)
                continue
            backoff = flush_seconds
            await batch[-1].ack(multiple=True)
            if requested_in(events):
                due = loop.time() + SETTLE.total_seconds()
                erase_at = due if erase_at is None else min(erase_at, due)
        await amqp_queue.cancel(consumer_tag)


def run_amqp_ingester(**options: Any) -> None:
    """`consume` in its own event loop (the `patronbot ingest` process)."""
    asyncio.run(consume(**options))
