"""Whether a patron can be reached on a channel: they left the WeChat account or blocked the Telegram bot."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import ChannelIdentity, Patron


def set_reachable(*, engine: Engine, channel: str, external_id: str, reachable: bool) -> int:
    """Mark the patron behind a channel's id reachable or not; how many patrons changed (0 when the CRM
    does not know them yet, or they already were)."""
    with session_scope(engine) as session:
        patrons = select(ChannelIdentity.patron_id).where(
            ChannelIdentity.channel == channel, ChannelIdentity.external_id == external_id
        )
        result = session.execute(
            update(Patron)
            .where(Patron.id.in_(patrons), Patron.reachable.is_not(reachable))
            .values(reachable=reachable)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
