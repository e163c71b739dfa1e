"""Platform updates handled once: recorded before the platform is answered, claimed by one process."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bot.crm.database import session_scope
from bot.crm.models import ChannelUpdate, utcnow
from bot.crm.turn_effects import forget_effects

# How long the process that recorded an update holds it before another may take it over (it died).
LEASE = dt.timedelta(seconds=60)
# Handled updates are remembered this long (Telegram and WeChat redeliver within hours, not days).
REMEMBER = dt.timedelta(hours=48)


def record_update(*, engine: Engine, channel: str, key: str, sender: str | None, body: str) -> bool:
    """Record an update as received and claimed by this process; False if it was recorded before
    (a redelivery, or a concurrent duplicate): then it is not handled again. Committed on return, so
    the platform may be answered 200."""
    now = utcnow()
    try:
        with session_scope(engine) as session:
            session.add(
                ChannelUpdate(
                    channel=channel,
                    update_key=key,
                    sender=sender,
                    body=body,
                    received_at=now,
                    claimed_until=now + LEASE,
                )
            )
    except IntegrityError:
        return False
    return True


def mark_handled(*, engine: Engine, channel: str, key: str) -> None:
    """The update's turn is done: keep only its key (to recognise a redelivery), not its content."""
    with session_scope(engine) as session:
        session.execute(
            update(ChannelUpdate)
            .where(ChannelUpdate.channel == channel, ChannelUpdate.update_key == key)
            .values(handled_at=utcnow(), body=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )


def claim_abandoned(*, engine: Engine, channel: str, limit: int = 50) -> list[tuple[str, str]]:
    """Updates recorded but not handled whose holder's lease ran out (its process died), claimed for
    this process, oldest first: (key, body)."""
    now = utcnow()
    claimed: list[tuple[str, str]] = []
    with session_scope(engine) as session:
        query = (
            select(ChannelUpdate.update_key, ChannelUpdate.body)
            .where(
                ChannelUpdate.channel == channel,
                ChannelUpdate.handled_at.is_(None),
                or_(ChannelUpdate.claimed_until.is_(None), ChannelUpdate.claimed_until < now),
            )
            .order_by(ChannelUpdate.received_at)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for key, body in session.execute(query).all():
            taken = session.execute(
                update(ChannelUpdate)
                .where(
                    ChannelUpdate.channel == channel,
                    ChannelUpdate.update_key == key,
                    ChannelUpdate.handled_at.is_(None),
                    or_(ChannelUpdate.claimed_until.is_(None), ChannelUpdate.claimed_until < now),
                )
                .values(claimed_until=now + LEASE)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1 and body is not None:  # type: ignore[attr-defined]
                claimed.append((str(key), str(body)))
    return claimed


def forget_handled(*, engine: Engine, older_than: dt.timedelta = REMEMBER) -> int:
    """Delete handled updates received longer ago than `older_than`; returns how many."""
    with session_scope(engine) as session:
        result = session.execute(
            delete(ChannelUpdate)
            .where(ChannelUpdate.handled_at.is_not(None), ChannelUpdate.received_at < utcnow() - older_than)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def forget_old(*, engine: Engine) -> int:
    """What no turn will need again: handled updates after 48 hours, turn effects after a week."""
    return forget_handled(engine=engine) + forget_effects(engine=engine)


def renew_claims(*, engine: Engine, channel: str, keys: list[str]) -> None:
    """Keep holding updates this process is still handling (a queue of turns may outlast LEASE), so no
    other process takes them over while it is alive."""
    if not keys:
        return
    with session_scope(engine) as session:
        session.execute(
            update(ChannelUpdate)
            .where(
                ChannelUpdate.channel == channel,
                ChannelUpdate.update_key.in_(keys),
                ChannelUpdate.handled_at.is_(None),
            )
            .values(claimed_until=utcnow() + LEASE)
            .execution_options(synchronize_session=False)
        )
