"""The right of access: everything held about a patron, from the CRM and Rasa, as one document."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.models import (
    Patron,
    StaffUser,
    utcnow,
)
from bot.crm.patrons import resolve_patron
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.records import belongs, patron_tables, rasa_sender_ids

EXPORT_FORMAT = "patronbot-patron-export/1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):  # a stored vector (patron_interest): its bytes, readable as text
        return base64.b64encode(value).decode("ascii")
    return value


def _rows(session: Session, table: Table, patron_id: int, senders: set[str]) -> list[dict[str, Any]]:
    order = list(table.primary_key.columns)
    result = session.execute(select(table).where(belongs(table, patron_id, senders)).order_by(*order))
    return [{key: _jsonable(value) for key, value in row._mapping.items()} for row in result]


def export_patron(
    *,
    session: Session,
    patron_ref: str,
    actor: str,
    reason: str,
    rasa_stores: list[RasaEventStore],
    staff_user: StaffUser | None = None,
) -> dict[str, Any]:
    """One JSON-ready document with everything held about a patron, in every table and Rasa store."""
    patron = resolve_patron(session=session, ref=patron_ref)
    patron_table: Table = Patron.__table__
    profile = session.execute(select(patron_table).where(patron_table.c.id == patron.id)).one()
    senders = rasa_sender_ids(session=session, patron=patron)
    document: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "exported_at": utcnow().isoformat(),
        "patron": {key: _jsonable(value) for key, value in profile._mapping.items()},
        "tables": {table.name: _rows(session, table, patron.id, senders) for table in patron_tables()},
        "rasa": {store.name: store.events_for(senders) for store in rasa_stores},
    }
    log_access(
        session=session,
        actor=actor,
        action="export",
        patron_id=patron.id,
        reason=reason,
        staff_user=staff_user,
        detail={"tables": {name: len(rows) for name, rows in document["tables"].items()}},
    )
    return document
