"""The console's knowledge base API: entries listed, read, created, edited (a stale version is refused
with the entry as it is now), retired and restored; and a question tried against the bot's live
retrieval. Saving writes the knowledge base file, which is what the bot reads: it is published at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.models import StaffUser
from bot.knowledge import editing
from bot.knowledge.drafts import ENTRY_ID, LONGEST_QUESTION, TOPICS, StoredEntry, draft_from
from bot.knowledge.editing import EditConflictError, EditError, EntryExistsError, EntryNotFoundError
from bot.knowledge.entries import KnowledgeError
from bot.language import LANGUAGES
from console.answers import answer, error
from console.api import BadInputError, body_of, text_field
from console.gate import Staff, knowledge_of, one_route, settings_of, staff_only

T = TypeVar("T")
MATCHES = 5  # the top matches a tried question shows


def kb_path(request: Request) -> Path:
    """The knowledge base file the bot reads (the settings')."""
    settings = settings_of(request)
    return settings.path(settings.knowledge_base)


async def in_thread(work: Callable[[], T]) -> T:
    return await run_in_threadpool(work)


async def edited(staff: Staff, change: str, work: Callable[[], StoredEntry]) -> StoredEntry:
    """Run a knowledge base edit, then write who made it to the audit log (the file names no author)."""
    stored = await in_thread(work)
    entry_id = stored.entry.id

    def audit(session: Session, user: StaffUser) -> None:
        log_access(
            session=session,
            actor=f"staff:{user.username}",
            action="update",
            patron_id=None,
            reason=f"console: knowledge base entry {entry_id}: {change}",
            staff_user=user,
            detail={"entry": entry_id, "change": change, "version": stored.version},
        )

    await staff.crm(audit)
    return stored


def entry_id_of(request: Request) -> str | None:
    """The entry id in the path, if it is one an entry can have (anything else is no entry: 404)."""
    entry_id = str(request.path_params["entry_id"])
    return entry_id if ENTRY_ID.fullmatch(entry_id) else None


def matching(entries: list[StoredEntry], *, text: str = "", topic: str = "") -> list[StoredEntry]:
    """Entries whose id, question, alternatives or answers contain `text` (any case), in `topic`."""
    needle = text.strip().lower()

    def found(stored: StoredEntry) -> bool:
        entry = stored.entry
        if topic and entry.topic != topic:
            return False
        if not needle:
            return True
        words = [
            entry.id,
            *(w for t in entry.texts.values() for w in (t.question, t.answer, *t.alternatives)),
        ]
        return any(needle in word.lower() for word in words)

    return [stored for stored in entries if found(stored)]


def try_question(request: Request, text: str, lang: str) -> dict[str, Any]:
    """What the bot's retrieval decides for `text` now, with the top matches and their scores. Loads
    the models on first use (a few seconds): call it in a worker thread."""
    retriever = knowledge_of(request).retriever()
    decision = retriever.decide(text, lang=lang, k=MATCHES)
    tuning = retriever.tuning_for(lang)
    return {
        "text": text,
        "lang": lang,
        "decision": decision.kind,
        "answer_from": tuning.answer,
        "suggest_from": tuning.suggest,
        "matches": [
            {
                "id": hit.entry.id,
                "question": hit.entry.question,
                "answer": hit.entry.answer,
                "score": round(float(hit.score), 4),
                "signals": {name: round(float(value), 4) for name, value in hit.signals.items()},
            }
            for hit in decision.hits
        ],
    }


def conflict(problem: EditConflictError) -> Response:
    current = problem.current.as_json()
    return answer({"error": str(problem), "current": current, "version": current["version"]}, 409)


@staff_only()
async def list_api(request: Request, staff: Staff) -> Response:
    path = kb_path(request)
    topic = request.query_params.get("topic") or ""
    if topic and topic not in TOPICS:
        return error(400, f"'topic' must be one of {', '.join(TOPICS)}")
    try:
        entries = await in_thread(lambda: editing.list_entries(path=path))
    except EditError as problem:
        return error(400, str(problem))
    shown = matching(entries, text=request.query_params.get("q") or "", topic=topic)
    return answer({"entries": [stored.as_json() for stored in shown]})


@staff_only()
async def create_api(request: Request, staff: Staff) -> Response:
    path = kb_path(request)
    try:
        data = await body_of(request)
        draft = draft_from(data, entry_id=text_field(data, "id", longest=64))
        created = await edited(staff, "created", lambda: editing.create_entry(path=path, draft=draft))
    except (BadInputError, EditError) as problem:
        return error(409 if isinstance(problem, EntryExistsError) else 400, str(problem))
    return answer(created.as_json(), 201)


@staff_only()
async def get_api(request: Request, staff: Staff) -> Response:
    entry_id = entry_id_of(request)
    if entry_id is None:
        return error(404, "no such knowledge base entry")
    try:
        stored = await in_thread(lambda: editing.get_entry(path=kb_path(request), entry_id=entry_id))
    except EntryNotFoundError as problem:
        return error(404, str(problem))
    except EditError as problem:
        return error(400, str(problem))
    return answer(stored.as_json())


@staff_only()
async def update_api(request: Request, staff: Staff) -> Response:
    entry_id = entry_id_of(request)
    if entry_id is None:
        return error(404, "no such knowledge base entry")
    path = kb_path(request)
    try:
        data = await body_of(request)
        version = text_field(data, "version", longest=64)
        draft = draft_from(data, entry_id=entry_id)
        saved = await edited(
            staff, "edited", lambda: editing.update_entry(path=path, draft=draft, base_version=version)
        )
    except EntryNotFoundError as problem:
        return error(404, str(problem))
    except EditConflictError as problem:
        return conflict(problem)
    except (BadInputError, EditError) as problem:
        return error(400, str(problem))
    return answer(saved.as_json())


def _retirement(retire: bool) -> Callable[[Request], Any]:
    @staff_only()
    async def change(request: Request, staff: Staff) -> Response:
        entry_id = entry_id_of(request)
        if entry_id is None:
            return error(404, "no such knowledge base entry")
        act = editing.retire_entry if retire else editing.restore_entry
        try:
            done = await edited(
                staff,
                "retired" if retire else "restored",
                lambda: act(path=kb_path(request), entry_id=entry_id),
            )
        except EntryNotFoundError as problem:
            return error(404, str(problem))
        except EditError as problem:
            return error(400, str(problem))
        return answer(done.as_json())

    return change


@staff_only()
async def try_api(request: Request, staff: Staff) -> Response:
    try:
        data = await body_of(request)
        text = text_field(data, "text", longest=LONGEST_QUESTION)
        lang = data.get("lang")
        if lang not in LANGUAGES:
            raise BadInputError(f"'lang' must be one of {', '.join(LANGUAGES)}")
    except BadInputError as problem:
        return error(400, str(problem))
    try:
        return answer(await in_thread(lambda: try_question(request, text, str(lang))))
    except KnowledgeError as problem:
        return error(409, str(problem))


ROUTES = [
    one_route("/api/knowledge", {"GET": list_api, "POST": create_api}),
    Route("/api/knowledge/try", try_api, methods=["POST"]),
    Route("/api/knowledge/{entry_id}/retire", _retirement(True), methods=["POST"]),
    Route("/api/knowledge/{entry_id}/restore", _retirement(False), methods=["POST"]),
]
# After the proposals' routes (console/knowledge.py orders them): /api/knowledge/proposals is no entry.
ENTRY_ROUTE = one_route("/api/knowledge/{entry_id}", {"GET": get_api, "PUT": update_api})
