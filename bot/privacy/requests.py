"""Erasure a patron asked for in the chat: noted with the ingested turn, carried out right after."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.database import describe_error, session_scope
from bot.crm.models import AuditLog, Patron
from bot.crm.models.base import utcnow
from bot.crm.patrons import PatronKey, PatronNotFoundError, find_patron_ids
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.erasure import erase_patron
from bot.privacy.records import rasa_sender_ids

log = logging.getLogger(__name__)

# The reply the bot gives when the patron confirmed "delete my data" (actions/privacy.py): the request.
# Rasa publishes a reply once, with the turn that asked; a slot it would copy into every new session.
REQUEST_RESPONSE = "utter_delete_scheduled"
# The audit entry that records the request, in the same transaction as the ingested turn, so a
# request survives a crash of the ingester; erasing the patron detaches it (patron_id becomes NULL).
PENDING_REASON = "the patron confirmed in the chat that their data be deleted"


def requested_in(events: Sequence[object]) -> dict[str, float]:
    """The conversations whose events include a confirmed erasure request (the bot's reply to it), and
    the time of that reply: once the tracker store holds an event that late, it holds the whole turn."""
    requests: dict[str, float] = {}
    for event in events:
        data = getattr(event, "data", {})
        if not isinstance(data, dict) or data.get("event") != "bot":
            continue
        metadata = data.get("metadata")
        if isinstance(metadata, dict) and metadata.get("utter_action") == REQUEST_RESPONSE:
            sender = str(getattr(event, "sender_id", ""))
            at = data.get("timestamp")
            at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else 0.0
            requests[sender] = max(at, requests.get(sender, 0.0))
    return requests


def note_requests(*, session: Session, keys: dict[PatronKey, float]) -> int:
    """Record each request against the patron it came from (their channel identity, as the ingester
    keyed them) with the time of the turn that asked; returns how many were noted."""
    found = find_patron_ids(session=session, keys=keys)
    turns: dict[int, float] = {}
    for key, patron_id in found.items():
        turns[patron_id] = max(keys[key], turns.get(patron_id, 0.0))
    for patron_id, turn_at in turns.items():
        log_access(
            session=session,
            actor="patron",
            action="erase",
            patron_id=patron_id,
            reason=PENDING_REASON,
            detail={"turn_at": turn_at},
        )
    return len(turns)


# Rasa writes a turn's events to its event broker and then to its tracker store (rasa_server/stores.py
# keeps Rasa's order; a RabbitMQ broker publishes from a thread of its own). The ingester learns of a
# request from the broker, so it may see the turn before the tracker store has it; a SQLite tracker store
# that another process has locked waits up to 30 s. A request is carried out once the tracker store
# holds the turn that asked (an event of the conversation as late as the bot's reply), so that turn is
# erased with the rest; at least SETTLE after it was noted, and at most MAX_SETTLE (a tracker store that
# never gets it, such as Rasa's in-memory one, or a clock that differs, must not hold an erasure back).
SETTLE = dt.timedelta(seconds=2)
MAX_SETTLE = dt.timedelta(seconds=60)
# Another turn of the conversation in flight during the erasure (the patron wrote again at once) can
# still land in the tracker store afterwards, with times from before it: swept up this long after.
RESIDUE_SWEEP = dt.timedelta(seconds=35)


@dataclass(frozen=True)
class PendingRequest:
    """A patron's request waiting to be carried out: when it was noted, and the turn's time."""

    noted_at: dt.datetime
    turn_at: float


def _requests(*, session: Session) -> dict[int, PendingRequest]:
    """Each patron with a request waiting to be carried out (their latest request)."""
    rows = session.execute(
        select(AuditLog.patron_id, AuditLog.at, AuditLog.detail).where(
            AuditLog.action == "erase", AuditLog.reason == PENDING_REASON, AuditLog.patron_id.is_not(None)
        )
    ).all()
    requests: dict[int, PendingRequest] = {}
    for patron_id, at, detail in rows:
        turn_at = (detail or {}).get("turn_at") if isinstance(detail, dict) else None
        request = PendingRequest(
            noted_at=_utc(at), turn_at=float(turn_at) if isinstance(turn_at, int | float) else 0.0
        )
        latest = requests.get(int(patron_id))
        if latest is None or request.noted_at > latest.noted_at:
            requests[int(patron_id)] = request
    return requests


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def pending_patrons(*, session: Session) -> list[int]:
    """The patrons whose requests wait to be carried out, settled or not."""
    return sorted(_requests(session=session))


@dataclass(frozen=True)
class ErasureRound:
    """What one `carry_out` did: patrons erased, and whether requests still wait (not yet settled, or
    failed and to be retried); the erased patrons' conversation ids and when, for `ResidueSweeps`
    (kept in memory only, never logged)."""

    erased: int
    waiting: bool
    senders: frozenset[str] = field(default=frozenset(), repr=False)
    at: float = field(default=0.0, compare=False)


def _settled(
    *,
    session: Session,
    patron_id: int,
    request: PendingRequest,
    stores: Sequence[RasaEventStore],
    now: dt.datetime,
) -> bool:
    """Whether the request can be carried out now (see SETTLE)."""
    age = now - request.noted_at
    if age < SETTLE:
        return False
    if age >= MAX_SETTLE or not request.turn_at:
        return True
    patron = session.get(Patron, patron_id)
    if patron is None:
        return True
    senders = rasa_sender_ids(session=session, patron=patron)
    return all(store.holds_since(senders, request.turn_at) is not False for store in stores)


def carry_out(
    *,
    crm: Engine,
    crm_url: str,
    rasa_stores: Sequence[RasaEventStore],
    settle: dt.timedelta | None = None,
) -> ErasureRound:
    """Erase every patron whose request is settled (see SETTLE; tests may give a plain `settle` time
    instead); a failure is logged and retried next time."""
    now = utcnow()
    with session_scope(crm) as session:
        requests = _requests(session=session)
        patron_ids = sorted(
            patron_id
            for patron_id, request in requests.items()
            if (
                request.noted_at <= now - settle
                if settle is not None
                else _settled(
                    session=session, patron_id=patron_id, request=request, stores=rasa_stores, now=now
                )
            )
        )
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
    return ErasureRound(erased=erased, waiting=waiting, senders=frozenset(senders), at=utcnow().timestamp())


class ResidueSweeps:
    """The conversations of patrons just erased, swept RESIDUE_SWEEP later for a turn that was in flight
    during the erasure and landed in the tracker store after it (the ingester's, in memory only)."""

    def __init__(self, *, delay: dt.timedelta = RESIDUE_SWEEP) -> None:
        self.delay = delay.total_seconds()
        self._due: list[tuple[float, frozenset[str], float]] = []  # (due, senders, erased at)

    def add(self, erasure: ErasureRound) -> None:
        if erasure.senders:
            self._due.append((time.monotonic() + self.delay, erasure.senders, erasure.at))

    def run_due(self, rasa_stores: Sequence[RasaEventStore]) -> int:
        """Delete what the due conversations left in the tracker store from before their erasure."""
        now, swept = time.monotonic(), 0
        due = [entry for entry in self._due if entry[0] <= now]
        self._due = [entry for entry in self._due if entry[0] > now]
        for _, senders, erased_at in due:
            swept += sum(store.delete_before(senders, erased_at) for store in rasa_stores)
        if swept:
            log.info("deleted %d events that reached the tracker store after their patron's erasure", swept)
        return swept
