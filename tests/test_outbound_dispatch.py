"""The outbox dispatcher: each message claimed once, sent in order, and every attempt recorded."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import DeliveryAttempt, OutboxMessage, Patron, utcnow
from bot.outbound.dispatcher import (
    MAX_ATTEMPTS,
    SENT,
    Attempt,
    Dispatcher,
    claim_due,
    mark_in_flight,
    record_attempt,
)
from bot.outbound.outbox import send


def _patron(crm: Engine) -> int:
    with session_scope(crm) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        return int(patron.id)


def _queue(crm: Engine, patron_id: int, recipient: str, *texts: str) -> list[int]:
    with session_scope(crm) as session:
        return [
            send(
                session=session,
                channel="telegram",
                recipient=recipient,
                text=text,
                produced_by="staff:amy",
                patron_id=patron_id,
            )
            for text in texts
        ]


def _status(crm: Engine, outbox_id: int) -> str:
    with Session(crm, future=True) as session:
        message = session.get(OutboxMessage, outbox_id)
        assert message is not None
        return str(message.status)


def _attempts(crm: Engine) -> list[tuple[int, str, str | None]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(DeliveryAttempt.outbox_id, DeliveryAttempt.outcome, DeliveryAttempt.reason).order_by(
                DeliveryAttempt.id
            )
        ).all()
    return [(int(a), str(b), c) for a, b, c in rows]


def test_blocked_marks_the_patron_unreachable_and_is_not_retried(crm: Engine) -> None:
    patron_id = _patron(crm)
    (first,) = _queue(crm, patron_id, "telegram:1", "hello")
    calls: list[int] = []

    async def blocked(message: OutboxMessage) -> Attempt:
        calls.append(int(message.id))
        return Attempt("blocked", reason="http_403")

    async def scenario() -> None:
        dispatcher = Dispatcher(engine=crm)
        dispatcher.register("telegram", blocked)
        assert await dispatcher.drain_once() == 0
        assert await dispatcher.drain_once() == 0

    asyncio.run(scenario())
    assert calls == [first]  # once: a refusal for good is not tried again
    assert _status(crm, first) == "failed"
    with Session(crm, future=True) as session:
        patron = session.get(Patron, patron_id)
        assert patron is not None
        assert patron.reachable is False
    assert _attempts(crm) == [(first, "blocked", "http_403")]


@pytest.mark.parametrize(("outcome", "status"), [("unknown", "unknown"), ("skipped", "skipped")])
def test_an_unknown_outcome_or_a_skip_is_recorded_and_never_sent_again(
    crm: Engine, outcome: str, status: str
) -> None:
    patron_id = _patron(crm)
    first, second = _queue(crm, patron_id, "telegram:2", "one", "two")
    calls: list[str] = []

    async def sender(message: OutboxMessage) -> Attempt:
        calls.append(str(message.text))
        return Attempt(outcome, reason="timeout" if outcome == "unknown" else "window_closed")

    async def scenario() -> None:
        dispatcher = Dispatcher(engine=crm)
        dispatcher.register("telegram", sender)
        for _ in range(3):
            await dispatcher.drain_once()

    asyncio.run(scenario())
    # Each attempted once; the second only after the first was settled, never the first again.
    assert calls == ["one", "two"]
    assert (_status(crm, first), _status(crm, second)) == (status, status)


def test_a_retry_waits_its_time_keeps_the_order_and_gives_up_after_max_attempts(crm: Engine) -> None:
    patron_id = _patron(crm)
    first, second = _queue(crm, patron_id, "telegram:3", "one", "two")
    (other,) = _queue(crm, patron_id, "telegram:4", "elsewhere")
    sent: list[str] = []

    async def busy_first(message: OutboxMessage) -> Attempt:
        if message.text == "one":
            return Attempt("retry", reason="http_429", retry_after=30)
        sent.append(str(message.text))
        return SENT

    async def scenario() -> None:
        dispatcher = Dispatcher(engine=crm)
        dispatcher.register("telegram", busy_first)
        await dispatcher.drain_once()
        await dispatcher.drain_once()

    asyncio.run(scenario())
    # "two" waits behind "one" (the patron never gets them out of order); another chat goes on.
    assert sent == ["elsewhere"]
    assert _status(crm, other) == "delivered"
    with Session(crm, future=True) as session:
        waiting = session.get(OutboxMessage, first)
        assert waiting is not None
        assert waiting.status == "pending"
        assert waiting.next_attempt_at is not None
        assert dt.timedelta(seconds=25) < waiting.next_attempt_at - utcnow() <= dt.timedelta(seconds=30)
        message = session.get(OutboxMessage, first)
        assert message is not None
        session.expunge(message)
    assert _status(crm, second) == "pending"
    for _ in range(MAX_ATTEMPTS - 1):
        record_attempt(engine=crm, message=message, attempt=Attempt("retry", reason="http_502"))
        message.attempts = int(message.attempts or 0) + 1
    assert _status(crm, first) == "failed"


def test_two_dispatchers_never_send_the_same_message_twice(crm: Engine) -> None:
    """Two processes drain one outbox: every message goes exactly once (a lease in the row, and SKIP
    LOCKED on PostgreSQL)."""
    patron_id = _patron(crm)
    ids = [
        outbox_id
        for chat in range(20)
        for outbox_id in _queue(crm, patron_id, f"telegram:{chat}", *(f"m{chat}-{n}" for n in range(3)))
    ]
    sent: list[int] = []
    lock = threading.Lock()

    async def slow(message: OutboxMessage) -> Attempt:
        await asyncio.sleep(0.001)
        with lock:
            sent.append(int(message.id))
        return SENT

    def worker() -> None:
        async def drain() -> None:
            dispatcher = Dispatcher(engine=crm)
            dispatcher.register("telegram", slow)
            for _ in range(6):
                await dispatcher.drain_once()

        asyncio.run(drain())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sent) == sorted(ids)
    assert all(_status(crm, outbox_id) == "delivered" for outbox_id in ids)


def test_a_claim_is_taken_over_once_its_lease_ran_out_and_holds_filters_recipients(crm: Engine) -> None:
    patron_id = _patron(crm)
    (here,) = _queue(crm, patron_id, "telegram:1", "a")
    (there,) = _queue(crm, patron_id, "telegram:2", "b")
    claimed = claim_due(engine=crm, channel="telegram", holds=lambda recipient: recipient == "telegram:1")
    assert [int(m.id) for m in claimed] == [here]
    # Claimed by a process that then died: nobody else takes it until the lease runs out.
    assert [int(m.id) for m in claim_due(engine=crm, channel="telegram")] == [there]
    with session_scope(crm) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == here)
            .values(claimed_until=utcnow() - dt.timedelta(seconds=1))
        )
    assert [int(m.id) for m in claim_due(engine=crm, channel="telegram")] == [here]


def test_a_message_whose_sender_died_in_flight_is_unknown_and_not_sent_again(crm: Engine) -> None:
    patron_id = _patron(crm)
    first, second = _queue(crm, patron_id, "telegram:5", "under way", "after it")
    claimed = claim_due(engine=crm, channel="telegram")
    assert [int(m.id) for m in claimed] == [first, second]
    mark_in_flight(engine=crm, message=claimed[0])
    # The process dies here, the request out; its claims run out.
    with session_scope(crm) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([first, second]))
            .values(claimed_until=utcnow() - dt.timedelta(seconds=1))
        )
    again = claim_due(engine=crm, channel="telegram")
    assert _status(crm, first) == "unknown"
    assert _attempts(crm) == [(first, "unknown", "sender_died_in_flight")]
    # The conversation waits for the next look, then goes on with the message never under way.
    assert again == []
    assert [int(m.id) for m in claim_due(engine=crm, channel="telegram")] == [second]


def test_a_sent_message_is_no_longer_in_flight(crm: Engine) -> None:
    patron_id = _patron(crm)
    (only,) = _queue(crm, patron_id, "telegram:6", "hello")
    sent: list[int] = []

    async def channel(message: OutboxMessage) -> Attempt:
        with Session(crm, future=True) as session:
            row = session.get(OutboxMessage, message.id)
            assert row is not None
            assert row.in_flight_at is not None  # marked before the request
        sent.append(int(message.id))
        return SENT

    dispatcher = Dispatcher(engine=crm)
    dispatcher.register("telegram", channel)
    assert asyncio.run(dispatcher.drain_once()) == 1
    assert sent == [only]
    with Session(crm, future=True) as session:
        row = session.get(OutboxMessage, only)
        assert row is not None
        assert row.in_flight_at is None
        assert row.status == "delivered"
