"""Signed-in console sessions, kept in the CRM (so every console process knows them): the browser holds
a random token in an HttpOnly cookie, the CRM its SHA-256; each session has its own CSRF token."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bot.crm.models import StaffSession, StaffUser, utcnow

COOKIE = "patronbot_console"
# A session ends after this long without a request, and in any case after MAX_AGE.
IDLE = dt.timedelta(hours=8)
MAX_AGE = dt.timedelta(days=7)
# last_seen_at is written at most this often (not on every request).
TOUCH_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class Signed:
    """A live session: who is signed in, and the CSRF token their unsafe requests must send back."""

    staff_id: int
    username: str
    role: str
    language: str | None
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(*, session: Session, staff: StaffUser, now: dt.datetime | None = None) -> tuple[str, Signed]:
    """A new session for `staff`: (the cookie's token, the session)."""
    at = now or utcnow()
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            token_hash=_digest(token),
            staff_user_id=staff.id,
            csrf_token=csrf,
            created_at=at,
            last_seen_at=at,
            expires_at=at + MAX_AGE,
        )
    )
    session.execute(delete(StaffSession).where(StaffSession.expires_at < at))
    session.flush()
    return token, Signed(int(staff.id), str(staff.username), str(staff.role), staff.language, csrf)


def read_session(*, session: Session, token: str | None, now: dt.datetime | None = None) -> Signed | None:
    """The live session the cookie's token opens, or None (no token, unknown, expired, idle too long, or
    its staff member deactivated)."""
    if not token or len(token) > 200:
        return None
    at = now or utcnow()
    found = session.execute(
        select(StaffSession, StaffUser)
        .join(StaffUser, StaffUser.id == StaffSession.staff_user_id)
        .where(StaffSession.token_hash == _digest(token))
    ).first()
    if found is None:
        return None
    row, staff = found
    if not staff.active or row.expires_at <= at or row.last_seen_at + IDLE <= at:
        return None
    if at - row.last_seen_at >= TOUCH_EVERY:
        session.execute(update(StaffSession).where(StaffSession.id == row.id).values(last_seen_at=at))
    return Signed(int(staff.id), str(staff.username), str(staff.role), staff.language, str(row.csrf_token))


def close_session(*, session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(StaffSession).where(StaffSession.token_hash == _digest(token)))


def csrf_matches(signed: Signed, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), signed.csrf_token.encode())
