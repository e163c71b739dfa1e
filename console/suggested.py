"""Suggested answers beside an escalated patron's questions: the knowledge base's best matches for their
latest messages, in the message's language, for the librarian to insert into the reply."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.models import Escalation, Patron, StaffUser
from bot.engagement.escalations import EscalationNotFoundError, conversation_for_staff
from bot.knowledge.retrieval import Retriever
from bot.knowledge.service import KnowledgeService
from bot.language import LANGUAGES, detect_language, is_payload
from console.answers import answer, error
from console.gate import Staff, knowledge_of, staff_only
from console.i18n import add_texts
from console.openapi import add_paths
from console.openapi_parts import NULLABLE_STR, ROW_ID, STR, TIME, errors, json_content, ref
from console.pages import render

log = logging.getLogger(__name__)
LATEST = 3  # the patron's latest messages given suggestions
MATCHES = 3

TEXT = {
    "suggested_heading": {"en": "Suggested answers", "zh": "推荐答复"},
    "suggested_loading": {"en": "Looking up the knowledge base…", "zh": "正在查询知识库……"},
    "suggested_open": {"en": "Show the suggested answers", "zh": "查看推荐答复"},
    "suggested_for": {"en": "The patron asked:", "zh": "读者问："},
    "suggested_score": {"en": "match", "zh": "匹配度"},
    "suggested_insert": {"en": "Insert into reply", "zh": "插入到回复"},
    "suggested_refresh": {"en": "Look up again", "zh": "重新查询"},
    "suggested_none": {
        "en": "No patron question to look up yet.",
        "zh": "暂无可查询的读者问题。",
    },
    "suggested_no_match": {"en": "The knowledge base has nothing close.", "zh": "知识库中没有相近的条目。"},
    "suggested_unavailable": {
        "en": "Suggested answers are unavailable: the knowledge base cannot be read right now.",
        "zh": "暂时无法提供推荐答复：目前无法读取知识库。",
    },
    "suggested_back": {"en": "Back to the escalation", "zh": "返回会话"},
}
add_texts(TEXT)


class Remembered:
    """The matches of recent (retriever, question) pairs: the page shown again searches nothing."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._found: OrderedDict[tuple[int, str, str, str], list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, str, str, str]) -> list[dict[str, Any]] | None:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return found

    def put(self, key: tuple[int, str, str, str], matches: list[dict[str, Any]]) -> None:
        with self._lock:
            self._found[key] = matches
            while len(self._found) > self.size:
                self._found.popitem(last=False)


REMEMBERED = Remembered()


def patron_questions(session: Session, staff: StaffUser, escalation_id: int) -> dict[str, Any]:
    """The escalated patron's latest LATEST messages with words, their language and type; the read is
    audited (as the transcript's)."""
    messages = conversation_for_staff(session=session, escalation_id=escalation_id, staff=str(staff.username))
    escalation = session.get(Escalation, escalation_id)
    if escalation is None:
        raise EscalationNotFoundError(f"no escalation {escalation_id}")
    patron = session.get(Patron, escalation.patron_id) if escalation.patron_id is not None else None
    asked = [
        m for m in messages if m.direction == "in" and m.text and m.text.strip() and not is_payload(m.text)
    ]
    return {
        "language": patron.language if patron is not None else None,
        "patron_type": patron.patron_type if patron is not None else None,
        "questions": [
            {"at": m.occurred_at, "question": m.text, "language": m.language} for m in asked[-LATEST:]
        ],
    }


def _matches(retriever: Retriever, text: str, lang: str, patron_type: str | None) -> list[dict[str, Any]]:
    key = (id(retriever), text, lang, patron_type or "")
    found = REMEMBERED.get(key)
    if found is None:
        found = [
            {
                "entry_id": hit.entry.id,
                "language": hit.entry.lang,
                "question": hit.entry.question,
                "answer": hit.entry.answer_for(patron_type),
                "score": round(float(hit.score), 3),
            }
            for hit in retriever.search(text, lang=lang, k=MATCHES)
        ]
        REMEMBERED.put(key, found)
    return found


def suggest(knowledge: KnowledgeService, asked: dict[str, Any]) -> dict[str, Any]:
    """Each question with the knowledge base's best matches in its language (the message's, else the
    patron's, else the one its words show); `available` False if the knowledge base or its models fail."""
    try:
        retriever = knowledge.retriever()
        suggestions = []
        for question in reversed(asked["questions"]):  # the latest first
            text = str(question["question"])
            lang = next(
                (name for name in (question["language"], asked["language"]) if name in LANGUAGES),
                detect_language(text) or "",
            )
            matches = _matches(retriever, text, lang, asked["patron_type"])
            suggestions.append({**question, "language": lang or None, "answers": matches})
    except Exception as problem:  # the page must work whatever the knowledge base or models do
        log.warning("no suggested answers: %s", problem)
        return {"available": False, "suggestions": []}
    return {"available": True, "suggestions": suggestions}


async def suggested_answers(request: Request, staff: Staff, escalation_id: int) -> dict[str, Any]:
    """The escalation's suggested answers: the database read in a worker thread, the search in another."""
    asked = await staff.crm(lambda session, user: patron_questions(session, user, escalation_id))
    knowledge = knowledge_of(request)
    return await run_in_threadpool(suggest, knowledge, asked)


@staff_only()
async def suggested_fragment(request: Request, staff: Staff) -> Response:
    """The suggestions as part of the escalation page (htmx), or as a page of their own without it."""
    escalation_id: int = request.path_params["escalation_id"]
    try:
        found = await suggested_answers(request, staff, escalation_id)
    except EscalationNotFoundError:
        return render(
            request, "base.html", staff.signed, status=404, message=f"no escalation {escalation_id}"
        )
    template = "suggested.html" if request.headers.get("HX-Request") else "suggested_page.html"
    return render(request, template, staff.signed, section="inbox", escalation_id=escalation_id, **found)


@staff_only()
async def suggested_api(request: Request, staff: Staff) -> Response:
    escalation_id: int = request.path_params["escalation_id"]
    try:
        return answer(await suggested_answers(request, staff, escalation_id))
    except EscalationNotFoundError as problem:
        return error(404, str(problem))


ROUTES = [
    Route("/escalations/{escalation_id:id}/suggested", suggested_fragment, methods=["GET"]),
    Route("/api/escalations/{escalation_id:id}/suggestions", suggested_api, methods=["GET"]),
]

add_paths(
    {
        "/api/escalations/{escalation_id}/suggestions": {
            "get": {
                "summary": "The knowledge base's best answers to the patron's latest questions (audited)",
                "parameters": [{"name": "escalation_id", "in": "path", "required": True, "schema": ROW_ID}],
                "responses": {
                    "200": json_content(ref("SuggestedAnswers"), "the suggestions"),
                    **errors(401, 404),
                },
            }
        }
    },
    {
        "SuggestedAnswers": {
            "type": "object",
            "properties": {
                "available": {"type": "boolean"},
                "suggestions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": TIME,
                            "question": STR,
                            "language": NULLABLE_STR,
                            "answers": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "entry_id": STR,
                                        "language": STR,
                                        "question": STR,
                                        "answer": STR,
                                        "score": {"type": "number"},
                                    },
                                    "required": ["entry_id", "language", "question", "answer", "score"],
                                },
                            },
                        },
                        "required": ["at", "question", "language", "answers"],
                    },
                },
            },
            "required": ["available", "suggestions"],
        }
    },
)
