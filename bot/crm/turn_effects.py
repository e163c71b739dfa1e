"""Each patron message's records once: a turn run again after a kill finds what its first run wrote."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import cast

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import TurnEffect, utcnow

# A turn is run again when its channel update is taken over (a lease of a minute, or a restart after an
# outage); a week covers a long weekend with the bot down.
REMEMBER = dt.timedelta(days=7)


def once_per_message(
    *, session: Session, sender: str, message_id: str, action: str, record: Callable[[Session], int]
) -> int:
    """`record`'s result, run in `session` only the first time `action` runs for this message; a run
    again gets the first run's result. Two runs at once: the second's insert fails on the key, and its
    transaction (with what `record` wrote) rolls back."""
    done = session.get(TurnEffect, (sender, message_id, action))
    if done is not None:
        return int(cast(int, done.result))  # the column is NOT NULL
    result = record(session)
    session.add(TurnEffect(sender=sender, message_id=message_id, action=action, result=result))
    session.flush()
    return result


def forget_effects(*, engine: Engine, older_than: dt.timedelta = REMEMBER) -> int:
    """Delete turn effects recorded longer ago than `older_than`; returns how many."""
    with session_scope(engine) as session:
        result = session.execute(
            delete(TurnEffect)
            .where(TurnEffect.created_at < utcnow() - older_than)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
