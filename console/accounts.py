"""Staff accounts for the console: argon2 password hashes, sign-in limited per account and address, and
the admin's changes (role, deactivation, password reset), which never leave the console without an admin."""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bot.crm.models import LoginAttempt, StaffSession, StaffUser, utcnow
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


class StaffNotFoundError(StaffError):
    """No staff member with that id or name."""


class StaffConflictError(StaffError):
    """The change is refused by the accounts as they are (a name taken, the last admin, oneself)."""


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
    if not name or len(name) > 100 or any(c.isspace() or _is_control(c) for c in name):
        raise StaffError("a username is 1-100 characters without spaces or control characters")
    if display_name is not None and (len(display_name) > 200 or any(_is_control(c) for c in display_name)):
        raise StaffError("a display name is at most 200 characters, without control characters")
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}, not {role!r}")
    _check_password(password)
    staff = session.execute(select(StaffUser).where(StaffUser.username == name)).scalar_one_or_none()
    if staff is not None and staff.password_hash is not None:
        raise StaffConflictError(
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


def _is_control(character: str) -> bool:
    # What PostgreSQL cannot store (NUL) and what no name holds: C0 and C1 control characters.
    return unicodedata.category(character) == "Cc"


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


@dataclass(frozen=True)
class StaffMember:
    """A staff account as the staff page lists it; `last_sign_in_at` is None when none is on record
    (sessions and sign-in attempts are kept for days, not for ever)."""

    id: int
    username: str
    display_name: str | None
    role: str
    active: bool
    can_sign_in: bool
    last_sign_in_at: dt.datetime | None


def list_staff(*, session: Session) -> list[StaffMember]:
    """Every staff account by name, with the last sign-in on record (a session opened, or a sign-in)."""
    opened: dict[int, dt.datetime] = {
        int(staff_id): at
        for staff_id, at in session.execute(
            select(StaffSession.staff_user_id, func.max(StaffSession.created_at)).group_by(
                StaffSession.staff_user_id
            )
        )
    }
    signed: dict[str, dt.datetime] = {
        str(username): at
        for username, at in session.execute(
            select(LoginAttempt.username, func.max(LoginAttempt.at))
            .where(LoginAttempt.succeeded.is_(True))
            .group_by(LoginAttempt.username)
        )
    }
    members = []
    for staff in session.execute(select(StaffUser).order_by(StaffUser.username)).scalars():
        times = [at for at in (opened.get(int(staff.id)), signed.get(str(staff.username))) if at is not None]
        members.append(member_of(staff, max(times) if times else None))
    return members


def member_of(staff: StaffUser, last_sign_in_at: dt.datetime | None = None) -> StaffMember:
    return StaffMember(
        id=int(staff.id),
        username=str(staff.username),
        display_name=staff.display_name,
        role=str(staff.role),
        active=bool(staff.active),
        can_sign_in=bool(staff.active) and staff.password_hash is not None,
        last_sign_in_at=last_sign_in_at,
    )


def staff_by_id(*, session: Session, staff_id: int) -> StaffUser:
    staff = session.get(StaffUser, staff_id)
    if staff is None:
        raise StaffNotFoundError(f"no staff member {staff_id}")
    return staff


def end_sessions(*, session: Session, staff_id: int, keep_csrf: str | None = None) -> int:
    """Sign a staff member out everywhere (but the session whose CSRF token is `keep_csrf`, if given)."""
    doomed = delete(StaffSession).where(StaffSession.staff_user_id == staff_id)
    if keep_csrf is not None:
        doomed = doomed.where(StaffSession.csrf_token != keep_csrf)
    result = session.execute(doomed.execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def _keep_an_admin(session: Session, staff: StaffUser) -> None:
    """Refuse a change that would leave no active admin (the other admins' rows are locked until the
    transaction ends, so two admins cannot demote each other at once)."""
    if staff.role != "admin" or not staff.active:
        return
    others = session.execute(
        select(StaffUser.id)
        .where(StaffUser.role == "admin", StaffUser.active.is_(True), StaffUser.id != staff.id)
        .with_for_update()
    ).all()
    if not others:
        raise StaffConflictError(f"{staff.username} is the last active admin: make another admin first")


def change_role(*, session: Session, staff_id: int, role: str) -> StaffUser:
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}, not {role!r}")
    staff = staff_by_id(session=session, staff_id=staff_id)
    if role != staff.role:
        _keep_an_admin(session, staff)
        staff.role = role
        session.flush()
    return staff


def set_active(*, session: Session, staff_id: int, active: bool, by: StaffUser) -> StaffUser:
    """Deactivate (their sessions end at once) or reactivate a staff member; no one deactivates
    themselves, and the last active admin stays."""
    staff = staff_by_id(session=session, staff_id=staff_id)
    if not active:
        if staff.id == by.id:
            raise StaffConflictError("you cannot deactivate yourself: ask another admin")
        _keep_an_admin(session, staff)
        end_sessions(session=session, staff_id=staff.id)
    staff.active = active
    session.flush()
    return staff


def reset_password(
    *, session: Session, staff_id: int, password: str, keep_csrf: str | None = None
) -> StaffUser:
    """A new password for a staff member; their sessions end (all but `keep_csrf`'s, one's own)."""
    staff = set_password(
        session=session,
        username=str(staff_by_id(session=session, staff_id=staff_id).username),
        password=password,
    )
    end_sessions(session=session, staff_id=staff.id, keep_csrf=keep_csrf)
    return staff
