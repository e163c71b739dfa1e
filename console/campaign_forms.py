"""The campaign form made into the mapping a campaign file holds, the message as a sample patron reads it,
a campaign report's figures as rows, bars and CSV, and the campaigns API in the OpenAPI document."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from starlette.datastructures import FormData

from bot.crm.models import TRIGGER_EVENTS
from bot.outreach.campaigns import CAMPAIGN_PURPOSES, QUESTION_ASKS, CampaignDefinition
from bot.outreach.messages import (
    MAX_BUTTONS,
    MAX_TITLE_CHARS,
    MESSAGE_LANGUAGES,
    as_shown,
    button_titles,
    campaign_text,
)
from console.openapi import add_paths
from console.openapi_parts import CSRF, ROW_ID, errors, json_content, ref, text_schema

# The patron a message preview is written for: made up, so a preview reads no patron's data.
SAMPLE_PATRON = {"display_name": "Alex", "patron_type": "postgraduate"}
SCHEDULE_KINDS = ("none", "at", "cron", "after")
_WHOLE = re.compile(r"^[0-9]{1,9}$")


def form_values(form: FormData) -> dict[str, str]:
    """What was typed and chosen, as typed, to show the form again."""
    return {key: str(form.get(key) or "") for key in form if key != "csrf_token"}


def _days(text: str) -> Any:
    try:
        return int(text) if _WHOLE.match(text) else float(text)
    except ValueError:
        return text


def _when(text: str, zone: ZoneInfo) -> str:
    """A datetime-local value ("2027-03-01T09:00") in the library's zone, as ISO 8601 with its offset;
    anything else as typed, for the parser to refuse."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.isoformat()


def _buttons(values: Mapping[str, str]) -> list[dict[str, Any]]:
    buttons: list[dict[str, Any]] = []
    for number in range(MAX_BUTTONS):
        titles = {
            language: values.get(f"button{number}_{language}", "").strip() for language in MESSAGE_LANGUAGES
        }
        payload = values.get(f"button{number}_payload", "").strip()
        if not payload and not any(titles.values()):
            continue
        buttons.append(
            {"title": {language: title for language, title in titles.items() if title}, "payload": payload}
        )
    return buttons


def _schedule(values: Mapping[str, str], zone: ZoneInfo) -> dict[str, Any] | None:
    kind = values.get("schedule_kind") or "none"
    if kind == "at":
        return {"at": _when(values.get("at", "").strip(), zone)}
    if kind == "cron":
        schedule: dict[str, Any] = {"cron": values.get("cron", "")}
        if values.get("cron_timezone", "").strip():
            schedule["timezone"] = values["cron_timezone"].strip()
        return schedule
    if kind == "after":
        return {
            "after": {"event": values.get("after_event", ""), "days": _days(values.get("after_days", ""))}
        }
    return None


def campaign_mapping(values: Mapping[str, str], zone: ZoneInfo) -> dict[str, Any]:
    """The campaign file's mapping the form's values stand for (fields left empty are left out)."""
    mapping: dict[str, Any] = {}
    for key in ("name", "segment", "purpose", "kind"):
        if values.get(key, "").strip():
            mapping[key] = values[key]
    if values.get("asks"):
        mapping["asks"] = values["asks"]
    message = {
        language: values[f"message_{language}"]
        for language in MESSAGE_LANGUAGES
        if values.get(f"message_{language}", "").strip()
    }
    if message:
        mapping["message"] = message
    buttons = _buttons(values)
    if buttons:
        mapping["buttons"] = buttons
    schedule = _schedule(values, zone)
    if schedule is not None:
        mapping["schedule"] = schedule
    return mapping


def campaign_values(*, stored: Mapping[str, Any], segment: str, zone: ZoneInfo) -> dict[str, str]:
    """The form's values for a stored campaign's columns (the reverse of campaign_mapping)."""
    values = {
        "name": str(stored["name"]),
        "segment": segment,
        "purpose": str(stored["purpose"]),
        "kind": str(stored["kind"] or "announcement"),
        "asks": str(stored["asks"] or ""),
        "schedule_kind": "none",
    }
    values |= {f"message_{lang}": str(text) for lang, text in (stored["message"] or {}).items()}
    for number, button in enumerate(stored["buttons"] or []):
        values |= {f"button{number}_{lang}": str(title) for lang, title in button["title"].items()}
        values[f"button{number}_payload"] = str(button["payload"])
    schedule = stored["schedule"] or {}
    if "at" in schedule:
        when = dt.datetime.fromisoformat(schedule["at"]).astimezone(zone)
        values |= {"schedule_kind": "at", "at": when.strftime("%Y-%m-%dT%H:%M")}
    elif "cron" in schedule:
        values |= {"schedule_kind": "cron", "cron": schedule["cron"], "cron_timezone": schedule["timezone"]}
    elif "after" in schedule:
        days = float(schedule["after"]["days"])
        shown = str(int(days)) if days.is_integer() else str(days)
        values |= {"schedule_kind": "after", "after_event": schedule["after"]["event"], "after_days": shown}
    return values


def message_preview(definition: CampaignDefinition) -> list[dict[str, Any]]:
    """Per language, the text the sample patron receives (opt-out line included) and how a channel
    without buttons shows them (numbered lines)."""
    shown = []
    for language in definition.message:
        used, text = campaign_text(
            campaign_message=definition.message, language=language, fields=SAMPLE_PATRON
        )
        titles = [button["title"] for button in button_titles(definition.buttons, used)]
        shown.append({"language": used, "text": text, "titles": titles, "as_shown": as_shown(text, titles)})
    return shown


TEXT = {
    "camp_edit": {"en": "Edit campaign {name}", "zh": "编辑推送 {name}"},
    "camp_edit_link": {"en": "Edit", "zh": "编辑"},
    "camp_edit_hint": {
        "en": "Saving changes this campaign; deliveries already made stay as they were.",
        "zh": "保存即修改此推送；已生成的推送记录保持不变。",
    },
    "camp_title": {"en": "Campaigns", "zh": "推送活动"},
    "camp_new": {"en": "New campaign", "zh": "新建推送"},
    "camp_none": {"en": "No campaigns yet.", "zh": "暂无推送活动。"},
    "camp_name": {"en": "Name", "zh": "名称"},
    "camp_segment": {"en": "Segment", "zh": "读者分群"},
    "camp_no_segments": {"en": "Save a segment first.", "zh": "请先保存一个读者分群。"},
    "camp_purpose": {"en": "Consent it needs", "zh": "所需授权"},
    "camp_kind": {"en": "Kind", "zh": "类型"},
    "camp_announcement": {"en": "announcement (sent as written)", "zh": "通知（按原文发送）"},
    "camp_question": {"en": "question (the answer is recorded)", "zh": "提问（记录读者的回答）"},
    "camp_asks": {"en": "A question asks", "zh": "提问内容"},
    "camp_asks_none": {"en": "(only for a question)", "zh": "（仅用于提问）"},
    "camp_message": {"en": "Message in {language}", "zh": "{language}消息"},
    "camp_fields": {"en": "A message may name: {fields}.", "zh": "消息中可使用：{fields}。"},
    "camp_button": {"en": "Button {number}", "zh": "按钮 {number}"},
    "camp_title_in": {"en": "Title ({language})", "zh": "标题（{language}）"},
    "camp_payload": {"en": "Payload (an intent, like /affirm)", "zh": "载荷（意图，如 /affirm）"},
    "camp_schedule": {"en": "When it is sent", "zh": "发送时间"},
    "camp_draft": {
        "en": "no schedule (a draft: sent by campaign run)",
        "zh": "不定时（草稿：由 campaign run 发送）",
    },
    "camp_at": {"en": "once, at ({zone})", "zh": "在指定时间发送一次（{zone}）"},
    "camp_cron": {"en": "recurring (cron, like 0 9 * * MON)", "zh": "周期发送（cron，如 0 9 * * MON）"},
    "camp_cron_zone": {"en": "… in time zone (empty: {zone})", "zh": "……时区（留空：{zone}）"},
    "camp_after": {"en": "after an event of the patron's", "zh": "读者事件之后"},
    "camp_event": {"en": "Event", "zh": "事件"},
    "camp_days": {"en": "Days after (0.5 is 12 hours)", "zh": "之后天数（0.5 即 12 小时）"},
    "camp_checked": {
        "en": "Checked when each message is sent: consent, reachability, pauses, the weekly cap"
        " and quiet hours ({hours}).",
        "zh": "每条消息发送时检查：授权、可达性、暂停、每周上限与免打扰时段（{hours}）。",
    },
    "camp_preview": {"en": "Preview", "zh": "预览"},
    "camp_save": {"en": "Save", "zh": "保存"},
    "camp_preview_h": {"en": "What {name} ({type}) would read", "zh": "读者 {name}（{type}）将看到"},
    "camp_preview_buttons": {
        "en": "On WeChat, with the buttons as lines:",
        "zh": "在微信中，按钮显示为编号行：",
    },
    "camp_problem": {"en": "Not usable: {message}", "zh": "无法使用：{message}"},
    "camp_status": {"en": "Status", "zh": "状态"},
    "camp_when": {"en": "Schedule", "zh": "发送计划"},
    "camp_counts": {"en": "Deliveries / sent / skipped", "zh": "投递 / 已发送 / 已跳过"},
    "camp_report": {"en": "Campaign {id}: {name}", "zh": "推送 {id}：{name}"},
    "camp_chart": {"en": "What the campaign did", "zh": "推送效果"},
    "camp_figure": {"en": "Figure", "zh": "指标"},
    "camp_count": {"en": "Count", "zh": "数量"},
    "camp_ratings": {"en": "Ratings after it", "zh": "推送后的评分"},
    "camp_pause": {"en": "Pause", "zh": "暂停"},
    "camp_resume": {"en": "Resume", "zh": "恢复"},
    "camp_cancel": {"en": "Cancel the campaign", "zh": "取消推送"},
    "camp_confirm": {
        "en": "Yes, cancel it for good (messages already queued still go)",
        "zh": "确认永久取消（已进入发送队列的消息仍会发出）",
    },
    "camp_confirm_needed": {
        "en": "tick the box to confirm the cancellation",
        "zh": "请勾选确认框以取消推送",
    },
    "done_camp_saved": {"en": "Campaign saved.", "zh": "推送已保存。"},
    "done_camp_paused": {"en": "Campaign paused.", "zh": "推送已暂停。"},
    "done_camp_resumed": {"en": "Campaign resumed.", "zh": "推送已恢复。"},
    "done_camp_cancelled": {"en": "Campaign cancelled.", "zh": "推送已取消。"},
}


# --- the API's part of the OpenAPI document -----------------------------------------------------------

# A message the document allows: no braces (a template's fields are taken, but a brace the document
# allowed could make a template the parser refuses), short enough for every channel.
_MESSAGE = {
    "type": "string",
    "minLength": 1,
    "maxLength": 300,
    "pattern": r"^[^{}]*[^\s{}\x1c-\x1f\x85][^{}]*$",
}
_TITLE = {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS}
_AFTER = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": list(TRIGGER_EVENTS)},
        "days": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 3650},
    },
    "required": ["event", "days"],
    "additionalProperties": False,
}
# Every field of a campaign file (docs/campaigns.md). A body the document allows may still be refused
# with 400 for what a schema cannot say (a time in the past, a cron expression that never fires, a
# button without a title in one of the message's languages, a question without asks).
_CAMPAIGN = {
    "type": "object",
    "description": "a campaign file's mapping as JSON (docs/campaigns.md)",
    "properties": {
        "name": text_schema(200),
        "segment": text_schema(100),
        "purpose": {"type": "string", "enum": list(CAMPAIGN_PURPOSES)},
        "kind": {"type": "string", "enum": ["announcement", "question"]},
        "asks": {"type": "string", "enum": list(QUESTION_ASKS), "description": "what a question asks"},
        "message": {
            "type": "object",
            "properties": dict.fromkeys(MESSAGE_LANGUAGES, _MESSAGE),
            "minProperties": 1,
            "additionalProperties": False,
        },
        "buttons": {
            "type": "array",
            "maxItems": MAX_BUTTONS,
            "items": {
                "type": "object",
                "properties": {
                    "title": {
                        "type": "object",
                        "properties": dict.fromkeys(MESSAGE_LANGUAGES, _TITLE),
                        "minProperties": 1,
                        "additionalProperties": False,
                    },
                    "payload": {"type": "string", "description": "an intent: /affirm, /give_feedback{...}"},
                },
                "required": ["title", "payload"],
                "additionalProperties": False,
            },
        },
        "schedule": {
            "description": "one of: at (ISO 8601 with its offset), cron (with an IANA timezone), after",
            "oneOf": [
                {
                    "type": "object",
                    "properties": {"at": {"type": "string", "format": "date-time"}},
                    "required": ["at"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"cron": {"type": "string"}, "timezone": {"type": "string"}},
                    "required": ["cron"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"after": _AFTER},
                    "required": ["after"],
                    "additionalProperties": False,
                },
            ],
        },
    },
    "required": ["name", "segment", "message"],
    "additionalProperties": False,
}
_ID = [{"name": "campaign_id", "in": "path", "required": True, "schema": ROW_ID}]
_NO_CAMPAIGN = "no such campaign"


def _state_change(summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [*_ID, *CSRF],
            "responses": {
                "200": json_content(ref("CampaignState"), summary),
                **errors(
                    401, 403, 404, 409, e404=_NO_CAMPAIGN, e409="the campaign's status does not allow it"
                ),
            },
        }
    }


add_paths(
    {
        "/api/campaigns": {
            "get": {
                "summary": "Campaigns, newest first: segment, schedule in words, status and counts (admins)",
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "properties": {"campaigns": {"type": "array", "items": {"type": "object"}}},
                            "required": ["campaigns"],
                        },
                        "the campaigns",
                    ),
                    **errors(401, 403),
                },
            },
            "post": {
                "summary": "Store (or update, by name) a campaign: a campaign file's mapping (admins)",
                "parameters": CSRF,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _CAMPAIGN}}},
                "responses": {
                    "200": json_content(ref("CampaignState"), "saved"),
                    **errors(
                        400,
                        401,
                        403,
                        404,
                        409,
                        e400="the campaign is not usable: the parser's message",
                        e404="no segment of that name",
                        e409="the segment matches nobody, or a campaign of that name is cancelled or done",
                    ),
                },
            },
        },
        "/api/campaigns/{campaign_id}/pause": _state_change("Pause the campaign"),
        "/api/campaigns/{campaign_id}/resume": _state_change("Resume a paused campaign"),
        "/api/campaigns/{campaign_id}/cancel": _state_change(
            "Cancel the campaign and its pending deliveries"
        ),
        "/api/campaigns/{campaign_id}/report": {
            "get": {
                "summary": "The campaign's report: deliveries by outcome, skips by reason, replies, ratings",
                "parameters": _ID,
                "responses": {
                    "200": json_content(
                        {"type": "object", "required": ["id", "name", "status"]}, "the report"
                    ),
                    **errors(401, 403, 404, e404=_NO_CAMPAIGN),
                },
            }
        },
    },
    {
        "CampaignState": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "status": {"type": "string"},
                "cancelled_deliveries": {"type": "integer"},
            },
            "required": ["id", "status"],
        }
    },
)
