"""The console's JSON API for sign-in and the inbox (patron records and the audit log: console/records.py).
Everything the pages do, behind the same sign-in (console/gate.py); described in console/openapi.py."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.crm.database import session_scope
from bot.crm.models import StaffUser
from bot.engagement import inbox
from bot.engagement.escalations import (
    EscalationError,
    EscalationNotFoundError,
    resolve_escalation,
    staff_reply,
)
from console.accounts import sign_in
from console.answers import answer, error
from console.gate import Staff, engine_of, one_route, staff_only
from console.records import escalation_state, escalation_view
from console.sessions import COOKIE, IDLE, Signed, close_session, open_session

LANGUAGES = ("zh", "en")
LONGEST_REPLY = 4000


class BadInputError(Exception):
    """A request body the API cannot use; the message says what is wrong."""


async def body_of(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise BadInputError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BadInputError("the body must be a JSON object")
    return data


def text_field(
    data: dict[str, Any],
    name: str,
    *,
    required: bool = True,
    longest: int = LONGEST_REPLY,
    blank: bool = False,
) -> str:
    """The string field `name`: required unless told, and not blank unless `blank` (a password may be)."""
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not (value if blank else value.strip())):
        raise BadInputError(f"{name!r} must be a non-empty string")
    if len(value) > longest:
        raise BadInputError(f"{name!r} has at most {longest} characters")
    return value


def session_answer(signed: Signed) -> dict[str, Any]:
    return {
        "username": signed.username,
        "role": signed.role,
        "language": signed.language,
        "csrf_token": signed.csrf_token,
    }


async def create_session(request: Request) -> Response:
    """Sign in: sets the session cookie (HttpOnly, SameSite=Lax; Secure behind HTTPS)."""
    try:
        data = await body_of(request)
        username = text_field(data, "username", longest=100)
        password = text_field(data, "password", longest=1000, blank=True)
    except BadInputError as problem:
        return error(400, str(problem))
    address = request.client.host if request.client is not None else "unknown"

    def check() -> tuple[str, Signed] | tuple[None, int]:
        with session_scope(engine_of(request)) as session:
            result = sign_in(session=session, username=username, password=password, address=address)
            if result.staff is None:
                return None, result.retry_after
            return open_session(session=session, staff=result.staff)

    token, outcome = await run_in_threadpool(check)
    if token is None:
        assert isinstance(outcome, int)
        if outcome:
            return JSONResponse(
                {"error": "too many failed sign-ins: wait and try again"},
                status_code=429,
                headers={"Retry-After": str(outcome)},
            )
        return error(401, "wrong username or password")
    assert isinstance(outcome, Signed)
    response = answer(session_answer(outcome))
    set_cookie(request, response, token)
    return response


def set_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(IDLE.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https" or request.app.state.secure_cookies,
        path="/",
    )


@staff_only()
async def current_session(request: Request, staff: Staff) -> Response:
    return answer(session_answer(staff.signed))


@staff_only()
async def delete_session(request: Request, staff: Staff) -> Response:
    token = request.cookies.get(COOKIE)
    await staff.crm(lambda session, _: close_session(session=session, token=token))
    response = answer({"signed_out": True})
    response.delete_cookie(COOKIE, path="/")
    return response


@staff_only()
async def set_language(request: Request, staff: Staff) -> Response:
    try:
        language = text_field(await body_of(request), "language", longest=2)
        if language not in LANGUAGES:
            raise BadInputError(f"'language' must be one of {', '.join(LANGUAGES)}")
    except BadInputError as problem:
        return error(400, str(problem))

    def remember(session: Session, user: StaffUser) -> None:
        user.language = language

    await staff.crm(remember)
    return answer({"language": language})


def escalation_item(item: inbox.InboxItem) -> dict[str, Any]:
    return dataclasses.asdict(item)


@staff_only()
async def list_escalations(request: Request, staff: Staff) -> Response:
    include_closed = request.query_params.get("all") in ("1", "true")
    items = await staff.crm(
        lambda session, user: inbox.inbox(session=session, staff=user, include_closed=include_closed)
    )
    return answer({"escalations": [escalation_item(item) for item in items]})


def _escalation_id(request: Request) -> int:
    value: int = request.path_params["escalation_id"]
    return value


async def _act(staff: Staff, work: Any) -> Response:
    try:
        return answer(await staff.crm(work))
    except EscalationNotFoundError as problem:
        return error(404, str(problem))
    except EscalationError as problem:
        return error(409, str(problem))


@staff_only()
async def show_escalation(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    return await _act(staff, lambda session, user: escalation_view(session, user, escalation_id))


@staff_only()
async def claim_escalation(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    return await _act(
        staff,
        lambda session, user: escalation_state(
            inbox.claim(session=session, escalation_id=escalation_id, staff=user), session
        ),
    )


@staff_only()
async def reply_to_escalation(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    try:
        text = text_field(await body_of(request), "text")
    except BadInputError as problem:
        return error(400, str(problem))
    return await _act(
        staff,
        lambda session, user: {
            "outbox_id": staff_reply(
                session=session, escalation_id=escalation_id, staff=str(user.username), text=text
            )
        },
    )


@staff_only()
async def resolve(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    try:
        note = text_field(await body_of(request), "note", required=False)
    except BadInputError as problem:
        return error(400, str(problem))
    return await _act(
        staff,
        lambda session, user: escalation_state(
            resolve_escalation(
                session=session, escalation_id=escalation_id, staff=str(user.username), note=note
            ),
            session,
        ),
    )


@staff_only()
async def give_back(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    return await _act(
        staff,
        lambda session, user: escalation_state(
            inbox.give_back(session=session, escalation_id=escalation_id, staff=user), session
        ),
    )


@staff_only()
async def add_note(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    try:
        text = text_field(await body_of(request), "text", longest=inbox.LONGEST_NOTE)
    except BadInputError as problem:
        return error(400, str(problem))

    def note(session: Session, user: StaffUser) -> dict[str, Any]:
        row = inbox.add_note(session=session, escalation_id=escalation_id, staff=user, text=text)
        return {"id": row.id, "at": row.at, "staff": user.username, "text": row.text}

    return await _act(staff, note)


@staff_only()
async def transfer(request: Request, staff: Staff) -> Response:
    escalation_id = _escalation_id(request)
    try:
        to = text_field(await body_of(request), "to", longest=100)
    except BadInputError as problem:
        return error(400, str(problem))
    return await _act(
        staff,
        lambda session, user: escalation_state(
            inbox.transfer(session=session, escalation_id=escalation_id, staff=user, to=to), session
        ),
    )


ROUTES = [
    one_route("/api/session", {"GET": current_session, "POST": create_session, "DELETE": delete_session}),
    Route("/api/me/language", set_language, methods=["POST"]),
    Route("/api/escalations", list_escalations, methods=["GET"]),
    Route("/api/escalations/{escalation_id:id}", show_escalation, methods=["GET"]),
    Route("/api/escalations/{escalation_id:id}/claim", claim_escalation, methods=["POST"]),
    Route("/api/escalations/{escalation_id:id}/reply", reply_to_escalation, methods=["POST"]),
    Route("/api/escalations/{escalation_id:id}/resolve", resolve, methods=["POST"]),
    Route("/api/escalations/{escalation_id:id}/give-back", give_back, methods=["POST"]),
    Route("/api/escalations/{escalation_id:id}/notes", add_note, methods=["POST"]),
    Route("/api/escalations/{escalation_id:id}/transfer", transfer, methods=["POST"]),
]
