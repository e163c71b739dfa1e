"""The console's one staff gate: every page and API route passes through `staff_only`, which checks the
session cookie, the staff member's role and, on unsafe requests, the CSRF token; and runs the handler's
CRM work in a worker thread with its own transaction."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.crm.database import session_scope
from bot.crm.models import StaffUser
from bot.knowledge.service import KnowledgeService
from bot.settings import Settings
from console.sessions import COOKIE, Signed, csrf_matches, read_session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LIBRARIAN = frozenset({"librarian", "outreach", "admin"})
OUTREACH = frozenset({"outreach", "admin"})
ADMIN = frozenset({"admin"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

T = TypeVar("T")


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def knowledge_of(request: Request) -> KnowledgeService:
    """The knowledge base as the bot reads it (the file the settings name)."""
    knowledge: KnowledgeService = request.app.state.knowledge
    return knowledge


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@dataclass(frozen=True)
class Staff:
    """The signed-in staff member of a request, and a way to run CRM work as them."""

    signed: Signed
    engine: Engine

    async def crm(self, work: Callable[[Session, StaffUser], T]) -> T:
        """Run `work(session, staff_user)` in a worker thread, in one transaction."""

        def run() -> T:
            with session_scope(self.engine) as session:
                staff = session.get(StaffUser, self.signed.staff_id)
                assert staff is not None
                return work(session, staff)

        return await run_in_threadpool(run)


Handler = Callable[[Request, Staff], Awaitable[Response]]


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _back_to(request: Request) -> str:
    """Where to return after signing in again: the page asked for, or, for a form posted after the session
    ended, the page the form was on (its typed text is kept there by static/drafts.js)."""
    if request.method in SAFE_METHODS:
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    came_from = urlsplit(request.headers.get("referer") or "")
    if came_from.netloc != request.url.netloc or not came_from.path.startswith("/"):
        return "/"
    return came_from.path + (f"?{came_from.query}" if came_from.query else "")


def refuse(request: Request, status: int, message: str) -> Response:
    if is_api(request):
        return JSONResponse({"error": message}, status_code=status)
    if status == 401:
        return RedirectResponse(f"/login?next={quote(_back_to(request), safe='')}", status_code=303)
    return Response(message, status_code=status, media_type="text/plain; charset=utf-8")


async def signed_in(request: Request) -> Signed | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None

    def read() -> Signed | None:
        with session_scope(engine_of(request)) as session:
            return read_session(session=session, token=token)

    return await run_in_threadpool(read)


def staff_only(
    roles: frozenset[str] = LIBRARIAN,
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """The route for signed-in staff whose role is in `roles`: 401 (or the sign-in page) without a
    session, 403 for another role or an unsafe request without the session's CSRF token."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            signed = await signed_in(request)
            if signed is None:
                return refuse(request, 401, "sign in first")
            if signed.role not in roles:
                return refuse(request, 403, "your role does not allow this")
            if request.method not in SAFE_METHODS and not csrf_matches(signed, await _csrf_given(request)):
                return refuse(
                    request, 403, "the CSRF token is missing or wrong: reload the page and try again"
                )
            return await handler(request, Staff(signed=signed, engine=engine_of(request)))

        return endpoint

    return wrap


async def _csrf_given(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value: Any = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


class RowId(Convertor[int]):
    """A row id in a path: 1 to 18 digits (so never past a 64-bit integer); anything else is 404."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", RowId())


def one_route(path: str, handlers: dict[str, Callable[[Request], Awaitable[Response]]]) -> Route:
    """One route for a path served by several methods, so a 405 names them all in its Allow header."""

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method if request.method in handlers else "GET"](request)

    return Route(path, endpoint, methods=list(handlers))
