"""The console's suggestions page and API: patrons' suggestions, purchase requests and complaints with
their status and the library's answer; answering one sends it to the patron on their channel."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.models import StaffUser, Suggestion
from bot.crm.models.feedback import SUGGESTION_STATUSES
from bot.engagement.reports import ReportError, ReportNotFoundError, answer_report, list_reports
from console.answers import answer, error
from console.api import BadInputError, body_of, text_field
from console.gate import Staff, staff_only
from console.pages import render

SHOWN = 200


def suggestion_rows(session: Session, staff: StaffUser, status: str | None) -> list[dict[str, Any]]:
    """The newest reports (of a status, or all) with what the patron wrote; each patron's read audited."""
    reports = [report for report, _ in list_reports(session=session, status=status)][:SHOWN]
    for patron_id in sorted({int(r.patron_id) for r in reports if r.patron_id is not None}):
        log_access(
            session=session,
            actor=f"staff:{staff.username}",
            action="read",
            patron_id=patron_id,
            reason="console: suggestions and requests",
            staff_user=staff,
        )
    return [_row(report) for report in reports]


def _row(report: Suggestion) -> dict[str, Any]:
    return {
        "id": report.id,
        "kind": report.kind,
        "status": report.status,
        "topic": report.topic,
        "text": report.text,
        "created_at": report.created_at,
        "library_answer": report.library_answer,
        "answered_at": report.answered_at,
        "patron_id": report.patron_id,
    }


def _status(request: Request) -> str | None:
    status = request.query_params.get("status") or None
    return status if status in SUGGESTION_STATUSES else None


@staff_only()
async def suggestions_api(request: Request, staff: Staff) -> Response:
    status = request.query_params.get("status") or None
    if status is not None and status not in SUGGESTION_STATUSES:
        return error(400, f"'status' must be one of {', '.join(SUGGESTION_STATUSES)}")
    rows = await staff.crm(lambda session, user: suggestion_rows(session, user, status))
    return answer({"suggestions": rows})


@staff_only()
async def answer_api(request: Request, staff: Staff) -> Response:
    report_id: int = request.path_params["report_id"]
    try:
        data = await body_of(request)
        text = text_field(data, "text", longest=2000)
        status = data.get("status")
        if status is not None and status not in SUGGESTION_STATUSES:
            raise BadInputError(f"'status' must be one of {', '.join(SUGGESTION_STATUSES)}")
    except BadInputError as problem:
        return error(400, str(problem))

    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        done = answer_report(
            session=session, report_id=report_id, staff=str(user.username), text=text, status=status
        )
        return {
            "id": done.report_id,
            "status": done.status,
            "outbox_id": done.outbox_id,
            "channel": done.channel,
        }

    try:
        return answer(await staff.crm(work))
    except ReportNotFoundError as problem:
        return error(404, str(problem))
    except ReportError as problem:
        return error(409, str(problem))


@staff_only()
async def suggestions_page(request: Request, staff: Staff) -> Response:
    status = _status(request)
    rows = await staff.crm(lambda session, user: suggestion_rows(session, user, status))
    return render(
        request,
        "suggestions.html",
        staff.signed,
        section="suggestions",
        rows=rows,
        chosen=status,
        statuses=SUGGESTION_STATUSES,
    )


@staff_only()
async def answer_form(request: Request, staff: Staff) -> Response:
    report_id: int = request.path_params["report_id"]
    form = await request.form()
    text = str(form.get("text") or "")
    status = str(form.get("status") or "") or None

    def work(session: Session, user: StaffUser) -> None:
        answer_report(
            session=session, report_id=report_id, staff=str(user.username), text=text, status=status
        )

    try:
        await staff.crm(work)
    except ReportError as problem:
        return RedirectResponse(f"/suggestions?problem={quote(str(problem))}", status_code=303)
    return RedirectResponse("/suggestions?done=answered", status_code=303)


ROUTES = [
    Route("/suggestions", suggestions_page, methods=["GET"]),
    Route("/suggestions/{report_id:id}/answer", answer_form, methods=["POST"]),
    Route("/api/suggestions", suggestions_api, methods=["GET"]),
    Route("/api/suggestions/{report_id:id}/answer", answer_api, methods=["POST"]),
]
