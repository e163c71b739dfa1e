"""The console's knowledge base editor: the entries (filtered by text and topic, retired ones apart), a
question tried against the bot's live retrieval, and the entry forms, both languages side by side.
Saving writes the file the bot reads, so it is published at once; a librarian who saves over someone
else's newer save is shown both and loses nothing."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.knowledge import editing, proposals
from bot.knowledge.drafts import LONGEST_ALTERNATIVE, LONGEST_ANSWER, LONGEST_QUESTION, TOPICS, draft_from
from bot.knowledge.editing import EditConflictError, EditError, EntryNotFoundError
from bot.knowledge.entries import PATRON_TYPES, KnowledgeError
from bot.knowledge.proposals import ProposalError
from bot.language import LANGUAGES, detect_language
from console import knowledge_api, knowledge_openapi, knowledge_proposals
from console.gate import Staff, one_route, staff_only
from console.i18n import add_texts
from console.knowledge_api import edited, entry_id_of, in_thread, kb_path, matching, try_question
from console.openapi import add_paths
from console.pages import render

TEXT = {
    "kb_nav": {"en": "Knowledge base", "zh": "知识库"},
    "kb_intro": {
        "en": "What the bot answers. A save is used by the bot at once, without a restart.",
        "zh": "机器人据以回答的内容。保存后机器人立即使用，无需重启。",
    },
    "kb_search": {"en": "Text", "zh": "文字"},
    "kb_topic": {"en": "Topic", "zh": "主题"},
    "kb_no_topic": {"en": "none", "zh": "无"},
    "kb_new": {"en": "Add an entry", "zh": "新增条目"},
    "kb_entries": {"en": "Entries in use", "zh": "使用中的条目"},
    "kb_retired": {
        "en": "Retired entries (kept, not used by the bot)",
        "zh": "已停用的条目（保留，机器人不再使用）",
    },
    "kb_no_entries": {"en": "No entries match.", "zh": "没有符合条件的条目。"},
    "kb_col_id": {"en": "Entry", "zh": "条目"},
    "kb_col_question": {"en": "Question", "zh": "问题"},
    "kb_col_alternatives": {"en": "Ways of asking", "zh": "问法数"},
    "kb_try": {"en": "Try a question", "zh": "试问一个问题"},
    "kb_try_text": {"en": "Question", "zh": "问题"},
    "kb_try_lang": {"en": "Language", "zh": "语言"},
    "kb_try_button": {"en": "Try", "zh": "试问"},
    "kb_try_loading": {
        "en": "The first question after a start loads the models: it takes a few seconds.",
        "zh": "启动后的第一个问题需要加载模型，约需数秒。",
    },
    "kb_decision": {"en": "The bot would: {kind}", "zh": "机器人将：{kind}"},
    "kb_kind_answer": {"en": "answer with the first entry", "zh": "用第一个条目作答"},
    "kb_kind_suggest": {"en": "offer these as choices", "zh": "列出以下选项供读者选择"},
    "kb_kind_unknown": {"en": "say it does not know", "zh": "回答不知道"},
    "kb_thresholds": {
        "en": "Answers from a score of {answer}, offers choices from {suggest}.",
        "zh": "得分达到 {answer} 时直接回答，达到 {suggest} 时给出选项。",
    },
    "kb_score": {"en": "Score", "zh": "得分"},
    "kb_edit": {"en": "Entry {id}", "zh": "条目 {id}"},
    "kb_id": {
        "en": "Entry id (lowercase letters, digits, hyphens)",
        "zh": "条目编号（小写字母、数字、连字符）",
    },
    "kb_lang_zh": {"en": "Chinese", "zh": "中文"},
    "kb_lang_en": {"en": "English", "zh": "英文"},
    "kb_question_field": {"en": "Question", "zh": "问题"},
    "kb_alternatives": {
        "en": "Other ways patrons ask it (one per line)",
        "zh": "读者的其他问法（每行一个）",
    },
    "kb_answer": {"en": "Answer", "zh": "答案"},
    "kb_audience": {"en": "Answers for one kind of patron (optional)", "zh": "针对某类读者的答案（可选）"},
    "kb_limits": {
        "en": "At most {q} characters a question, {a} an alternative, {n} an answer. Leave a language "
        "empty if the entry is not in it.",
        "zh": "问题最多 {q} 字，每种问法最多 {a} 字，答案最多 {n} 字。某种语言全部留空即不提供该语言。",
    },
    "kb_save": {"en": "Save and publish", "zh": "保存并发布"},
    "kb_retire": {"en": "Retire (the bot stops using it)", "zh": "停用（机器人不再使用）"},
    "kb_restore": {"en": "Restore", "zh": "恢复使用"},
    "kb_is_retired": {
        "en": "This entry is retired: the bot does not use it.",
        "zh": "此条目已停用，机器人不会使用。",
    },
    "kb_conflict": {
        "en": "Another librarian saved this entry after you opened it. Their version is shown beside "
        "your text, which is kept below: change it if needed and save again to apply it over theirs.",
        "zh": "您打开此条目后，另一位馆员已保存了修改。其版本显示在旁，您输入的内容保留在下方："
        "如需要请调整后再次保存，即以您的内容覆盖。",
    },
    "kb_their_version": {"en": "Their version (saved)", "zh": "对方已保存的版本"},
    "kb_not_saved": {"en": "Not saved: {message}", "zh": "未保存：{message}"},
    "kb_saved_notice": {"en": "Saved: the bot uses it now.", "zh": "已保存，机器人已开始使用。"},
    "kb_created_notice": {
        "en": "Entry {id} added: the bot uses it now.",
        "zh": "已新增条目 {id}，机器人已开始使用。",
    },
    "kb_retired_notice": {"en": "Retired: the bot no longer uses it.", "zh": "已停用，机器人不再使用。"},
    "kb_restored_notice": {"en": "Restored: the bot uses it again.", "zh": "已恢复，机器人重新使用。"},
    "kb_unreadable": {
        "en": "The knowledge base cannot be read: {message}",
        "zh": "无法读取知识库：{message}",
    },
}
add_texts(TEXT)

NOTICES = ("kb_saved", "kb_retired", "kb_restored")


def _context(**extra: Any) -> dict[str, Any]:
    return {
        "section": "knowledge",
        "topics": TOPICS,
        "patron_types": PATRON_TYPES,
        "languages": LANGUAGES,
        "limits": {"q": LONGEST_QUESTION, "a": LONGEST_ALTERNATIVE, "n": LONGEST_ANSWER},
        **extra,
    }


@staff_only()
async def knowledge_page(request: Request, staff: Staff) -> Response:
    params = request.query_params
    text, topic = params.get("q") or "", params.get("topic") or ""
    topic = topic if topic in TOPICS else ""
    path = kb_path(request)
    try:
        entries = await in_thread(lambda: editing.list_entries(path=path))
        problem = None
    except EditError as error:
        entries, problem = [], str(error)
    shown = matching(entries, text=text, topic=topic)
    asked, lang = (params.get("ask") or "").strip()[:LONGEST_QUESTION], params.get("ask_lang") or ""
    lang = lang if lang in LANGUAGES else ""
    tried = None
    if asked and lang:
        try:
            tried = await in_thread(lambda: try_question(request, asked, lang))
        except KnowledgeError as error:
            problem = str(error)
    return render(
        request,
        "knowledge.html",
        staff.signed,
        **_context(
            in_use=[stored for stored in shown if not stored.retired],
            retired=[stored for stored in shown if stored.retired],
            filters={"q": text, "topic": topic},
            ask={"text": asked, "lang": lang},
            tried=tried,
            problem=problem,
        ),
    )


def form_fields(form: FormData) -> dict[str, Any]:
    """The editor's form as the API's entry shape (alternatives one per line)."""

    def field(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    data: dict[str, Any] = {"topic": field("topic") or None}
    for lang in LANGUAGES:
        data[lang] = {
            "question": field(f"{lang}_question"),
            "alternatives": field(f"{lang}_alternatives").splitlines(),
            "answer": field(f"{lang}_answer"),
        }
    data["audience"] = {
        kind: {lang: field(f"audience_{kind}_{lang}") for lang in LANGUAGES} for kind in PATRON_TYPES
    }
    return data


def _missing(problem: Exception) -> Response:
    return Response(str(problem), status_code=404, media_type="text/plain; charset=utf-8")


def _blank() -> dict[str, Any]:
    form: dict[str, Any] = {"id": "", "topic": None, "audience": {}}
    for lang in LANGUAGES:
        form[lang] = {"question": "", "alternatives": [], "answer": ""}
    return form


def _editor(
    request: Request, staff: Staff, form: dict[str, Any], status: int = 200, **extra: Any
) -> Response:
    for lang in LANGUAGES:
        form.setdefault(lang, {"question": "", "alternatives": [], "answer": ""})
    return render(
        request, "knowledge_entry.html", staff.signed, status=status, **_context(form=form, **extra)
    )


@staff_only()
async def new_page(request: Request, staff: Staff) -> Response:
    """The new-entry form, pre-filled from ?lang=&question=&alternative=… (the unanswered questions'
    clusters link here) or ?proposal= (a proposal reviewed as a new entry)."""
    params = request.query_params
    form = _blank()
    asked = params.get("question") or ""
    lang = str(params.get("lang")) if params.get("lang") in LANGUAGES else detect_language(asked) or "zh"
    form[lang] = {
        "question": (params.get("question") or "")[:LONGEST_QUESTION],
        "alternatives": [a[:LONGEST_ALTERNATIVE] for a in params.getlist("alternative")][:100],
        "answer": (params.get("answer") or "")[:LONGEST_ANSWER],
    }
    topic = params.get("topic")
    form["topic"] = topic if topic in TOPICS else None
    proposal = params.get("proposal") or ""
    created = params.get("created") if params.get("done") == "kb_created" else None
    return _editor(
        request, staff, form, new=True, proposal=proposal if proposal.isdigit() else "", created=created
    )


@staff_only()
async def create_form(request: Request, staff: Staff) -> Response:
    form = await request.form()
    fields = form_fields(form)
    entry_id = str(form.get("id") or "").strip()
    proposal = str(form.get("proposal") or "")
    path = kb_path(request)
    try:
        draft = draft_from(fields, entry_id=entry_id)
        await edited(staff, "created", lambda: editing.create_entry(path=path, draft=draft))
    except EditError as problem:
        shown = {**fields, "id": entry_id}
        return _editor(request, staff, shown, status=400, new=True, proposal=proposal, problem=str(problem))
    if proposal.isdigit() and len(proposal) <= 18:
        # Reviewed meanwhile by someone else: the entry stands on its own.
        with contextlib.suppress(ProposalError):
            await staff.crm(
                lambda session, user: proposals.mark_accepted(
                    session=session, proposal_id=int(proposal), staff=user
                )
            )
    return RedirectResponse(f"/knowledge/new?done=kb_created&created={quote(entry_id)}", status_code=303)


@staff_only()
async def edit_page(request: Request, staff: Staff) -> Response:
    entry_id = entry_id_of(request)
    try:
        if entry_id is None:
            raise EntryNotFoundError("no such knowledge base entry")
        stored = await in_thread(lambda: editing.get_entry(path=kb_path(request), entry_id=str(entry_id)))
    except EditError as problem:
        return _missing(problem)
    done = request.query_params.get("done")
    notice = f"{done}_notice" if done in NOTICES else None
    return _editor(request, staff, stored.as_json(), stored=stored, notice=notice)


@staff_only()
async def save_form(request: Request, staff: Staff) -> Response:
    entry_id = entry_id_of(request)
    if entry_id is None:
        return _missing(EntryNotFoundError("no such knowledge base entry"))
    form = await request.form()
    fields = form_fields(form)
    version = str(form.get("version") or "")
    path = kb_path(request)
    typed = {**fields, "id": entry_id, "version": version}
    try:
        draft = draft_from(fields, entry_id=entry_id)
        await edited(
            staff, "edited", lambda: editing.update_entry(path=path, draft=draft, base_version=version)
        )
    except EntryNotFoundError as problem:
        return _missing(problem)
    except EditConflictError as problem:
        # The librarian's text stays in the form, now on the saved version: saving again applies it.
        current = problem.current
        typed |= {"version": current.version, "retired": current.retired}
        return _editor(request, staff, typed, status=409, stored=current, theirs=current.as_json())
    except EditError as problem:
        current = await in_thread(lambda: editing.get_entry(path=path, entry_id=entry_id))
        typed["retired"] = current.retired
        return _editor(request, staff, typed, status=400, stored=current, problem=str(problem))
    return RedirectResponse(f"/knowledge/{entry_id}?done=kb_saved", status_code=303)


def _retirement_form(retire: bool) -> Any:
    @staff_only()
    async def change(request: Request, staff: Staff) -> Response:
        entry_id = entry_id_of(request)
        if entry_id is None:
            return _missing(EntryNotFoundError("no such knowledge base entry"))
        act = editing.retire_entry if retire else editing.restore_entry
        try:
            await edited(
                staff,
                "retired" if retire else "restored",
                lambda: act(path=kb_path(request), entry_id=entry_id),
            )
        except EditError as problem:
            return RedirectResponse(f"/knowledge/{entry_id}?problem={quote(str(problem))}", status_code=303)
        done = "kb_retired" if retire else "kb_restored"
        return RedirectResponse(f"/knowledge/{entry_id}?done={done}", status_code=303)

    return change


ROUTES = [
    Route("/knowledge", knowledge_page, methods=["GET"]),
    one_route("/knowledge/new", {"GET": new_page, "POST": create_form}),
    *knowledge_proposals.ROUTES,  # before /knowledge/{entry_id}: "proposals" is no entry
    *knowledge_api.ROUTES,
    knowledge_api.ENTRY_ROUTE,
    one_route("/knowledge/{entry_id}", {"GET": edit_page, "POST": save_form}),
    Route("/knowledge/{entry_id}/retire", _retirement_form(True), methods=["POST"]),
    Route("/knowledge/{entry_id}/restore", _retirement_form(False), methods=["POST"]),
]
add_paths(knowledge_openapi.PATHS, knowledge_openapi.SCHEMAS)
