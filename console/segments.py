"""The console's segments (admins): the list, a form that builds a segment file's mapping and goes through
the same parser, a preview of who it holds (audited), and saving it; the same as a JSON API."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.crm.models import CONSENT_PURPOSES, PATRON_TYPES, Persona, Segment, StaffUser
from bot.language import LANGUAGES
from bot.outreach.interests import QueryEncoder
from bot.outreach.segments import (
    CHANNELS,
    ESCALATION_CHOICES,
    TOPICS,
    SegmentDefinition,
    SegmentError,
    SegmentPreview,
    list_segments,
    parse_segment,
    refresh_membership,
    save_segment,
)
from bot.outreach.spec import Spec, SpecError
from console.answers import answer, error
from console.api import BadInputError, body_of
from console.gate import ADMIN, Staff, engine_of, one_route, staff_only
from console.i18n import add_texts
from console.openapi import add_paths
from console.openapi_parts import CSRF, NULLABLE_INT, NULLABLE_STR, NULLABLE_TIME, errors, json_content, ref
from console.pages import render
from console.segment_forms import TEXT, form_values, preview_definition, segment_mapping, values_of

add_texts(TEXT)

_ENCODER: list[QueryEncoder] = []
_ENCODER_LOCK = threading.Lock()


def interest_encoder(request: Request) -> QueryEncoder:
    """The encoder of interest_like: the app's `interest_encoder` if set (tests), else one e5 per process."""
    given: QueryEncoder | None = getattr(request.app.state, "interest_encoder", None)
    if given is not None:
        return given
    with _ENCODER_LOCK:
        if not _ENCODER:
            from bot.knowledge.encoders import MultilingualEncoder

            _ENCODER.append(MultilingualEncoder())
        return _ENCODER[0]


def parsed(mapping: dict[str, Any]) -> SegmentDefinition:
    """The segment a mapping defines, through the segment file's parser (a SpecError says what is wrong)."""
    return parse_segment(Spec(data=mapping))


def segment_row(segment: Segment) -> dict[str, Any]:
    return {
        "id": int(segment.id),
        "name": segment.name,
        "description": segment.description,
        "member_count": segment.member_count,
        "refreshed_at": segment.refreshed_at,
        "updated_at": segment.updated_at or segment.created_at,
        "rules": segment.definition,
    }


async def _save(request: Request, staff: Staff, definition: SegmentDefinition) -> tuple[int, int]:
    """Store the segment (SegmentError for an unknown persona), then count its members."""
    segment_id = await staff.crm(
        lambda session, user: int(save_segment(session=session, definition=definition, staff_id=user.id).id)
    )
    encoder = interest_encoder(request) if definition.rules.interest_like is not None else None
    count = await run_in_threadpool(
        lambda: refresh_membership(engine=engine_of(request), segment_id=segment_id, encoder=encoder)
    )
    return segment_id, count


async def _preview(request: Request, staff: Staff, definition: SegmentDefinition) -> SegmentPreview:
    return await run_in_threadpool(
        lambda: preview_definition(
            engine=engine_of(request),
            definition=definition,
            staff_id=staff.signed.staff_id,
            encoder=lambda: interest_encoder(request),
        )
    )


# --- pages ---------------------------------------------------------------------------------------------


def _choices(session: Session) -> dict[str, Any]:
    personas = session.execute(select(Persona.key, Persona.name_en, Persona.name_zh).order_by(Persona.key))
    return {
        "patron_types": PATRON_TYPES,
        "languages": LANGUAGES,
        "channels": CHANNELS,
        "topics": TOPICS,
        "consents": CONSENT_PURPOSES,
        "escalation_choices": ESCALATION_CHOICES,
        "personas": [{"key": key, "en": en, "zh": zh} for key, en, zh in personas],
    }


async def _form(
    request: Request, staff: Staff, values: dict[str, Any], *, editing: bool, status: int = 200, **shown: Any
) -> Response:
    choices = await staff.crm(lambda session, _: _choices(session))
    return render(
        request,
        "segments_form.html",
        staff.signed,
        status=status,
        section="segments",
        values=values,
        editing=editing,
        **choices,
        **shown,
    )


@staff_only(ADMIN)
async def segments_page(request: Request, staff: Staff) -> Response:
    rows = await staff.crm(lambda session, _: [segment_row(s) for s in list_segments(session=session)])
    return render(request, "segments.html", staff.signed, section="segments", rows=rows)


@staff_only(ADMIN)
async def new_segment_page(request: Request, staff: Staff) -> Response:
    return await _form(request, staff, {}, editing=False)


@staff_only(ADMIN)
async def segment_page(request: Request, staff: Staff) -> Response:
    segment_id: int = request.path_params["segment_id"]

    def read(session: Session, _: StaffUser) -> dict[str, Any] | None:
        segment = session.get(Segment, segment_id)
        return segment_row(segment) if segment is not None else None

    found = await staff.crm(read)
    if not found:
        return Response("no such segment", status_code=404, media_type="text/plain; charset=utf-8")
    if found["rules"] is None:
        return render(request, "segments.html", staff.signed, section="segments", rows=[found], by_hand=True)
    return await _form(
        request, staff, values_of(found["name"], found["description"], found["rules"]), editing=True
    )


@staff_only(ADMIN)
async def segment_form(request: Request, staff: Staff) -> Response:
    """The form posted: Preview shows who matches; Save stores it. Either way a problem is shown beside
    the form, with everything typed kept."""
    form = await request.form()
    values = form_values(form)
    editing = form.get("editing") == "1"
    try:
        definition = parsed(segment_mapping(values))
        if form.get("do") == "save":
            await _save(request, staff, definition)
            return RedirectResponse("/segments?done=seg_saved", status_code=303)
        shown = await _preview(request, staff, definition)
    except SpecError as problem:
        return await _form(request, staff, values, editing=editing, status=400, problem=problem)
    except SegmentError as problem:
        return await _form(
            request, staff, values, editing=editing, status=400, problem=SpecError(str(problem))
        )
    return await _form(request, staff, values, editing=editing, preview=shown)


# --- API -----------------------------------------------------------------------------------------------


@staff_only(ADMIN)
async def segments_api(request: Request, staff: Staff) -> Response:
    rows = await staff.crm(lambda session, _: [segment_row(s) for s in list_segments(session=session)])
    return answer({"segments": rows})


async def _definition(request: Request) -> SegmentDefinition:
    """The request body as a segment file's mapping, parsed (BadInputError or SpecError if unusable)."""
    return parsed(await body_of(request))


@staff_only(ADMIN)
async def save_segment_api(request: Request, staff: Staff) -> Response:
    try:
        definition = await _definition(request)
        segment_id, count = await _save(request, staff, definition)
    except (BadInputError, SpecError, SegmentError) as problem:
        return error(400, str(problem))
    return answer({"id": segment_id, "name": definition.name, "count": count})


@staff_only(ADMIN)
async def preview_api(request: Request, staff: Staff) -> Response:
    try:
        definition = await _definition(request)
    except (BadInputError, SpecError) as problem:
        return error(400, str(problem))
    return answer((await _preview(request, staff, definition)).as_json())


ROUTES = [
    Route("/segments", segments_page, methods=["GET"]),
    Route("/segments/new", new_segment_page, methods=["GET"]),
    Route("/segments/form", segment_form, methods=["POST"]),
    Route("/segments/{segment_id:id}", segment_page, methods=["GET"]),
    one_route("/api/segments", {"GET": segments_api, "POST": save_segment_api}),
    Route("/api/segments/preview", preview_api, methods=["POST"]),
]

_ENUM_LIST = {"type": "array", "minItems": 1, "items": {"type": "string"}}
_DAYS = {"type": "integer", "minimum": 1, "maximum": 36500}
# The document names the rules whose every value it allows is a usable segment (schemathesis sends any
# value the document allows and expects it accepted); the API takes every rule of docs/segments.md.
_DEFINITION = {
    "type": "object",
    "description": "a segment file's mapping as JSON (docs/segments.md): name, description, rules;"
    " the rules not listed here (time_zone, interest_like) are taken too, as the file writes them",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
        "description": NULLABLE_STR,
        "rules": {
            "type": "object",
            "description": "all must hold; {} is every patron",
            "properties": {
                "patron_type": {**_ENUM_LIST, "items": {"type": "string", "enum": list(PATRON_TYPES)}},
                "language": {**_ENUM_LIST, "items": {"type": "string", "enum": list(LANGUAGES)}},
                "channel": {**_ENUM_LIST, "items": {"type": "string", "enum": list(CHANNELS)}},
                "consent": {**_ENUM_LIST, "items": {"type": "string", "enum": list(CONSENT_PURPOSES)}},
                "active_within_days": _DAYS,
                "inactive_for_days": _DAYS,
                "conversations_at_least": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                "gave_feedback": {"type": "boolean"},
                "escalations": {"type": "string", "enum": list(ESCALATION_CHOICES)},
                "source": {**_ENUM_LIST, "items": {"type": "string", "minLength": 1, "maxLength": 200}},
                "persona": {**_ENUM_LIST, "items": {"type": "string", "minLength": 1, "maxLength": 40}},
                "asked_about": {
                    "type": "object",
                    "properties": {
                        "topics": {**_ENUM_LIST, "items": {"type": "string", "enum": sorted(TOPICS)}},
                        "within_days": _DAYS,
                    },
                    "required": ["topics"],
                    "additionalProperties": False,
                },
                "rating_at_most": {
                    "type": "object",
                    "properties": {
                        "csat": {"type": "integer", "minimum": 1, "maximum": 5},
                        "nps": {"type": "integer", "minimum": 0, "maximum": 10},
                    },
                    "minProperties": 1,
                    "additionalProperties": False,
                },
                "suggestions_made": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
            },
            "additionalProperties": False,
        },
    },
    "required": ["name", "rules"],
    "additionalProperties": False,
}
_PREVIEW = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "sample": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["name", "count", "sample"],
}
_BODY = {"required": True, "content": {"application/json": {"schema": ref("SegmentDefinition")}}}
add_paths(
    {
        "/api/segments": {
            "get": {
                "summary": "Every segment: size, when counted and its rules (admins)",
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "properties": {"segments": {"type": "array", "items": ref("Segment")}},
                            "required": ["segments"],
                        },
                        "the segments",
                    ),
                    **errors(401, 403),
                },
            },
            "post": {
                "summary": "Store (or update, by name) a segment and count its patrons (admins)",
                "parameters": CSRF,
                "requestBody": _BODY,
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "integer"},
                                "name": {"type": "string"},
                                "count": {"type": "integer"},
                            },
                            "required": ["id", "name", "count"],
                        },
                        "saved and counted",
                    ),
                    **errors(400, 401, 403, e400="the definition is not usable: the parser's message"),
                },
            },
        },
        "/api/segments/preview": {
            "post": {
                "summary": "A definition's patrons now: count and a few (stores nothing; reads audited)",
                "parameters": CSRF,
                "requestBody": _BODY,
                "responses": {
                    "200": json_content(ref("SegmentPreview"), "the count and a sample"),
                    **errors(400, 401, 403, e400="the definition is not usable: the parser's message"),
                },
            }
        },
    },
    {
        "SegmentDefinition": _DEFINITION,
        "SegmentPreview": _PREVIEW,
        "Segment": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "name": {"type": "string"},
                "description": NULLABLE_STR,
                "member_count": NULLABLE_INT,
                "refreshed_at": NULLABLE_TIME,
                "updated_at": NULLABLE_TIME,
                "rules": {"type": "object", "nullable": True},
            },
            "required": ["id", "name", "member_count", "rules"],
        },
    },
)
