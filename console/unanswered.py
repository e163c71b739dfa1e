"""The console's unanswered-questions page and API: what patrons asked that the bot could not answer,
clustered by meaning, each cluster one click from a new knowledge-base entry with its phrasings."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.models import StaffUser
from bot.engagement.unanswered import (
    PERIOD_DAYS,
    QuestionCluster,
    RememberingEncoder,
    cluster_questions,
    shared_encoder,
    unanswered_questions,
)
from bot.knowledge.encoders import Encoder
from console.answers import answer, error
from console.gate import Staff, staff_only
from console.i18n import add_texts
from console.openapi import add_paths
from console.openapi_parts import NULLABLE_STR, STR, TIME, errors, json_content, ref
from console.pages import render

LONGEST_PERIOD = 365

TEXT = {
    "unanswered_nav": {"en": "Unanswered questions", "zh": "未答问题"},
    "unanswered_intro": {
        "en": "Questions patrons asked in the last {days} days that the bot could not answer, grouped by "
        "meaning (in either language), the most asked first.",
        "zh": "最近 {days} 天内机器人未能回答的读者问题，按含义归类（中英文同义的归为一类），"
        "提问最多的在前。",
    },
    "unanswered_days": {"en": "Days to look back", "zh": "统计天数"},
    "unanswered_show": {"en": "Show", "zh": "显示"},
    "unanswered_none": {"en": "No unanswered questions in this period.", "zh": "这段时间没有未答问题。"},
    "unanswered_asked": {
        "en": "Asked {count} times by {patrons} patrons ({languages}); first {first}, last {last}",
        "zh": "共 {count} 次，{patrons} 位读者（{languages}）；首次 {first}，最近 {last}",
    },
    "unanswered_examples": {"en": "How patrons put it", "zh": "读者的问法"},
    "unanswered_create": {"en": "Create a knowledge-base entry", "zh": "新建知识库条目"},
    "unanswered_create_for": {"en": "for “{question}”", "zh": "：“{question}”"},
}
add_texts(TEXT)


def _encoder(request: Request) -> Encoder:
    """The e5 the clusters are made with: the process's shared one, or a test's (app.state)."""
    given: Encoder | None = getattr(request.app.state, "unanswered_encoder", None)
    if given is None:
        return shared_encoder()
    if not isinstance(given, RememberingEncoder):
        given = request.app.state.unanswered_encoder = RememberingEncoder(given)
    return given


def _days(request: Request) -> int:
    """The `days` parameter (1..LONGEST_PERIOD), PERIOD_DAYS if absent; ValueError if unusable."""
    raw = request.query_params.get("days")
    if raw is None or raw == "":
        return PERIOD_DAYS
    days = int(raw) if raw.isdigit() and len(raw) <= 3 else 0
    if not 1 <= days <= LONGEST_PERIOD:
        raise ValueError(raw)
    return days


def entry_link(cluster: QuestionCluster) -> str:
    """The knowledge-base editor's new entry, filled with the cluster's phrasings in one language."""
    fields = [("lang", cluster.language or ""), ("question", cluster.representative)]
    fields += [("alternative", text) for text in cluster.alternatives]
    return "/knowledge/new?" + urlencode(fields)


async def clusters_for(request: Request, staff: Staff, days: int) -> list[QuestionCluster]:
    """The period's clusters; the database read and the audit in worker threads, and the encoding in
    one of its own (never on the event loop, nor inside a transaction)."""
    questions = await staff.crm(lambda session, _: unanswered_questions(session=session, days=days))
    encoder = _encoder(request)
    clusters = await run_in_threadpool(lambda: cluster_questions(questions, encoder=encoder))

    def audit(session: Session, user: StaffUser) -> None:
        for patron_id in sorted({patron for cluster in clusters for patron in cluster.shown_patrons}):
            log_access(
                session=session,
                actor=f"staff:{user.username}",
                action="read",
                patron_id=patron_id,
                reason="console: unanswered questions",
                staff_user=user,
            )

    await staff.crm(audit)
    return clusters


def cluster_row(cluster: QuestionCluster) -> dict[str, Any]:
    row = dataclasses.asdict(cluster)
    del row["shown_patrons"]
    return {**row, "entry_link": entry_link(cluster)}


@staff_only()
async def unanswered_api(request: Request, staff: Staff) -> Response:
    try:
        days = _days(request)
    except ValueError:
        return error(400, f"'days' must be a whole number from 1 to {LONGEST_PERIOD}")
    clusters = await clusters_for(request, staff, days)
    return answer({"days": days, "clusters": [cluster_row(cluster) for cluster in clusters]})


@staff_only()
async def unanswered_page(request: Request, staff: Staff) -> Response:
    try:
        days = _days(request)
    except ValueError:
        days = PERIOD_DAYS
    clusters = await clusters_for(request, staff, days)
    return render(
        request,
        "unanswered.html",
        staff.signed,
        section="unanswered",
        days=days,
        clusters=[cluster_row(cluster) for cluster in clusters],
    )


ROUTES = [
    Route("/unanswered", unanswered_page, methods=["GET"]),
    Route("/api/unanswered", unanswered_api, methods=["GET"]),
]

add_paths(
    {
        "/api/unanswered": {
            "get": {
                "summary": "The questions the bot could not answer, clustered by meaning (reads audited)",
                "parameters": [
                    {
                        "name": "days",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": LONGEST_PERIOD},
                    }
                ],
                "responses": {
                    "200": json_content(
                        {
                            "type": "object",
                            "properties": {
                                "days": {"type": "integer"},
                                "clusters": {"type": "array", "items": ref("UnansweredCluster")},
                            },
                            "required": ["days", "clusters"],
                        },
                        "the clusters, the most asked first",
                    ),
                    **errors(400, 401),
                },
            }
        }
    },
    {
        "UnansweredCluster": {
            "type": "object",
            "properties": {
                "representative": STR,
                "language": NULLABLE_STR,
                "count": {"type": "integer"},
                "patrons": {"type": "integer"},
                "languages": {"type": "array", "items": STR},
                "examples": {"type": "array", "items": STR},
                "alternatives": {"type": "array", "items": STR},
                "first_seen": TIME,
                "last_seen": TIME,
                "entry_link": STR,
            },
            "required": ["representative", "count", "patrons", "examples", "entry_link"],
        }
    },
)
