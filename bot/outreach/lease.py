"""The scheduler's leader lease: one row in `scheduler_lease` that one process holds and renews."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import socket
from typing import cast

from sqlalchemy import and_, delete, insert, or_, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError

from bot.crm.database import session_scope
from bot.crm.models import SchedulerLease, utcnow

DEFAULT_NAME = "campaign-scheduler"


def make_holder() -> str:
    """This process's holder id: "hostname:pid:random" (the random part tells apart two schedulers in
    one process, and a restarted process that was given the same pid)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """A named lease with a time to live, held by at most one holder at a time.

    Every check is one conditional statement, so it is atomic on SQLite (BEGIN IMMEDIATE takes the
    write lock) and on PostgreSQL (a concurrent UPDATE of the row waits, then re-checks its WHERE on
    the row as the winner left it). Expiry compares the hosts' clocks: they must agree to well within
    the time to live (NTP does)."""

    def __init__(self, *, engine: Engine, name: str = DEFAULT_NAME, holder: str, ttl: float = 20.0) -> None:
        if ttl <= 0:
            raise ValueError("a lease's time to live must be positive")
        self.engine, self.name, self.holder, self.ttl = engine, name, holder, ttl
        # Until when this holder knows the lease is its own (None: not held, as far as it knows).
        self.expires_at: dt.datetime | None = None

    def acquire(self) -> bool:
        """Take the lease when nobody holds it, it has expired, or it is already ours; True if ours."""
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.ttl)
        table = SchedulerLease.__table__
        with session_scope(self.engine) as session:
            taken = session.execute(
                update(table)
                .where(
                    table.c.name == self.name,
                    or_(table.c.holder == self.holder, table.c.expires_at < now),
                )
                .values(holder=self.holder, acquired_at=now, expires_at=expires)
            )
            if cast(CursorResult, taken).rowcount == 1:
                self.expires_at = expires
                return True
        try:
            with session_scope(self.engine) as session:
                # The primary key settles a race between two holders that both found no row.
                session.execute(
                    insert(table).values(
                        name=self.name, holder=self.holder, acquired_at=now, expires_at=expires
                    )
                )
        except IntegrityError:
            self.expires_at = None
            return False
        self.expires_at = expires
        return True

    def renew(self) -> bool:
        """Extend the lease by its time to live, only while it is ours and has not expired."""
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.ttl)
        table = SchedulerLease.__table__
        with session_scope(self.engine) as session:
            renewed = session.execute(
                update(table)
                .where(
                    and_(
                        table.c.name == self.name,
                        table.c.holder == self.holder,
                        table.c.expires_at >= now,
                    )
                )
                .values(expires_at=expires)
            )
            held = cast(CursorResult, renewed).rowcount == 1
        self.expires_at = expires if held else None
        return held

    def release(self) -> None:
        """Give the lease up (if ours), so a standby takes over at once rather than after expiry."""
        table = SchedulerLease.__table__
        with session_scope(self.engine) as session:
            session.execute(delete(table).where(table.c.name == self.name, table.c.holder == self.holder))
        self.expires_at = None

    def held(self) -> bool:
        """Whether, by this holder's own record and clock, the lease is still its own."""
        return self.expires_at is not None and utcnow() < self.expires_at
