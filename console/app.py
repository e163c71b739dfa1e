"""The staff console as one ASGI application: the JSON API, the pages, the OpenAPI document."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.crm.database import make_engine
from bot.knowledge.facts import FactsError, load_facts
from bot.knowledge.service import KnowledgeService
from bot.settings import Settings
from console import (
    api,
    campaigns,
    insight,
    knowledge,
    pages,
    patron_privacy,
    profile,
    records,
    segments,
    staff,
    suggested,
    suggestions,
    unanswered,
)
from console.nul_guard import NulGuard
from console.openapi import document
from console.pages import STATIC

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response (an ASGI middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


async def http_error(request: Request, problem: Exception) -> Response:
    """No such page or method: JSON on the API (as the document says), plain text elsewhere."""
    assert isinstance(problem, HTTPException)
    headers = dict(problem.headers or {})
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": problem.detail}, status_code=problem.status_code, headers=headers)
    return PlainTextResponse(problem.detail, status_code=problem.status_code, headers=headers)


async def openapi(_: Request) -> Response:
    return JSONResponse(document())


def create_app(*, settings: Settings, engine: Engine | None = None) -> Starlette:
    """The console for the CRM `settings` name (or `engine`, in tests)."""
    app = Starlette(
        routes=[
            Route("/openapi.json", openapi, methods=["GET"]),
            *api.ROUTES,
            *records.ROUTES,
            *insight.ROUTES,
            *suggestions.ROUTES,
            *unanswered.ROUTES,
            *suggested.ROUTES,
            *segments.ROUTES,
            *campaigns.ROUTES,
            *profile.ROUTES,
            *patron_privacy.ROUTES,
            *staff.ROUTES,
            *knowledge.ROUTES,
            *pages.ROUTES,
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(NulGuard)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.engine = engine or make_engine(settings.crm_database_url, hide_parameters=True)
    app.state.secure_cookies = settings.console_secure_cookies
    app.state.zone = library_zone(settings)
    app.state.settings = settings
    # The knowledge base as the bot reads it (models load on first use): the editor's and the
    # suggested answers' retrieval.
    app.state.knowledge = KnowledgeService.from_settings(settings)
    return app


def library_zone(settings: Settings) -> ZoneInfo:
    """The library's time zone (its facts file), in which the console shows times; UTC if unreadable."""
    try:
        return load_facts(settings.path(settings.library_facts)).timezone
    except FactsError:
        return ZoneInfo("UTC")
