"""Ingesting from RabbitMQ (Rasa's Pika broker): every event once, acknowledged only after commit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from bot.crm.rasa_events import EVENTS, RasaEventStore
from bot.ingest.amqp import consume, parse_message
from bot.ingest.events import BrokerEvent
from tests.factories import bot_event, interactions, user_event

AMQP_URL = os.environ.get("PATRONBOT_TEST_AMQP_URL", "")


def test_parse_message_accepts_rasa_events_and_refuses_junk() -> None:
    event = user_event("rest:a", "hi")
    parsed = parse_message(json.dumps(event.data).encode())
    assert parsed == BrokerEvent(sender_id="rest:a", data=event.data)
    assert parse_message(b"{not json") is None
    assert parse_message(b"[1, 2]") is None


async def _publish(queue: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue)


async def _queue_depth(queue: str, *, keep: bool = False) -> int:
    """How many messages wait in `queue` (which is then deleted, unless `keep`)."""
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        count = declared.declaration_result.message_count
        if not keep:
            await declared.delete(if_unused=False, if_empty=False)
        return int(count or 0)


def _start_consumer(crm: Engine, crm_url: str, queue: str) -> tuple[threading.Event, threading.Thread]:
    """The ingester consuming `queue` on a thread, and the event that stops it."""
    stop = threading.Event()
    consumer = threading.Thread(
        target=lambda: asyncio.run(
            consume(crm=crm, crm_url=crm_url, amqp_url=AMQP_URL, queue=queue, stop=stop, flush_seconds=0.05)
        )
    )
    consumer.start()
    return stop, consumer


@pytest.mark.skipif(not AMQP_URL, reason="PATRONBOT_TEST_AMQP_URL is not set (CI sets it)")
def test_events_from_rabbitmq_land_once_and_are_acknowledged(crm: Engine, crm_url: str) -> None:
    queue = f"patronbot_test_{uuid.uuid4().hex[:8]}"
    events = [user_event("rest:amqp", "图书馆几点开门", language="zh"), bot_event("rest:amqp", "08:00–22:00")]
    bodies = [json.dumps(e.data).encode() for e in events]
    # Each event twice (a redelivery), plus a message that is not an event at all.
    asyncio.run(_publish(queue, bodies + bodies + [b"not json"]))
    stop, consumer = _start_consumer(crm, crm_url, queue)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and len(interactions(crm)) < 2:
            time.sleep(0.1)
        time.sleep(0.5)  # give a wrongly repeated insert the chance to show
    finally:
        stop.set()
        consumer.join(timeout=30)
    rows = interactions(crm)
    assert [(r.direction, r.text) for r in rows] == [("in", "图书馆几点开门"), ("out", "08:00–22:00")]
    assert asyncio.run(_queue_depth(queue)) == 0  # everything was acknowledged


@pytest.mark.skipif(not AMQP_URL, reason="PATRONBOT_TEST_AMQP_URL is not set (CI sets it)")
def test_an_erasure_asked_for_over_rabbitmq_also_reaches_a_late_tracker_write(
    crm: Engine, crm_url: str, tmp_path: Path
) -> None:
    """Rasa's Pika broker publishes before the tracker store commits; the erasure waits for that write."""
    queue = f"patronbot_test_{uuid.uuid4().hex[:8]}"
    sender = "rest:amqp-erase"
    asked = bot_event(sender, "好的。您的信息将被删除。", utter_action="utter_delete_scheduled")
    events = [user_event(sender, "确认删除", language="zh").data, asked.data]
    tracker = RasaEventStore(name="tracker_store", url=f"sqlite:///{tmp_path / 'tracker.db'}")
    EVENTS.metadata.create_all(tracker.engine)
    asyncio.run(_publish(queue, [json.dumps(e).encode() for e in events]))
    stop = threading.Event()
    consumer = threading.Thread(
        target=lambda: asyncio.run(
            consume(
                crm=crm,
                crm_url=crm_url,
                amqp_url=AMQP_URL,
                queue=queue,
                stop=stop,
                flush_seconds=0.05,
                rasa_stores=[tracker],
            )
        )
    )
    consumer.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not interactions(crm):
            time.sleep(0.05)
        # The turn reaches the tracker store only now, after the ingester has stored it.
        with tracker.engine.begin() as connection:
            connection.execute(insert(EVENTS).values(sender_id=sender, data=json.dumps({"text": "确认删除"})))
        while time.monotonic() < deadline and (interactions(crm) or tracker.events_for({sender})):
            time.sleep(0.1)
    finally:
        stop.set()
        consumer.join(timeout=30)
        asyncio.run(_queue_depth(queue))
    assert interactions(crm) == []
    assert tracker.events_for({sender}) == []


def _run_consumer_until(crm: Engine, crm_url: str, queue: str, done: Any) -> None:
    """The ingester on `queue` until `done()` holds (30 s at most), and a little longer."""
    stop, consumer = _start_consumer(crm, crm_url, queue)
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and not done():
            time.sleep(0.1)
        time.sleep(0.5)  # give a wrongly repeated write or a redelivery the chance to show
    finally:
        stop.set()
        consumer.join(timeout=30)


@pytest.mark.skipif(not AMQP_URL, reason="PATRONBOT_TEST_AMQP_URL is not set (CI sets it)")
def test_a_bad_event_from_rabbitmq_is_held_back_and_the_rest_land_then_it_lands_once_fixed(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bot.ingest.events

    secret = "my card is 1234"
    original = bot.ingest.events._insert_new

    def poisoned(*, session: Any, rows: list[dict[str, Any]]) -> int:
        if any(row["text"] == secret for row in rows):
            raise ValueError("a bug")
        return original(session=session, rows=rows)

    monkeypatch.setattr(bot.ingest.events, "_insert_new", poisoned)
    caplog.set_level(logging.ERROR, logger="bot.ingest.amqp")
    queue = f"patronbot_test_{uuid.uuid4().hex[:8]}"
    typed = '/greet{"language":"english-please"}'
    events = [
        user_event("rest:mallory", typed, language="english-please"),
        user_event("rest:pat", secret),
        user_event("rest:nina", "你好", language="zh"),
    ]
    asyncio.run(_publish(queue, [json.dumps(e.data).encode() for e in events]))
    _run_consumer_until(crm, crm_url, queue, lambda: len(interactions(crm)) >= 2)
    # A payload says nothing of the language, and mallory has no conversation before it.
    assert [(r.text, r.language) for r in interactions(crm)] == [(typed, None), ("你好", "zh")]
    assert "a user event from RabbitMQ could not be ingested (ValueError)" in caplog.text
    assert secret not in caplog.text
    assert "rest:pat" not in caplog.text
    assert asyncio.run(_queue_depth(queue)) == 0  # acknowledged, not requeued
    assert asyncio.run(_queue_depth(f"{queue}.held", keep=True)) == 1  # kept, not lost

    # The bug is fixed: the next start ingests the held event, once, and empties the held queue.
    monkeypatch.setattr(bot.ingest.events, "_insert_new", original)
    _run_consumer_until(crm, crm_url, queue, lambda: len(interactions(crm)) >= 3)
    assert sorted(r.text for r in interactions(crm)) == sorted([typed, "你好", secret])
    assert asyncio.run(_queue_depth(f"{queue}.held")) == 0


@pytest.mark.skipif(not AMQP_URL, reason="PATRONBOT_TEST_AMQP_URL is not set (CI sets it)")
def test_a_held_event_of_an_erased_patron_is_dropped_not_written(crm: Engine, crm_url: str) -> None:
    from bot.crm.database import session_scope
    from bot.crm.models import utcnow
    from bot.privacy.erasure import _mark_erased

    queue = f"patronbot_test_{uuid.uuid4().hex[:8]}"
    held = user_event("rest:gone", "my old message")
    # Held back by an earlier run; the patron has been erased since.
    asyncio.run(_publish(f"{queue}.held", [json.dumps(held.data).encode()]))
    with session_scope(crm) as session:
        _mark_erased(session=session, senders=["rest:gone"], at=utcnow())
    asyncio.run(_publish(queue, [json.dumps(user_event("rest:here", "hello").data).encode()]))
    _run_consumer_until(crm, crm_url, queue, lambda: len(interactions(crm)) >= 1)
    assert [r.text for r in interactions(crm)] == ["hello"]
    assert asyncio.run(_queue_depth(f"{queue}.held")) == 0
