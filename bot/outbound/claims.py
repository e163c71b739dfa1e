"""A sender process's hold on the outbox messages it claimed: claims renewed while it lives, and the
moment each request leaves (in flight), after which a message cut off by a crash is never sent again.

A channel whose sender first waits for its rate calls `request_leaving()` when the request is about to
go (see `announcing`); the dispatcher then marks the message in flight. So a process killed while its
messages wait for their slot leaves them to another process once its claims run out (LEASE), and only
the requests really under way at the kill become unknown outcomes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm.attributes import set_committed_value

from bot.crm.database import session_scope
from bot.crm.models import OutboxMessage, utcnow

# A process holds the messages it claimed this long, renewed every RENEW seconds while it sends; if it
# dies, another sends them once the claim has run out.
LEASE = dt.timedelta(seconds=15)
RENEW = 5.0

_S = TypeVar("_S", bound=Callable[..., object])
# Set by the dispatcher around each send: marks the message being sent in flight.
_LEAVING: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar("outbox_leaving", default=None)
_ANNOUNCES = "_patronbot_announces_requests"


class ClaimLostError(Exception):
    """This process's claim on a message ran out and may be another's: the message is not sent here."""


def announcing(send: _S) -> _S:
    """Mark a channel's sender as one that calls `request_leaving()` just before each request leaves."""
    setattr(send, _ANNOUNCES, True)
    return send


def announces(send: Callable[..., object]) -> bool:
    """Whether a channel's sender calls `request_leaving()` itself."""
    return bool(getattr(send, _ANNOUNCES, False))


async def request_leaving() -> None:
    """Called by a channel's sender when its request is about to leave (after waiting for its slot):
    the message being sent is marked in flight. Raises ClaimLostError if the claim is no longer ours."""
    leaving = _LEAVING.get()
    if leaving is not None:
        await leaving()


@contextlib.contextmanager
def on_leaving(callback: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """Within this block (one message's send), `request_leaving()` calls `callback`."""
    token = _LEAVING.set(callback)
    try:
        yield
    finally:
        _LEAVING.reset(token)


def mark_in_flight(*, engine: Engine, message: OutboxMessage) -> bool:
    """Note that the request for `message` is about to go out; False (nothing noted) when the message is
    no longer pending under this process's claim (the `claimed_until` it wrote)."""
    with session_scope(engine) as session:
        marked = session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message.id,
                OutboxMessage.status == "pending",
                OutboxMessage.claimed_until == message.claimed_until,
            )
            .values(in_flight_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(marked.rowcount == 1)  # type: ignore[attr-defined]


def renew_claims(*, engine: Engine, messages: list[OutboxMessage]) -> int:
    """Extend this process's claims on `messages` by LEASE (those it still holds); returns how many."""
    until = utcnow() + LEASE
    renewed = 0
    by_claim: dict[dt.datetime, list[int]] = {}
    for message in messages:
        if message.claimed_until is not None:
            by_claim.setdefault(message.claimed_until, []).append(int(message.id))
    with session_scope(engine) as session:
        for claimed_until, ids in by_claim.items():
            result = session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id.in_(ids),
                    OutboxMessage.status == "pending",
                    OutboxMessage.claimed_until == claimed_until,
                )
                .values(claimed_until=until)
                .execution_options(synchronize_session=False)
            )
            renewed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    for message in messages:  # rows not renewed were sent, given back, or are no longer ours
        if message.claimed_until is not None:
            set_committed_value(message, "claimed_until", until)
    return renewed
