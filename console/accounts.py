"""Staff accounts for the console: argon2 password hashes, and sign-in limited per account and address."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bot.crm.models import LoginAttempt, StaffUser, utcnow
from bot.crm.models.staff import STAFF_ROLES

HASHER = PasswordHasher()
MIN_PASSWORD_CHARS = 10
# Failed sign-ins allowed in WINDOW, per account and per address; then sign-in waits.
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20
WINDOW = dt.timedelta(minutes=15)
KEEP_ATTEMPTS = dt.timedelta(days=1)
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = HASHER.hash("not a password anyone has")


class StaffError(Exception):
    """A staff account that cannot be made or changed as asked; the message says why, in one line."""


@dataclass(frozen=True)
class SignIn:
    """What came of a sign-in: the staff member, or why not (`wrong`, `limited`), and any wait."""

    staff: StaffUser | None
    refusal: str | None = None
    retry_after: int = 0


def add_staff(
    *, session: Session, username: str, role: str, password: str, display_name: str | None = None
) -> StaffUser:
    """Create a staff member who can sign in, or give a name the command line made (`--staff NAME`) a
    password and role. An existing account with a password is refused: use `set_password`."""
    name = username.strip()
    if not name or len(name) > 100 or any(character.isspace() for character in name):
        raise StaffError("a username is 1-100 characters without spaces")
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}, not {role!r}")
    _check_password(password)
    staff = session.execute(select(StaffUser).where(StaffUser.username == name)).scalar_one_or_none()
    if staff is not None and staff.password_hash is not None:
        raise StaffError(
            f"staff member {name!r} exists already: `patronbot staff password {name}` changes the password"
        )
    if staff is None:
        staff = StaffUser(username=name)
        session.add(staff)
    staff.role = role
    staff.active = True
    staff.display_name = display_name or staff.display_name
    staff.password_hash = HASHER.hash(password)
    session.flush()
    return staff


def set_password(*, session: Session, username: str, password: str) -> StaffUser:
    _check_password(password)
    staff: StaffUser | None = session.execute(
        select(StaffUser).where(StaffUser.username == username)
    ).scalar_one_or_none()
    if staff is None:
        raise StaffError(f"no staff member {username!r}: `patronbot staff add` makes one")
    staff.password_hash = HASHER.hash(password)
    session.flush()
    return staff


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise StaffError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > 1000:
        raise StaffError("a password has at most 1,000 characters")


def sign_in(
    *, session: Session, username: str, password: str, address: str, now: dt.datetime | None = None
) -> SignIn:
    """Check a password. Too many recent failures for the account or the address refuse it before the
    password is checked; every attempt is recorded (and a day's worth kept)."""
    at = now or utcnow()
    name = username.strip()[:100]
    since = at - WINDOW
    failures = (
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.succeeded.is_(False), LoginAttempt.at > since)
    )
    by_account = session.execute(failures.where(LoginAttempt.username == name)).scalar_one()
    by_address = session.execute(failures.where(LoginAttempt.address == address[:64])).scalar_one()
    if by_account >= MAX_FAILURES_PER_ACCOUNT or by_address >= MAX_FAILURES_PER_ADDRESS:
        oldest = session.execute(
            select(func.min(LoginAttempt.at)).where(
                LoginAttempt.succeeded.is_(False),
                LoginAttempt.at > since,
                (LoginAttempt.username == name) | (LoginAttempt.address == address[:64]),
            )
        ).scalar_one()
        wait = int(((oldest or at) + WINDOW - at).total_seconds()) + 1
        return SignIn(staff=None, refusal="limited", retry_after=max(wait, 1))
    staff = session.execute(select(StaffUser).where(StaffUser.username == name)).scalar_one_or_none()
    good = _verify(staff.password_hash if staff is not None and staff.active else None, password)
    session.add(LoginAttempt(username=name, address=address[:64], succeeded=good, at=at))
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < at - KEEP_ATTEMPTS))
    session.flush()
    return SignIn(staff=staff) if good else SignIn(staff=None, refusal="wrong")


def _verify(stored: str | None, password: str) -> bool:
    try:
        return HASHER.verify(stored or _DUMMY_HASH, password[:1000]) and stored is not None
    except (VerificationError, InvalidHashError):
        return False
