"""The console's campaigns (admins): the list, a form checked by the campaign file's own parser with a
preview of the message, pause, resume and cancel, and each campaign's report with its chart and CSV."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.crm.models import TRIGGER_EVENTS, Campaign, Segment, StaffUser, utcnow
from bot.outreach.campaigns import (
    CAMPAIGN_PURPOSES,
    QUESTION_ASKS,
    CampaignDefinition,
    CampaignError,
    cancel_campaign,
    describe_schedule,
    list_campaigns,
    parse_campaign,
    pause_campaign,
    resume_campaign,
    save_campaign,
    schedule_of,
)
from bot.outreach.messages import MAX_BUTTONS, MESSAGE_LANGUAGES, TEMPLATE_FIELDS
from bot.outreach.report import CampaignNotFoundError, CampaignReport, campaign_report
from bot.outreach.spec import Spec, SpecError
from console.answers import answer, error
from console.api import BadInputError, body_of
from console.campaign_forms import (
    SAMPLE_PATRON,
    TEXT,
    campaign_mapping,
    campaign_values,
    form_values,
    message_preview,
)
from console.campaign_report import (
    CHART_WIDTH,
    LABEL_WIDTH,
    ROW_HEIGHT,
    rating_rows,
    report_bars,
    report_csv,
    report_rows,
)
from console.campaign_report import TEXT as FIGURE_TEXT
from console.gate import ADMIN, Staff, one_route, settings_of, staff_only
from console.i18n import add_texts
from console.pages import render

add_texts(TEXT)
add_texts(FIGURE_TEXT)
SHOWN = 100
EDITED_COLUMNS = ("name", "purpose", "kind", "asks", "message", "buttons", "schedule")
ACTIONS = {"pause": pause_campaign, "resume": resume_campaign}
DONE_WORDS = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}
CONFIRM_NEEDED = TEXT["camp_confirm_needed"]["en"]


def campaign_row(session: Session, campaign: Campaign, zone: Any) -> dict[str, Any]:
    segment = session.get(Segment, campaign.segment_id) if campaign.segment_id is not None else None
    report = campaign_report(session=session, campaign_id=int(campaign.id))
    return {
        "id": int(campaign.id),
        "name": campaign.name,
        "segment": segment.name if segment is not None else None,
        "kind": campaign.kind,
        "asks": campaign.asks,
        "purpose": campaign.purpose,
        "status": campaign.status,
        "schedule": campaign.schedule,
        "when": describe_schedule(schedule_of(campaign), zone=zone),
        "message": campaign.message,
        "counts": {
            "deliveries": report.deliveries,
            "sent": report.sent,
            "skipped": sum(report.skipped.values()),
        },
    }


def _rows(staff: Staff, request: Request) -> Any:
    zone = request.app.state.zone
    return staff.crm(
        lambda session, _: [campaign_row(session, c, zone) for c in list_campaigns(session=session)[:SHOWN]]
    )


def parsed(request: Request, mapping: dict[str, Any]) -> CampaignDefinition:
    """The campaign a mapping defines, through the campaign file's parser (SpecError if unusable)."""
    return parse_campaign(Spec(data=mapping), now=utcnow(), timezone=request.app.state.zone.key)


async def _save(staff: Staff, definition: CampaignDefinition) -> tuple[int, str]:
    def work(session: Session, user: StaffUser) -> tuple[int, str]:
        campaign = save_campaign(session=session, definition=definition, staff_id=user.id)
        return int(campaign.id), str(campaign.status)

    return await staff.crm(work)


# --- pages ---------------------------------------------------------------------------------------------


@staff_only(ADMIN)
async def campaigns_page(request: Request, staff: Staff) -> Response:
    rows = await _rows(staff, request)
    return render(request, "campaigns.html", staff.signed, section="campaigns", rows=rows)


async def _form(
    request: Request, staff: Staff, values: dict[str, str], status: int = 200, **shown: Any
) -> Response:
    segments = await staff.crm(
        lambda session, _: list(session.execute(select(Segment.name).order_by(Segment.name)).scalars())
    )
    return render(
        request,
        "campaigns_form.html",
        staff.signed,
        status=status,
        section="campaigns",
        values=values,
        segments=segments,
        purposes=CAMPAIGN_PURPOSES,
        asks=QUESTION_ASKS,
        events=TRIGGER_EVENTS,
        languages=MESSAGE_LANGUAGES,
        buttons=range(MAX_BUTTONS),
        field_names=", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS),
        sample=SAMPLE_PATRON,
        zone=request.app.state.zone.key,
        quiet_hours=settings_of(request).quiet_hours or "-",
        **shown,
    )


@staff_only(ADMIN)
async def new_campaign_page(request: Request, staff: Staff) -> Response:
    return await _form(
        request, staff, {"purpose": "follow_up", "kind": "announcement", "schedule_kind": "none"}
    )


@staff_only(ADMIN)
async def edit_campaign_page(request: Request, staff: Staff) -> Response:
    """A saved campaign in the form, to change and save again (a cancelled or done one: 409)."""
    campaign_id: int = request.path_params["campaign_id"]
    zone = request.app.state.zone

    def work(session: Session, _: StaffUser) -> dict[str, str] | None:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            return None
        segment = session.get(Segment, campaign.segment_id) if campaign.segment_id is not None else None
        stored = {column: getattr(campaign, column) for column in EDITED_COLUMNS}
        values = campaign_values(stored=stored, segment=str(segment.name) if segment else "", zone=zone)
        return values | {"status": str(campaign.status)}

    values = await staff.crm(work)
    if values is None:
        return Response("no such campaign", status_code=404, media_type="text/plain; charset=utf-8")
    if values.pop("status") in ("cancelled", "done"):
        return Response(
            "a cancelled or done campaign cannot be changed", status_code=409, media_type="text/plain"
        )
    return await _form(request, staff, values, editing=True)


@staff_only(ADMIN)
async def campaign_form(request: Request, staff: Staff) -> Response:
    """The form posted: Preview shows the message as a patron reads it; Save stores the campaign. A
    problem is shown beside the form with everything typed kept."""
    form = await request.form()
    values = form_values(form)
    editing = values.pop("editing", "") == "1"
    try:
        definition = parsed(request, campaign_mapping(values, request.app.state.zone))
        if form.get("do") == "save":
            campaign_id, _ = await _save(staff, definition)
            return RedirectResponse(f"/campaigns/{campaign_id}?done=camp_saved", status_code=303)
    except SpecError as problem:
        return await _form(request, staff, values, status=400, problem=problem, editing=editing)
    return await _form(request, staff, values, preview=message_preview(definition), editing=editing)


async def _report(staff: Staff, campaign_id: int) -> CampaignReport | None:
    def work(session: Session, _: StaffUser) -> CampaignReport | None:
        try:
            return campaign_report(session=session, campaign_id=campaign_id)
        except CampaignNotFoundError:
            return None

    return await staff.crm(work)


@staff_only(ADMIN)
async def campaign_page(request: Request, staff: Staff) -> Response:
    campaign_id: int = request.path_params["campaign_id"]
    zone = request.app.state.zone

    def work(session: Session, _: StaffUser) -> dict[str, Any] | None:
        campaign = session.get(Campaign, campaign_id)
        return campaign_row(session, campaign, zone) if campaign is not None else None

    row = await staff.crm(work)
    report = await _report(staff, campaign_id)
    if row is None or report is None:
        return Response("no such campaign", status_code=404, media_type="text/plain; charset=utf-8")
    rows = report_rows(report)
    return render(
        request,
        "campaigns_report.html",
        staff.signed,
        section="campaigns",
        campaign=row,
        rows=rows,
        ratings=rating_rows(report),
        bars=report_bars(rows),
        width=CHART_WIDTH,
        label_width=LABEL_WIDTH,
        row_height=ROW_HEIGHT,
    )


@staff_only(ADMIN)
async def campaign_csv(request: Request, staff: Staff) -> Response:
    campaign_id: int = request.path_params["campaign_id"]
    report = await _report(staff, campaign_id)
    if report is None:
        return Response("no such campaign", status_code=404, media_type="text/plain; charset=utf-8")
    return Response(
        report_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"'},
    )


async def _act(staff: Staff, campaign_id: int, action: str) -> dict[str, Any]:
    """Pause, resume or cancel; CampaignNotFoundError when there is no such campaign, CampaignError
    when its status does not allow it."""

    def work(session: Session, _: StaffUser) -> dict[str, Any]:
        if session.get(Campaign, campaign_id) is None:
            raise CampaignNotFoundError(f"no campaign {campaign_id}")
        if action == "cancel":
            cancelled = cancel_campaign(session=session, campaign_id=campaign_id)
            return {"id": campaign_id, "status": "cancelled", "cancelled_deliveries": cancelled}
        campaign = ACTIONS[action](session=session, campaign_id=campaign_id)
        return {"id": campaign_id, "status": str(campaign.status)}

    return await staff.crm(work)


def _action_form(action: str) -> Any:
    """The page's pause, resume or cancel button (cancel only with its confirmation ticked)."""

    @staff_only(ADMIN)
    async def endpoint(request: Request, staff: Staff) -> Response:
        campaign_id: int = request.path_params["campaign_id"]
        form = await request.form()
        back = f"/campaigns/{campaign_id}"
        if action == "cancel" and form.get("confirm") != "yes":
            return RedirectResponse(f"{back}?problem={quote(CONFIRM_NEEDED)}", status_code=303)
        try:
            await _act(staff, campaign_id, action)
        except CampaignNotFoundError:
            return Response("no such campaign", status_code=404, media_type="text/plain; charset=utf-8")
        except CampaignError as problem:
            return RedirectResponse(f"{back}?problem={quote(str(problem))}", status_code=303)
        return RedirectResponse(f"{back}?done=camp_{DONE_WORDS[action]}", status_code=303)

    return endpoint


# --- API -----------------------------------------------------------------------------------------------


@staff_only(ADMIN)
async def campaigns_api(request: Request, staff: Staff) -> Response:
    return answer({"campaigns": await _rows(staff, request)})


@staff_only(ADMIN)
async def save_campaign_api(request: Request, staff: Staff) -> Response:
    try:
        definition = parsed(request, await body_of(request))
    except (BadInputError, SpecError) as problem:
        return error(400, str(problem))
    try:
        campaign_id, status = await _save(staff, definition)
    except SpecError as problem:  # the segment or the stored campaign does not allow it
        missing = problem.field == "segment" and problem.reason.startswith("no segment")
        return error(404 if missing else 409, str(problem))
    return answer({"id": campaign_id, "status": status})


def _action_api(action: str) -> Any:
    @staff_only(ADMIN)
    async def endpoint(request: Request, staff: Staff) -> Response:
        try:
            return answer(await _act(staff, request.path_params["campaign_id"], action))
        except CampaignNotFoundError as problem:
            return error(404, str(problem))
        except CampaignError as problem:
            return error(409, str(problem))

    return endpoint


@staff_only(ADMIN)
async def report_api(request: Request, staff: Staff) -> Response:
    report = await _report(staff, request.path_params["campaign_id"])
    if report is None:
        return error(404, f"no campaign {request.path_params['campaign_id']}")
    return answer(report.as_dict())


ROUTES = [
    Route("/campaigns", campaigns_page, methods=["GET"]),
    Route("/campaigns/new", new_campaign_page, methods=["GET"]),
    Route("/campaigns/form", campaign_form, methods=["POST"]),
    Route("/campaigns/{campaign_id:id}", campaign_page, methods=["GET"]),
    Route("/campaigns/{campaign_id:id}/edit", edit_campaign_page, methods=["GET"]),
    Route("/campaigns/{campaign_id:id}.csv", campaign_csv, methods=["GET"]),
    one_route("/api/campaigns", {"GET": campaigns_api, "POST": save_campaign_api}),
    *[
        route
        for action in ("pause", "resume", "cancel")
        for route in (
            Route(f"/campaigns/{{campaign_id:id}}/{action}", _action_form(action), methods=["POST"]),
            Route(f"/api/campaigns/{{campaign_id:id}}/{action}", _action_api(action), methods=["POST"]),
        )
    ],
    Route("/api/campaigns/{campaign_id:id}/report", report_api, methods=["GET"]),
]
