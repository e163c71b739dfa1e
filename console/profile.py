"""A patron's whole profile for staff: channels and sources, persona and segments, consents with their
history, conversations, feedback, suggestions and follow-ups received; the page and GET /api/patrons/{id}.
Each read writes one audit entry; each list holds the latest SHOWN rows (the page says if there are more)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.audit import read_patron_record
from bot.crm.models import (
    Campaign,
    ChannelIdentity,
    Consent,
    Conversation,
    Delivery,
    Escalation,
    Feedback,
    OutboxMessage,
    Patron,
    Persona,
    Segment,
    SegmentMembership,
    StaffUser,
    Suggestion,
)
from bot.crm.patrons import PatronNotFoundError
from console.answers import answer, error
from console.gate import Staff, staff_only
from console.i18n import add_texts
from console.pages import render

# The newest rows of each list shown; one more is read to know whether older ones exist.
SHOWN = 50

TEXT = {
    "profile_identities": {"en": "Channels and sources", "zh": "渠道与来源"},
    "profile_source": {"en": "First came through", "zh": "首次来源"},
    "profile_since": {"en": "Since", "zh": "始于"},
    "profile_reachable": {"en": "Reachable", "zh": "可联系"},
    "profile_yes": {"en": "yes", "zh": "是"},
    "profile_no": {"en": "no", "zh": "否"},
    "profile_paused": {"en": "Campaign messages paused until", "zh": "活动消息暂停至"},
    "profile_persona": {"en": "Persona", "zh": "读者画像"},
    "profile_segments": {"en": "Segments", "zh": "读者分组"},
    "profile_added": {"en": "Added", "zh": "加入时间"},
    "profile_consent_now": {"en": "In force", "zh": "当前状态"},
    "profile_consent_history": {"en": "Consent decisions", "zh": "同意授权记录"},
    "profile_purpose": {"en": "Purpose", "zh": "用途"},
    "profile_decision": {"en": "Decision", "zh": "决定"},
    "profile_how": {"en": "How (channel, wording)", "zh": "方式（渠道、文本版本）"},
    "profile_conversations": {"en": "Conversations", "zh": "会话"},
    "profile_started": {"en": "Started", "zh": "开始时间"},
    "profile_escalations": {"en": "Escalations", "zh": "转人工"},
    "profile_feedback": {"en": "Feedback", "zh": "评价"},
    "profile_rating": {"en": "Rating", "zh": "评分"},
    "profile_comment": {"en": "Comment", "zh": "留言"},
    "profile_suggestions": {"en": "Suggestions and requests", "zh": "建议与荐购"},
    "profile_follow_ups": {"en": "Follow-ups received", "zh": "收到的回访与推送"},
    "profile_campaign": {"en": "Campaign", "zh": "活动"},
    "profile_outcome": {"en": "Outcome", "zh": "结果"},
    "profile_missing": {"en": "There is no patron {id}.", "zh": "没有编号为 {id} 的读者。"},
    "profile_none": {"en": "None.", "zh": "无。"},
    "profile_more": {
        "en": "Showing the latest {n}; older ones are in the export.",
        "zh": "仅显示最近 {n} 条；更早的记录见数据导出。",
    },
    "profile_recent_note": {"en": "The latest {n} messages.", "zh": "最近 {n} 条消息。"},
    "profile_privacy": {"en": "Patron's data rights", "zh": "读者数据权利"},
    "profile_export": {"en": "Export data (JSON)", "zh": "导出数据（JSON）"},
    "profile_erase": {"en": "Erase patron…", "zh": "删除读者…"},
}
add_texts(TEXT)


def _latest(session: Session, name: str, query: Select, lists: dict[str, Any], more: list[str]) -> None:
    """The first SHOWN rows of `query` as dicts (by column label) into lists[name]; `name` into `more`
    when there were more."""
    rows = [dict(row._mapping) for row in session.execute(query.limit(SHOWN + 1))]
    lists[name] = rows[:SHOWN]
    if len(rows) > SHOWN:
        more.append(name)


def _identities(session: Session, patron_id: int) -> list[dict[str, Any]]:
    query = (
        select(
            ChannelIdentity.channel,
            ChannelIdentity.external_id,
            ChannelIdentity.source,
            ChannelIdentity.created_at.label("since"),
        )
        .where(ChannelIdentity.patron_id == patron_id)
        .order_by(ChannelIdentity.created_at, ChannelIdentity.id)
    )
    return [dict(row._mapping) for row in session.execute(query)]


def _persona(session: Session, persona_id: int | None) -> dict[str, Any] | None:
    persona = session.get(Persona, persona_id) if persona_id is not None else None
    if persona is None:
        return None
    return {"key": persona.key, "name_en": persona.name_en, "name_zh": persona.name_zh}


def _queries(patron_id: int) -> dict[str, Select]:
    """Each list of the profile, newest first; every one is by an indexed patron column."""
    return {
        "consent_history": select(
            Consent.purpose,
            Consent.granted,
            Consent.channel,
            Consent.wording_version.label("wording"),
            Consent.recorded_at.label("at"),
        )
        .where(Consent.patron_id == patron_id)
        .order_by(Consent.recorded_at.desc(), Consent.id.desc()),
        "segments": select(Segment.id, Segment.name, SegmentMembership.added_at)
        .join(Segment, Segment.id == SegmentMembership.segment_id)
        .where(SegmentMembership.patron_id == patron_id)
        .order_by(SegmentMembership.added_at.desc(), Segment.id),
        "conversations": select(
            Conversation.id,
            Conversation.channel,
            Conversation.status,
            Conversation.started_at,
            Conversation.last_message_at,
        )
        .where(Conversation.patron_id == patron_id)
        .order_by(Conversation.started_at.desc(), Conversation.id.desc()),
        "escalations": select(
            Escalation.id,
            Escalation.conversation_id,
            Escalation.reason,
            Escalation.status,
            Escalation.created_at,
        )
        .where(Escalation.patron_id == patron_id)
        .order_by(Escalation.created_at.desc(), Escalation.id.desc()),
        "feedback": select(
            Feedback.created_at.label("at"),
            Feedback.csat,
            Feedback.nps,
            Feedback.helpful,
            Feedback.topic,
            Feedback.comment,
            Feedback.conversation_id,
        )
        .where(Feedback.patron_id == patron_id)
        .order_by(Feedback.created_at.desc(), Feedback.id.desc()),
        "suggestions": select(
            Suggestion.id,
            Suggestion.kind,
            Suggestion.status,
            Suggestion.topic,
            Suggestion.text,
            Suggestion.created_at,
            Suggestion.library_answer,
            Suggestion.answered_at,
        )
        .where(Suggestion.patron_id == patron_id)
        .order_by(Suggestion.created_at.desc(), Suggestion.id.desc()),
        "follow_ups": select(
            Delivery.id,
            Campaign.id.label("campaign_id"),
            Campaign.name.label("campaign"),
            Delivery.channel,
            Delivery.state,
            Delivery.reason,
            Delivery.scheduled_at,
            Delivery.sent_at,
            OutboxMessage.status.label("outbox_status"),
            OutboxMessage.delivered_at,
        )
        .join(Campaign, Campaign.id == Delivery.campaign_id)
        .outerjoin(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
        .where(Delivery.patron_id == patron_id)
        .order_by(Delivery.scheduled_at.desc(), Delivery.id.desc()),
    }


def _sections(session: Session, patron_id: int) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every list of the profile, at most SHOWN rows each, and the names of those that hold more."""
    lists: dict[str, list[dict[str, Any]]] = {}
    more: list[str] = []
    for name, query in _queries(patron_id).items():
        _latest(session, name, query, lists, more)
    by_conversation = {row["id"]: row for row in lists["conversations"]}
    for conversation in lists["conversations"]:
        conversation["escalations"] = []
    for escalation in lists["escalations"]:
        if escalation["conversation_id"] in by_conversation:
            by_conversation[escalation["conversation_id"]]["escalations"].append(escalation["id"])
    for delivery in lists["follow_ups"]:
        # What came of it: the outbox's word once handed to it (delivered, failed...), else the delivery's.
        outcome = delivery.pop("outbox_status") or delivery["state"]
        delivery["outcome"] = f"{outcome} ({delivery['reason']})" if delivery["reason"] else outcome
        delivery["at"] = delivery["delivered_at"] or delivery["sent_at"] or delivery["scheduled_at"]
    return lists, more


def patron_profile(session: Session, staff: StaffUser, patron_id: int) -> dict[str, Any]:
    """A patron's whole profile for a staff member; the read writes one audit entry."""
    record = read_patron_record(
        session=session,
        actor=f"staff:{staff.username}",
        patron_ref=str(patron_id),
        reason="console: patron profile",
        staff_user=staff,
        recent=SHOWN,
    )
    patron = session.get(Patron, patron_id)
    assert patron is not None  # read_patron_record found it in this transaction
    lists, more = _sections(session, patron_id)
    return {
        **dataclasses.asdict(record),
        "identities": _identities(session, patron_id),
        "reachable": bool(patron.reachable),
        "paused_until": patron.paused_until,
        "created_at": patron.created_at,
        "persona": _persona(session, patron.persona_id),
        **lists,
        "more": more,
        "shown": SHOWN,
    }


def problem_page(request: Request, staff: Staff, status: int, key: str, **fields: Any) -> Response:
    """A page that says only what went wrong (`key` in the console's words), with its status."""
    return render(request, "patron_problem.html", staff.signed, status=status, problem_key=key, fields=fields)


@staff_only()
async def show_patron(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        return answer(await staff.crm(lambda session, user: patron_profile(session, user, patron_id)))
    except PatronNotFoundError:
        return error(404, f"no patron {patron_id}")


@staff_only()
async def patron_page(request: Request, staff: Staff) -> Response:
    patron_id: int = request.path_params["patron_id"]
    try:
        profile = await staff.crm(lambda session, user: patron_profile(session, user, patron_id))
    except PatronNotFoundError:
        return problem_page(request, staff, 404, "profile_missing", id=patron_id)
    return render(request, "patron.html", staff.signed, p=profile)


ROUTES = [
    Route("/patrons/{patron_id:id}", patron_page, methods=["GET"]),
    Route("/api/patrons/{patron_id:id}", show_patron, methods=["GET"]),
]
