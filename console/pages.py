"""The console's pages: sign-in, the inbox (refreshed in place), an escalation with its conversation and
actions, the audit log (a patron's profile: console/profile.py). Server-rendered (Jinja2) with htmx for
what updates itself."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.crm.database import session_scope
from bot.crm.models import StaffUser, utcnow
from bot.crm.models.staff import AUDIT_ACTIONS
from bot.engagement import inbox
from bot.engagement.escalations import (
    EscalationError,
    EscalationNotFoundError,
    resolve_escalation,
    staff_reply,
)
from console.accounts import sign_in
from console.api import set_cookie
from console.gate import ADMIN, Staff, engine_of, one_route, signed_in, staff_only
from console.i18n import LANGUAGES, TEXT, chosen_language, translator
from console.records import audit_entries, escalation_view
from console.sessions import COOKIE, Signed, close_session, open_session

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
LONGEST_TEXT = 4000  # a reply, note or resolution note (the forms' maxlength says the same)


def render(
    request: Request, template: str, signed: Signed | None, status: int = 200, **context: Any
) -> HTMLResponse:
    language = chosen_language(request, signed.language if signed is not None else None)
    zone: ZoneInfo = request.app.state.zone

    def local(at: dt.datetime | None) -> str:
        return at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if at is not None else "-"

    done = request.query_params.get("done")
    problem = request.query_params.get("problem")
    t = translator(language)
    message = t("problem", message=problem[:300]) if problem else None
    if done and f"done_{done}" in TEXT:  # a feature's "done" words: done_<what> in its texts
        message = t(f"done_{done}")
    message = context.pop("message", None) or message  # a page's own message (a 404's) comes first
    html = TEMPLATES.get_template(template).render(
        request=request,
        signed=signed,
        language=language,
        t=t,
        local=local,
        now=utcnow(),
        message=message,
        **context,
    )
    return HTMLResponse(html, status_code=status)


def safe_next(value: Any) -> str:
    """Where to go after signing in: a path on this console only."""
    text = str(value or "/")
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text else "/"


async def login_page(request: Request) -> Response:
    if await signed_in(request) is not None:
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", None, next=safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username") or ""), str(form.get("password") or "")
    target = safe_next(form.get("next"))
    address = request.client.host if request.client is not None else "unknown"

    def check() -> tuple[str | None, Signed | None, int]:
        with session_scope(engine_of(request)) as session:
            result = sign_in(
                session=session, username=username[:100], password=password[:1000], address=address
            )
            if result.staff is None:
                return None, None, result.retry_after
            token, signed = open_session(session=session, staff=result.staff)
            return token, signed, 0

    token, _, wait = await run_in_threadpool(check)
    if token is None:
        t = translator(chosen_language(request, str(form.get("lang") or "")))
        problem = t("limited", seconds=wait) if wait else t("wrong")
        return render(request, "login.html", None, status=429 if wait else 401, next=target, problem=problem)
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, token)
    return response


@staff_only()
async def logout(request: Request, staff: Staff) -> Response:
    token = request.cookies.get(COOKIE)
    await staff.crm(lambda session, _: close_session(session=session, token=token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@staff_only()
async def choose_language(request: Request, staff: Staff) -> Response:
    form = await request.form()
    language = str(form.get("language") or "")

    def remember(session: Session, user: StaffUser) -> None:
        if language in LANGUAGES:
            user.language = language

    await staff.crm(remember)
    return RedirectResponse(safe_next(form.get("next")), status_code=303)


def _items(staff: Staff) -> Callable[[Session, StaffUser], list[inbox.InboxItem]]:
    return lambda session, user: inbox.inbox(session=session, staff=user)


@staff_only()
async def inbox_page(request: Request, staff: Staff) -> Response:
    items = await staff.crm(_items(staff))
    return render(request, "inbox.html", staff.signed, section="inbox", items=items)


@staff_only()
async def inbox_rows(request: Request, staff: Staff) -> Response:
    items = await staff.crm(_items(staff))
    return render(request, "inbox_rows.html", staff.signed, items=items)


@staff_only()
async def escalation_page(request: Request, staff: Staff) -> Response:
    escalation_id: int = request.path_params["escalation_id"]
    try:
        view = await staff.crm(lambda session, user: escalation_view(session, user, escalation_id))
    except EscalationNotFoundError:
        missing = f"no escalation {escalation_id}"
        return render(request, "base.html", staff.signed, status=404, message=missing)
    return render(request, "escalation.html", staff.signed, section="inbox", e=view)


@staff_only()
async def escalation_messages(request: Request, staff: Staff) -> Response:
    escalation_id: int = request.path_params["escalation_id"]
    try:
        view = await staff.crm(lambda session, user: escalation_view(session, user, escalation_id))
    except EscalationNotFoundError:
        return Response(status_code=404)
    return render(request, "messages.html", staff.signed, e=view)


def _action(kind: str) -> Callable[[Request], Any]:
    """A form post on an escalation: do it, then back to the escalation with what was done (or why not)."""

    @staff_only()
    async def act(request: Request, staff: Staff) -> Response:
        escalation_id: int = request.path_params["escalation_id"]
        form = await request.form()
        text = str(form.get("text") or form.get("note") or form.get("to") or "")
        if len(text) > LONGEST_TEXT:  # refused with the limit, never cut short (the typed text is kept)
            problem = f"at most {LONGEST_TEXT} characters: this one has {len(text)}"
            return RedirectResponse(f"/escalations/{escalation_id}?problem={quote(problem)}", status_code=303)

        def work(session: Session, user: StaffUser) -> None:
            name = str(user.username)
            if kind == "claimed":
                inbox.claim(session=session, escalation_id=escalation_id, staff=user)
            elif kind == "replied":
                staff_reply(session=session, escalation_id=escalation_id, staff=name, text=text)
            elif kind == "noted":
                inbox.add_note(session=session, escalation_id=escalation_id, staff=user, text=text)
            elif kind == "transferred":
                inbox.transfer(session=session, escalation_id=escalation_id, staff=user, to=text)
            elif kind == "resolved":
                resolve_escalation(session=session, escalation_id=escalation_id, staff=name, note=text)
            else:
                inbox.give_back(session=session, escalation_id=escalation_id, staff=user)

        try:
            await staff.crm(work)
        except EscalationError as problem:
            back = f"/escalations/{escalation_id}?problem={quote(str(problem))}"
            return RedirectResponse(back, status_code=303)
        target = "/" if kind in ("resolved", "given_back") else f"/escalations/{escalation_id}"
        return RedirectResponse(f"{target}?done={kind}", status_code=303)

    return act


@staff_only(ADMIN)
async def audit_page(request: Request, staff: Staff) -> Response:
    params = request.query_params
    filters = {"staff": params.get("staff") or None, "action": params.get("action") or None}
    patron = params.get("patron") or ""
    filters["patron"] = patron if patron.isdigit() and len(patron) <= 18 else None
    if filters["action"] not in (None, *AUDIT_ACTIONS):
        filters["action"] = None
    entries = await staff.crm(
        lambda session, _: audit_entries(
            session,
            staff=filters["staff"],
            patron=int(patron) if filters["patron"] else None,
            action=filters["action"],
            limit=200,
        )
    )
    return render(
        request,
        "audit.html",
        staff.signed,
        section="audit",
        entries=entries,
        filters=filters,
        actions=AUDIT_ACTIONS,
    )


ROUTES = [
    one_route("/login", {"GET": login_page, "POST": login}),
    Route("/logout", logout, methods=["POST"]),
    Route("/language", choose_language, methods=["POST"]),
    Route("/", inbox_page, methods=["GET"]),
    Route("/inbox/rows", inbox_rows, methods=["GET"]),
    Route("/escalations/{escalation_id:id}", escalation_page, methods=["GET"]),
    Route("/escalations/{escalation_id:id}/messages", escalation_messages, methods=["GET"]),
    *(
        Route(f"/escalations/{{escalation_id:id}}/{path}", _action(kind), methods=["POST"])
        for path, kind in (
            ("claim", "claimed"),
            ("reply", "replied"),
            ("notes", "noted"),
            ("transfer", "transferred"),
            ("resolve", "resolved"),
            ("give-back", "given_back"),
        )
    ),
    Route("/audit", audit_page, methods=["GET"]),
]
