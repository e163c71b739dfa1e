"""The segment form: its fields made into the mapping a segment file holds (and back), the preview of a
definition not yet stored, on the segment services' own member query; and the pages' words."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from bot.crm.audit import log_access
from bot.crm.database import session_scope
from bot.crm.models import Patron, PatronInterest, StaffUser, utcnow
from bot.outreach.interests import PURPOSE as INTEREST_PURPOSE
from bot.outreach.interests import QueryEncoder, consent_in_force, interest_vectors, model_key
from bot.outreach.segments import (
    PreviewPatron,
    SegmentDefinition,
    SegmentPreview,
    channels_of,
    member_query,
)

# The form's list rules (checkboxes, or comma-separated text) and number rules, as the file names them.
CHECKED = ("patron_type", "language", "channel", "consent", "persona")
LISTED = ("source", "time_zone")
NUMBERS = ("active_within_days", "inactive_for_days", "conversations_at_least")
SAMPLE = 10
_WHOLE = re.compile(r"^-?[0-9]{1,9}$")
_CHUNK = 5000


def _number(text: str) -> Any:
    """A typed number as the file would hold it; anything else as typed, for the parser to refuse."""
    text = text.strip()
    if _WHOLE.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _words(text: str) -> list[str]:
    return [word.strip() for word in text.split(",") if word.strip()]


def form_values(form: FormData) -> dict[str, Any]:
    """What was typed and ticked, kept as typed (lists for checkboxes) to show the form again."""
    values: dict[str, Any] = {}
    for key in {*form.keys()}:
        if key == "csrf_token":
            continue
        items = [str(item) for item in form.getlist(key)]
        values[key] = items if key in CHECKED or key == "topics" else (items[0] if items else "")
    return values


def _behaviour(text: Callable[[str], str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The rules about what the patron did: topics, feedback, ratings, escalations, suggestions."""
    rules: dict[str, Any] = {}
    if values.get("topics") or text("topics_within_days"):
        asked: dict[str, Any] = {"topics": list(values.get("topics") or [])}
        if text("topics_within_days"):
            asked["within_days"] = _number(text("topics_within_days"))
        rules["asked_about"] = asked
    if text("gave_feedback") in ("true", "false"):
        rules["gave_feedback"] = text("gave_feedback") == "true"
    rating = {key: _number(text(f"rating_{key}")) for key in ("csat", "nps") if text(f"rating_{key}")}
    if rating:
        rules["rating_at_most"] = rating
    if text("escalations"):
        rules["escalations"] = text("escalations")
    if text("suggestions_made"):
        made = _number(text("suggestions_made"))
        rules["suggestions_made"] = False if made == 0 else made
    return rules


def segment_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """The segment file's mapping ({name, description, rules}) the form's values stand for."""

    def text(key: str) -> str:
        return str(values.get(key) or "").strip()

    rules: dict[str, Any] = {}
    for key in CHECKED:
        if values.get(key):
            rules[key] = list(values[key])
    for key in LISTED:
        if text(key):
            rules[key] = _words(text(key))
    for key in NUMBERS:
        if text(key):
            rules[key] = _number(text(key))
    rules.update(_behaviour(text, values))
    if text("interest_text") or text("interest_min_similarity"):
        rules["interest_like"] = {
            "text": text("interest_text"),
            "min_similarity": _number(text("interest_min_similarity")),
        }
    mapping: dict[str, Any] = {"name": text("name"), "rules": rules}
    if text("description"):
        mapping["description"] = str(values.get("description"))
    return mapping


def values_of(name: str, description: str | None, rules: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values for a stored segment (the reverse of segment_mapping)."""
    values: dict[str, Any] = {"name": name, "description": description or ""}
    for key in CHECKED:
        values[key] = list(rules.get(key) or [])
    for key in LISTED:
        values[key] = ", ".join(rules.get(key) or [])
    for key in NUMBERS:
        values[key] = "" if rules.get(key) is None else str(rules[key])
    asked = rules.get("asked_about") or {}
    values["topics"] = list(asked.get("topics") or [])
    values["topics_within_days"] = str(asked.get("within_days") or "")
    feedback = rules.get("gave_feedback")
    values["gave_feedback"] = "" if feedback is None else ("true" if feedback else "false")
    rating = rules.get("rating_at_most") or {}
    for key in ("csat", "nps"):
        values[f"rating_{key}"] = "" if rating.get(key) is None else str(rating[key])
    values["escalations"] = rules.get("escalations") or ""
    made = rules.get("suggestions_made")
    values["suggestions_made"] = "" if made is None else str(int(made))
    interest = rules.get("interest_like") or {}
    values["interest_text"] = interest.get("text") or ""
    least = interest.get("min_similarity")
    values["interest_min_similarity"] = "" if least is None else str(least)
    return values


# --- previewing a definition not yet stored ------------------------------------------------------------


def _similar(
    session: Session, members: Any, encoder: QueryEncoder, text: str, least: float
) -> tuple[set[int], Any]:
    """Of `members`, those whose interest vector is at least `least` like `text` (as refresh_membership
    keeps them: a vector of the encoder's model and the profiling consent in force)."""
    model = model_key(encoder)
    vector = np.asarray(encoder.encode_queries([text]), dtype=np.float32)[0]
    kept: set[int] = set()
    for ids, matrix in interest_vectors(session=session, model=model, patron_ids=members, chunk=_CHUNK):
        if matrix.shape[1] == vector.shape[0]:
            kept.update(int(patron_id) for patron_id in ids[matrix @ vector >= least])
    restricted = members.where(
        Patron.id.in_(select(PatronInterest.patron_id).where(PatronInterest.model == model)),
        consent_in_force(INTEREST_PURPOSE, Patron.id),
    )
    return kept, restricted


def _sample(session: Session, members: Any, kept: set[int] | None) -> list[Any]:
    ordered = (
        select(Patron.id, Patron.display_name, Patron.language, Patron.patron_type)
        .where(Patron.id.in_(members))
        .order_by(Patron.last_seen_at.desc(), Patron.id)
    )
    if kept is None:
        return list(session.execute(ordered.limit(SAMPLE)).all())
    found: list[Any] = []
    for row in session.execute(ordered, execution_options={"yield_per": 500}):
        if int(row[0]) in kept:
            found.append(row)
            if len(found) == SAMPLE:
                break
    return found


def preview_definition(
    *,
    engine: Engine,
    definition: SegmentDefinition,
    staff_id: int,
    encoder: Callable[[], QueryEncoder],
    now: dt.datetime | None = None,
) -> SegmentPreview:
    """How many patrons `definition` holds now and up to SAMPLE of them, most recently seen first,
    without storing anything; each shown patron's read is audited."""
    now = now or utcnow()
    interest = definition.rules.interest_like
    with session_scope(engine) as session:
        members = member_query(definition=definition, now=now)
        kept: set[int] | None = None
        if interest is not None:
            kept, members = _similar(session, members, encoder(), interest.text, interest.min_similarity)
            count = len(kept)
        else:
            count = int(session.execute(select(func.count()).select_from(members.subquery())).scalar_one())
        rows = _sample(session, members, kept)
        channels = channels_of(session=session, patron_ids=[int(row[0]) for row in rows])
        staff = session.get(StaffUser, staff_id)
        for patron_id in channels:
            log_access(
                session=session,
                actor=f"staff:{staff.username if staff is not None else staff_id}",
                action="read",
                patron_id=patron_id,
                reason=f"console: preview of segment {definition.name}",
                staff_user=staff,
            )
        return SegmentPreview(
            name=definition.name,
            count=count,
            sample=tuple(
                PreviewPatron(
                    patron_id=int(row[0]),
                    display_name=row[1],
                    language=row[2],
                    patron_type=row[3],
                    channels=tuple(channels[int(row[0])]),
                )
                for row in rows
            ),
        )


TEXT = {
    "seg_title": {"en": "Segments", "zh": "读者分群"},
    "seg_new": {"en": "New segment", "zh": "新建分群"},
    "seg_edit": {"en": "Segment {name}", "zh": "分群 {name}"},
    "seg_none": {"en": "No segments yet.", "zh": "暂无分群。"},
    "seg_name": {"en": "Name", "zh": "名称"},
    "seg_description": {"en": "Description", "zh": "说明"},
    "seg_members": {"en": "Patrons", "zh": "读者数"},
    "seg_updated": {"en": "Updated", "zh": "更新时间"},
    "seg_counted": {"en": "Counted", "zh": "统计时间"},
    "seg_by_hand": {"en": "made by hand: it has no rules to edit", "zh": "手工分群：没有可编辑的规则"},
    "seg_intro": {
        "en": "All the rules given must hold; a list rule holds when any item matches. Leave a rule"
        " empty not to use it. Reachability, opt-outs, pauses and quiet hours are checked when each"
        " message is sent.",
        "zh": "所填规则须全部满足；多选规则满足任一项即可。留空表示不使用该规则。"
        "能否送达、退订、暂停与免打扰时段在每条消息发送时检查。",
    },
    "seg_who": {"en": "Who they are", "zh": "读者属性"},
    "seg_behaviour": {"en": "What they did", "zh": "读者行为"},
    "seg_say": {"en": "Consent, persona and interest", "zh": "同意、画像与兴趣"},
    "seg_patron_type": {"en": "Patron type", "zh": "读者类型"},
    "seg_language": {"en": "Language", "zh": "语言"},
    "seg_channel": {"en": "Channel", "zh": "渠道"},
    "seg_source": {"en": "Source (QR codes, links; comma-separated)", "zh": "来源（二维码、链接，逗号分隔）"},
    "seg_time_zone": {"en": "Time zones (IANA names, comma-separated)", "zh": "时区（IANA 名称，逗号分隔）"},
    "seg_active": {"en": "Wrote within the last N days", "zh": "最近 N 天内有来信"},
    "seg_inactive": {"en": "Silent for N days or more", "zh": "已 N 天或更久未来信"},
    "seg_conversations": {"en": "At least N conversations", "zh": "至少 N 次会话"},
    "seg_topics": {"en": "Asked about these topics", "zh": "询问过这些主题"},
    "seg_topics_days": {"en": "… within the last N days (empty: ever)", "zh": "……最近 N 天内（留空：不限）"},
    "seg_feedback": {"en": "Gave feedback", "zh": "提交过反馈"},
    "seg_rating_csat": {"en": "A CSAT rating at or below (1-5)", "zh": "满意度评分不高于（1-5）"},
    "seg_rating_nps": {"en": "An NPS rating at or below (0-10)", "zh": "推荐度评分不高于（0-10）"},
    "seg_escalations": {"en": "Escalations", "zh": "转人工"},
    "seg_suggestions": {
        "en": "Suggestions made: at least N (0: none)",
        "zh": "提出建议：至少 N 条（0：从未）",
    },
    "seg_consent": {"en": "Consents in force", "zh": "已同意的授权"},
    "seg_persona": {"en": "Persona", "zh": "读者画像"},
    "seg_no_personas": {
        "en": "No personas yet (patronbot personas).",
        "zh": "暂无画像（patronbot personas）。",
    },
    "seg_interest": {"en": "Interest like (words)", "zh": "兴趣接近（文字描述）"},
    "seg_similarity": {
        "en": "… with similarity at least (-1 to 1, about 0.85)",
        "zh": "……相似度不低于（-1 到 1，约 0.85）",
    },
    "seg_unused": {"en": "not used", "zh": "不使用"},
    "seg_yes": {"en": "yes", "zh": "是"},
    "seg_no": {"en": "no", "zh": "否"},
    "seg_preview": {"en": "Preview", "zh": "预览"},
    "seg_save": {"en": "Save", "zh": "保存"},
    "seg_count": {"en": "{count} patrons match now.", "zh": "当前符合条件的读者：{count} 位。"},
    "seg_sample": {"en": "Some of them (most recently seen first)", "zh": "部分读者（最近活跃在前）"},
    "seg_problem": {"en": "Not usable: {message}", "zh": "无法使用：{message}"},
    "done_seg_saved": {"en": "Segment saved and counted.", "zh": "分群已保存并完成统计。"},
}
