"""Erasure a patron asked for in the chat: noted with the ingested turn, carried out right after."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.database import describe_error, session_scope
from bot.crm.models import AuditLog
from bot.crm.models.base import utcnow
from bot.crm.patrons import PatronKey, PatronNotFoundError, find_patron_ids
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.erasure import erase_patron

log = logging.getLogger(__name__)

# The reply the bot gives when the patron confirmed "delete my data" (actions/privacy.py): the request.
# Rasa publishes a reply once, with the turn that asked; a slot it would copy into every new session.
REQUEST_RESPONSE = "utter_delete_scheduled"
# The audit entry that records the request, in the same transaction as the ingested turn, so a
# request survives a crash of the ingester; erasing the patron detaches it (patron_id becomes NULL).
PENDING_REASON = "the patron confirmed in the chat that their data be deleted"


def requested_in(events: Sequence[object]) -> set[str]:
    """The conversations whose events include a confirmed erasure request (the bot's reply to it)."""
    senders = set()
    for event in events:
        data = getattr(event, "data", {})
        if not isinstance(data, dict) or data.get("event") != "bot":
            continue
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and metadata.get("utter_action") == REQUEST_RESPONSE:
            senders.add(str(getattr(event, "sender_id", "")))
    return senders


def note_requests(*, session: Session, keys: set[PatronKey]) -> int:
    """Record each request against the patron it came from (their channel identity, as the ingester
    keyed them); returns how many were noted."""
    found = find_patron_ids(session=session, keys=keys)
    for patron_id in set(found.values()):
        log_access(
            session=session, actor="patron", action="erase", patron_id=patron_id, reason=PENDING_REASON
        )
    return len(set(found.values()))


# Rasa writes a turn's events to its event broker and then to its tracker store (rasa_server/stores.py
# keeps Rasa's order; a RabbitMQ broker publishes from a thread of its own). The ingester learns of a
# request from the broker, so it may see the turn before the tracker store has it. A request is carried
# out once this long has passed since it was noted: by then the tracker store holds the turn that asked,
# and that turn is erased with the rest.
SETTLE = dt.timedelta(seconds=2)


def _requests(*, session: Session) -> dict[int, dt.datetime]:
    """Each patron with a request waiting to be carried out, and when their latest was noted."""
    rows = session.execute(
        select(AuditLog.patron_id, func.max(AuditLog.at))
        .where(AuditLog.action == "erase", AuditLog.reason == PENDING_REASON, AuditLog.patron_id.is_not(None))
        .group_by(AuditLog.patron_id)
    ).all()
    return {int(patron_id): _utc(at) for patron_id, at in rows}


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def pending_patrons(*, session: Session) -> list[int]:
    """The patrons whose requests wait to be carried out, settled or not."""
    return sorted(_requests(session=session))


@dataclass(frozen=True)
class ErasureRound:
    """What one `carry_out` did: patrons erased, and whether requests still wait (not yet settled, or
    failed and to be retried)."""

    erased: int
    waiting: bool
    # The erased patrons' Rasa conversation ids, which the ingester forgets at once (never logged).
    senders: frozenset[str] = field(default=frozenset(), repr=False)


def carry_out(
    *, crm: Engine, crm_url: str, rasa_stores: Sequence[RasaEventStore], settle: dt.timedelta = SETTLE
) -> ErasureRound:
    """Erase every patron whose latest request was noted at least `settle` ago; a failure is logged
    and retried next time."""
    with session_scope(crm) as session:
        requests = _requests(session=session)
    cutoff = utcnow() - settle
    patron_ids = sorted(patron_id for patron_id, at in requests.items() if at <= cutoff)
    waiting = len(patron_ids) < len(requests)
    erased = 0
    senders: set[str] = set()
    for patron_id in patron_ids:
        try:
            with session_scope(crm) as session:
                report = erase_patron(
                    session=session,
                    patron_ref=str(patron_id),
                    actor="patron",
                    reason="erasure the patron asked for in the chat",
                    rasa_stores=list(rasa_stores),
                )
        except PatronNotFoundError:
            continue
        except SQLAlchemyError as error:
            log.error("erasure failed, will retry: %s", describe_error(error, crm_url))
            waiting = True
            continue
        erased += 1
        senders |= report.senders
    if erased:
        log.info("erased %d patron(s) at their request", erased)
    return ErasureRound(erased=erased, waiting=waiting, senders=frozenset(senders))
