"""WeChat's access token, shared by every process through the CRM: fetched by one process at a time."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from wechatpy.session import SessionStorage

from bot.crm.database import session_scope
from bot.crm.models import ChannelToken, utcnow

# A token is renewed this long before WeChat says it expires (WeChat's tokens last 7200 s).
RENEW_BEFORE = dt.timedelta(minutes=5)
# The time a placeholder row says it expires: long past, so it is never taken for a token.
_NEVER = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)

# Asks WeChat for a new token: (token, seconds it lasts).
TokenFetch = Callable[[], tuple[str, int]]


class SharedToken(SessionStorage):  # type: ignore[misc]
    """The access token of one Official Account, kept in the CRM table `channel_token` as wechatpy's
    session storage. WeChat invalidates a token when a new one is fetched, so only one process fetches:
    the refresh holds the token's row (SELECT ... FOR UPDATE on PostgreSQL, the database write lock on
    SQLite), and a process that waited for it takes the token the other fetched."""

    def __init__(self, *, engine: Engine, name: str, fetch: TokenFetch) -> None:
        self.engine = engine
        self.name = name
        self.fetch = fetch
        self._lock = threading.Lock()
        self._value: str | None = None
        self._expires_at: dt.datetime = _NEVER

    # wechatpy's SessionStorage interface (the key is always this account's token).
    def get(self, key: str, default: Any = None) -> Any:
        value, expires_at = self._read()
        return value if value and expires_at > utcnow() else default

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        now = utcnow()
        self._ensure_row()
        with session_scope(self.engine) as session:
            row = session.get(ChannelToken, self.name)
            if row is not None:
                row.value = value
                row.expires_at = now + dt.timedelta(seconds=ttl or 7200)
                row.updated_at = now

    def delete(self, key: str) -> None:
        self.set(key, "", 0)
        with self._lock:
            self._value = None

    def current(self) -> str:
        """A token valid for at least RENEW_BEFORE more: this process's copy, the shared one, or a new one."""
        with self._lock:
            if self._value and self._expires_at - RENEW_BEFORE > utcnow():
                return self._value
        value, expires_at = self._read()
        if value and expires_at - RENEW_BEFORE > utcnow():
            self._keep(value, expires_at)
            return value
        return self.refresh(stale=value)

    def refresh(self, *, stale: str | None) -> str:
        """A new token, unless another process replaced `stale` (the token that expired or that WeChat
        refused) while this one waited for the row: then theirs, with no second fetch."""
        self._ensure_row()
        with session_scope(self.engine) as session:
            row = session.execute(
                select(ChannelToken).where(ChannelToken.name == self.name).with_for_update()
            ).scalar_one()
            now = utcnow()
            fresh = row.value and row.expires_at - RENEW_BEFORE > now
            if not (fresh and row.value != stale):
                value, lasts = self.fetch()
                row.value = value
                row.expires_at = now + dt.timedelta(seconds=lasts)
                row.updated_at = now
            value, expires_at = str(row.value), row.expires_at
        self._keep(value, expires_at)
        return value

    def _keep(self, value: str, expires_at: dt.datetime) -> None:
        with self._lock:
            self._value, self._expires_at = value, expires_at

    def _read(self) -> tuple[str | None, dt.datetime]:
        with session_scope(self.engine) as session:
            row = session.get(ChannelToken, self.name)
            if row is None:
                return None, _NEVER
            return str(row.value), row.expires_at or _NEVER

    def _ensure_row(self) -> None:
        """A row to lock, even before the first token (a placeholder that never counts as one)."""
        with session_scope(self.engine) as session:
            if session.get(ChannelToken, self.name) is not None:
                return
        try:
            with session_scope(self.engine) as session:
                session.add(ChannelToken(name=self.name, value="", expires_at=_NEVER, updated_at=utcnow()))
        except IntegrityError:
            pass  # another process made it first
