"""A patron's data rights from the console (admins only): export everything held about them as JSON, and
erase them after typing their id to confirm; both through bot/privacy, reaching the CRM and Rasa's stores
exactly as `patronbot patron export|erase` does, and both audited as the staff member's."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.database import describe_error
from bot.crm.models import ChannelIdentity, StaffUser
from bot.crm.patrons import PatronNotFoundError, resolve_patron
from bot.crm.rasa_events import RasaEventStore, rasa_event_stores
from bot.privacy.erasure import ErasureReport, erase_patron
from bot.privacy.export import export_patron
from bot.settings import Settings
from console.answers import answer, error
from console.api import BadInputError, body_of
from console.gate import ADMIN, Staff, one_route, settings_of, staff_only
from console.i18n import add_texts
from console.openapi import add_paths
from console.openapi_parts import CSRF, ROW_ID, errors, json_body, json_content, ref
from console.pages import render
from console.profile import problem_page

T = TypeVar("T")
log = logging.getLogger(__name__)

TEXT = {
    "rights_erase_title": {"en": "Erase patron {id}", "zh": "删除读者 {id}"},
    "rights_erase_intro": {
        "en": "Erasing removes this patron for good: it cannot be undone.",
        "zh": "删除后该读者的数据将永久清除，无法恢复。",
    },
    "rights_erase_deleted": {
        "en": "Deleted: the patron, their channels, conversations and every message, consents, segment "
        "memberships, interests and persona, messages waiting in the outbox, and their events in Rasa's "
        "tracker store and event broker.",
        "zh": "将删除：读者本人、其渠道、全部会话与消息、同意授权、分组成员关系、兴趣与画像、待发送消息，"
        "以及 Rasa 对话存储和事件队列中的相关事件。",
    },
    "rights_erase_kept": {
        "en": "Kept without the patron and their words, so the library's figures stay true: ratings, "
        "suggestions, escalations (open ones are closed), campaign deliveries, the audit log, and daily "
        "message counts.",
        "zh": "以下记录将去除读者身份和文字后保留，以保证统计准确：评分、建议、"
        "转人工记录（未处理的将被关闭）、活动发送记录、审计日志，以及每日消息计数。",
    },
    "rights_erase_confirm": {
        "en": "To confirm, type the patron's number ({id})",
        "zh": "请输入读者编号（{id}）以确认",
    },
    "rights_erase_button": {"en": "Erase this patron for good", "zh": "永久删除该读者"},
    "rights_erase_mismatch": {
        "en": "The number typed is not {id}: nothing was erased.",
        "zh": "输入的编号不是 {id}，未删除任何数据。",
    },
    "rights_erased_title": {"en": "Patron {id} erased", "zh": "读者 {id} 已删除"},
    "rights_erased_summary": {
        "en": "{deleted} rows deleted, {kept} kept without the patron, {events} Rasa events deleted; "
        "{counted} messages kept as anonymous daily counts.",
        "zh": "已删除 {deleted} 行，{kept} 行去标识后保留，已删除 {events} 条 Rasa 事件；"
        "{counted} 条消息计入匿名每日统计。",
    },
    "rights_erased_closed": {"en": "Open escalations closed: {ids}", "zh": "已关闭的转人工会话：{ids}"},
    "rights_back": {"en": "Back to the profile", "zh": "返回读者档案"},
    "rights_store_problem": {
        "en": "The CRM or one of Rasa's stores could not be reached: nothing was done. Try again later.",
        "zh": "无法访问客户数据库或 Rasa 数据存储，未执行任何操作，请稍后再试。",
    },
}
add_texts(TEXT)

UNREACHABLE = "the CRM or one of Rasa's stores (tracker store, event broker) could not be reached: try again"
EXPORT_REASON = "console: patron data export"
ERASE_REASON = "console: patron erasure"


def _with_stores(settings: Settings, work: Callable[[list[RasaEventStore]], T]) -> T:
    """`work` with Rasa's stores as the command line reaches them (the settings' tracker store and
    event broker), their connections closed afterwards."""
    stores = rasa_event_stores(
        tracker_url=settings.rasa_tracker_url, broker_url=settings.rasa_event_broker_url
    )
    try:
        return work(stores)
    finally:
        for store in stores:
            store.dispose()


def _export(settings: Settings, patron_id: int) -> Callable[[Session, StaffUser], dict[str, Any]]:
    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        return _with_stores(
            settings,
            lambda stores: export_patron(
                session=session,
                patron_ref=str(patron_id),
                actor=f"staff:{user.username}",
                reason=EXPORT_REASON,
                rasa_stores=stores,
                staff_user=user,
            ),
        )

    return work


def _erase(settings: Settings, patron_id: int) -> Callable[[Session, StaffUser], ErasureReport]:
    def work(session: Session, user: StaffUser) -> ErasureReport:
        return _with_stores(
            settings,
            lambda stores: erase_patron(
                session=session,
                patron_ref=str(patron_id),
                actor=f"staff:{user.username}",
                reason=ERASE_REASON,
                rasa_stores=stores,
                staff_user=user,
            ),
        )

    return work


def report_of(report: ErasureReport) -> dict[str, Any]:
    """What an erasure did, in counts (never the patron's conversation ids)."""
    return {
        "patron_id": report.patron_id,
        "deleted_rows": report.deleted_rows,
        "anonymised_rows": report.anonymised_rows,
        "rasa_events_deleted": report.rasa_events_deleted,
        "interactions_counted": report.interactions_counted,
        "escalations_closed": list(report.escalations_closed),
    }


def _download(document: dict[str, Any], patron_id: int) -> Response:
    # Compact, as the command line writes it: indentation makes large exports several times slower.
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    disposition = f'attachment; filename="patron-{patron_id}-export.json"'
    return Response(text, media_type="application/json", headers={"Content-Disposition": disposition})


async def _run(staff: Staff, work: Callable[[Session, StaffUser], T]) -> T | None:
    """`work`'s result, or None when a store could not be used (logged in one line, no patron data)."""
    try:
        return await staff.crm(work)
    except SQLAlchemyError as problem:
        log.error("patron data rights: %s", describe_error(problem, ""))
        return None


@staff_only(ADMIN)
async def export_api(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        document = await _run(staff, _export(settings_of(request), patron_id))
    except PatronNotFoundError:
        return error(404, f"no patron {patron_id}")
    if document is None:
        return error(503, UNREACHABLE)
    return _download(document, patron_id)


@staff_only(ADMIN)
async def erase_api(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        confirm = (await body_of(request)).get("confirm")
    except BadInputError as problem:
        return error(400, str(problem))
    try:
        if not _confirms(confirm, patron_id):
            # An unknown patron is 404 whatever was typed; a known one is erased only when confirmed.
            await staff.crm(lambda session, _: resolve_patron(session=session, ref=str(patron_id)))
            return error(400, f"'confirm' must be the patron's id, {patron_id}, to erase them")
        report = await _run(staff, _erase(settings_of(request), patron_id))
    except PatronNotFoundError:
        return error(404, f"no patron {patron_id}")
    if report is None:
        return error(503, UNREACHABLE)
    return answer(report_of(report))


def _confirms(given: Any, patron_id: int) -> bool:
    if isinstance(given, bool):
        return False
    return (isinstance(given, int) and given == patron_id) or (
        isinstance(given, str) and given.strip() == str(patron_id)
    )


@staff_only(ADMIN)
async def export_download(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        document = await _run(staff, _export(settings_of(request), patron_id))
    except PatronNotFoundError:
        return problem_page(request, staff, 404, "profile_missing", id=patron_id)
    if document is None:
        return problem_page(request, staff, 503, "rights_store_problem")
    return _download(document, patron_id)


def _whom(session: Session, user: StaffUser, patron_id: int) -> dict[str, Any]:
    """Whom an erasure would reach; showing it is a read of their data, audited as the CLI does."""
    patron = resolve_patron(session=session, ref=str(patron_id))
    log_access(
        session=session,
        actor=f"staff:{user.username}",
        action="read",
        patron_id=patron.id,
        reason="console: confirming an erasure",
        staff_user=user,
    )
    channels = session.execute(
        select(ChannelIdentity.channel, ChannelIdentity.external_id)
        .where(ChannelIdentity.patron_id == patron.id)
        .order_by(ChannelIdentity.id)
    ).all()
    return {
        "patron_id": patron.id,
        "display_name": patron.display_name,
        "channels": [f"{channel}:{external}" for channel, external in channels],
    }


@staff_only(ADMIN)
async def erase_page(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        whom = await staff.crm(lambda session, user: _whom(session, user, patron_id))
    except PatronNotFoundError:
        return problem_page(request, staff, 404, "profile_missing", id=patron_id)
    return render(request, "patron_erase.html", staff.signed, p=whom, mismatch=False)


@staff_only(ADMIN)
async def erase_form(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    form = await request.form()
    if not _confirms(str(form.get("confirm") or ""), patron_id):
        try:
            whom = await staff.crm(lambda session, user: _whom(session, user, patron_id))
        except PatronNotFoundError:
            return problem_page(request, staff, 404, "profile_missing", id=patron_id)
        return render(request, "patron_erase.html", staff.signed, status=400, p=whom, mismatch=True)
    try:
        report = await _run(staff, _erase(settings_of(request), patron_id))
    except PatronNotFoundError:
        return problem_page(request, staff, 404, "profile_missing", id=patron_id)
    if report is None:
        return problem_page(request, staff, 503, "rights_store_problem")
    return render(request, "patron_erased.html", staff.signed, r=report_of(report))


_PATRON_ID = {"name": "patron_id", "in": "path", "required": True, "schema": ROW_ID}
_ERASURE = {
    "type": "object",
    "properties": {
        "patron_id": {"type": "integer"},
        "deleted_rows": {"type": "object", "additionalProperties": {"type": "integer"}},
        "anonymised_rows": {"type": "object", "additionalProperties": {"type": "integer"}},
        "rasa_events_deleted": {"type": "object", "additionalProperties": {"type": "integer"}},
        "interactions_counted": {"type": "integer"},
        "escalations_closed": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["patron_id", "deleted_rows", "anonymised_rows", "rasa_events_deleted"],
}

PATHS = {
    "/api/patrons/{patron_id}/export": {
        "get": {
            "summary": "Everything held about a patron, from the CRM and Rasa's stores (admins; audited)",
            "parameters": [_PATRON_ID],
            "responses": {
                "200": json_content(
                    {
                        "type": "object",
                        "properties": {"format": {"type": "string"}, "patron": {"type": "object"}},
                        "required": ["format", "patron"],
                    },
                    "the export document",
                ),
                **errors(401, 403, 404, 503, e404="no such patron", e503=UNREACHABLE),
            },
        }
    },
    "/api/patrons/{patron_id}/erase": {
        "post": {
            "summary": "Erase a patron from the CRM and Rasa's stores (admins; audited); confirm with the id",
            "parameters": [_PATRON_ID, *CSRF],
            "requestBody": json_body({"confirm": ROW_ID}, ["confirm"]),
            "responses": {
                "200": json_content(ref("Erasure"), "what was erased and what kept anonymously"),
                **errors(
                    400,
                    401,
                    403,
                    404,
                    503,
                    e400="the body is not usable, or 'confirm' is not the patron's id",
                    e404="no such patron",
                    e503=UNREACHABLE,
                ),
            },
        }
    },
}

add_paths(PATHS, {"Erasure": _ERASURE})

ROUTES = [
    Route("/patrons/{patron_id:id}/export", export_download, methods=["GET"]),
    one_route("/patrons/{patron_id:id}/erase", {"GET": erase_page, "POST": erase_form}),
    Route("/api/patrons/{patron_id:id}/export", export_api, methods=["GET"]),
    Route("/api/patrons/{patron_id:id}/erase", erase_api, methods=["POST"]),
]
