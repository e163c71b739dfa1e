"""Knowledge base proposals in the console: a librarian proposes a patron's question (with their own
answer) from an escalation; proposals wait on a review page until a person accepts them into the
knowledge base or rejects them. Pages and API; each proposal shown that quotes a patron is an audited read."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.crm.audit import log_access
from bot.crm.models import PROPOSAL_STATUSES, Escalation, KnowledgeProposal, StaffUser
from bot.knowledge import proposals
from bot.knowledge.drafts import TOPICS
from bot.knowledge.proposals import ProposalConflictError, ProposalError, ProposalNotFoundError
from bot.language import detect_language
from console.answers import answer, error
from console.api import BadInputError, body_of
from console.gate import Staff, one_route, staff_only
from console.i18n import add_texts
from console.knowledge_api import kb_path
from console.pages import render

TEXT = {
    "kb_proposals": {"en": "Proposals for the knowledge base", "zh": "知识库待审建议"},
    "kb_proposals_intro": {
        "en": "Patrons' questions librarians proposed. Nothing reaches the bot until someone accepts it.",
        "zh": "馆员提交的读者问题。经人工采纳后才会进入知识库、供机器人使用。",
    },
    "kb_no_proposals": {"en": "No proposals waiting.", "zh": "暂无待审建议。"},
    "kb_proposal_heading": {"en": "Proposal {id}", "zh": "建议 {id}"},
    "kb_as_alternative": {"en": "another way to ask {entry}", "zh": "作为条目 {entry} 的另一种问法"},
    "kb_as_entry": {"en": "a new entry", "zh": "作为新条目"},
    "kb_patron_asked": {"en": "The patron asked", "zh": "读者的提问"},
    "kb_librarian_answered": {"en": "The librarian answered", "zh": "馆员的答复"},
    "kb_proposed_by": {"en": "Proposed by {name} from {source}", "zh": "由 {name} 提交，来源：{source}"},
    "kb_accept": {"en": "Accept", "zh": "采纳"},
    "kb_accept_entry": {"en": "Review as a new entry", "zh": "作为新条目审核"},
    "kb_reject": {"en": "Reject", "zh": "不采纳"},
    "kb_propose": {"en": "Propose as a knowledge-base answer", "zh": "提交为知识库答案"},
    "kb_propose_hint": {
        "en": "A librarian reviews it before the bot uses it. Name an entry to add the question as "
        "another way of asking it; leave it empty to propose a new entry with your answer.",
        "zh": "经馆员审核后才会供机器人使用。填写已有条目编号即作为该条目的另一种问法；"
        "留空则连同您的答复提交为新条目。",
    },
    "kb_question": {"en": "The patron's question", "zh": "读者的问题"},
    "kb_your_answer": {"en": "Your answer", "zh": "您的答复"},
    "kb_existing_entry": {"en": "Existing entry id (optional)", "zh": "已有条目编号（可选）"},
    "kb_lang_auto": {"en": "as written", "zh": "按问题文字判断"},
    "kb_send_proposal": {"en": "Propose", "zh": "提交建议"},
    "kb_proposed_notice": {
        "en": "Proposed: it waits for review on the knowledge base's proposals page.",
        "zh": "已提交，等待在知识库“待审建议”页审核。",
    },
    "kb_accepted_notice": {"en": "Accepted: the bot uses it now.", "zh": "已采纳，机器人已开始使用。"},
    "kb_rejected_notice": {"en": "Rejected.", "zh": "已不采纳。"},
}
add_texts(TEXT)

LONGEST_FORM_TEXT = 4000
MAX_ROW_ID = 999_999_999_999_999_999  # as the document's ROW_ID


def proposal_rows(session: Session, user: StaffUser, status: str | None) -> list[dict[str, Any]]:
    """Proposals of a status with who proposed and reviewed them; each quoted patron's read audited."""
    found = proposals.list_proposals(session=session, status=status)
    staff_ids = {p.proposed_by for p in found if p.proposed_by} | {
        p.reviewed_by for p in found if p.reviewed_by
    }
    query = select(StaffUser.id, StaffUser.username).where(StaffUser.id.in_(sorted(staff_ids)))
    names = {row.id: row.username for row in session.execute(query)}
    for patron_id in sorted({int(p.patron_id) for p in found if p.patron_id is not None}):
        log_access(
            session=session,
            actor=f"staff:{user.username}",
            action="read",
            patron_id=patron_id,
            reason="console: knowledge base proposals",
            staff_user=user,
        )
    return [proposal_row(p, names) for p in found]


def proposal_row(proposal: KnowledgeProposal, names: dict[Any, Any]) -> dict[str, Any]:
    return {
        "id": proposal.id,
        "kind": proposal.kind,
        "entry_id": proposal.entry_id,
        "lang": proposal.lang,
        "question": proposal.question,
        "answer": proposal.answer,
        "source": proposal.source,
        "patron_id": proposal.patron_id,
        "proposed_by": names.get(proposal.proposed_by),
        "status": proposal.status,
        "reviewed_by": names.get(proposal.reviewed_by),
        "reviewed_at": proposal.reviewed_at,
        "created_at": proposal.created_at,
    }


def _make(fields: dict[str, Any], kb: Any, escalation_id: int | None) -> Any:
    """CRM work: a pending proposal from `fields`, from an escalation (its patron) when one is named."""

    def work(session: Session, user: StaffUser) -> dict[str, Any]:
        patron_id, source = None, None
        if escalation_id is not None:
            escalation = session.get(Escalation, escalation_id)
            if escalation is None:
                raise ProposalNotFoundError(f"no escalation {escalation_id}")
            patron_id, source = escalation.patron_id, f"escalation:{escalation_id}"
        made = proposals.propose(
            session=session, kb_path=kb, patron_id=patron_id, source=source, staff=user, **fields
        )
        return proposal_row(made, {user.id: user.username})

    return work


@staff_only()
async def proposals_api(request: Request, staff: Staff) -> Response:
    status = request.query_params.get("status") or "pending"
    if status not in PROPOSAL_STATUSES:
        return error(400, f"'status' must be one of {', '.join(PROPOSAL_STATUSES)}")
    rows = await staff.crm(lambda session, user: proposal_rows(session, user, status))
    return answer({"proposals": rows})


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise BadInputError(f"{name!r} must be a string")
    return value


@staff_only()
async def propose_api(request: Request, staff: Staff) -> Response:
    try:
        data = await body_of(request)
        fields = {name: _optional_text(data, name) for name in ("lang", "answer", "entry_id")}
        fields |= {name: _optional_text(data, name) or "" for name in ("kind", "question")}
        escalation_id = data.get("escalation_id")
        if escalation_id is not None and (
            not isinstance(escalation_id, int)
            or isinstance(escalation_id, bool)
            or not 1 <= escalation_id <= MAX_ROW_ID
        ):
            raise BadInputError("'escalation_id' must be a positive integer")
        made = await staff.crm(_make(fields, kb_path(request), escalation_id))
    except ProposalNotFoundError as problem:
        return error(404, str(problem))
    except ProposalConflictError as problem:
        return error(409, str(problem))
    except (BadInputError, ProposalError) as problem:
        return error(400, str(problem))
    return answer(made, 201)


async def _json_or_empty(request: Request) -> dict[str, Any]:
    return await body_of(request) if (await request.body()).strip() else {}


def _review(accepting: bool) -> Any:
    @staff_only()
    async def review(request: Request, staff: Staff) -> Response:
        proposal_id: int = request.path_params["proposal_id"]
        kb = kb_path(request)
        try:
            data = await _json_or_empty(request) if accepting else {}
            new_id, topic = _optional_text(data, "id"), _optional_text(data, "topic")
            if topic is not None and topic not in TOPICS:
                raise BadInputError(f"'topic' must be one of {', '.join(TOPICS)}")

            def work(session: Session, user: StaffUser) -> dict[str, Any]:
                if not accepting:
                    done = proposals.reject(session=session, proposal_id=proposal_id, staff=user)
                    return {"proposal": proposal_row(done, {user.id: user.username})}
                accepted = proposals.accept(
                    session=session,
                    kb_path=kb,
                    proposal_id=proposal_id,
                    staff=user,
                    new_entry_id=new_id,
                    topic=topic,
                )
                row = proposal_row(accepted.proposal, {user.id: user.username})
                return {"proposal": row, "entry": accepted.entry.as_json()}

            return answer(await staff.crm(work))
        except ProposalNotFoundError as problem:
            return error(404, str(problem))
        except ProposalConflictError as problem:
            return error(409, str(problem))
        except (BadInputError, ProposalError) as problem:
            return error(400, str(problem))

    return review


@staff_only()
async def proposals_page(request: Request, staff: Staff) -> Response:
    rows = await staff.crm(lambda session, user: proposal_rows(session, user, "pending"))
    done = request.query_params.get("done")
    notice = f"{done}_notice" if done in ("kb_accepted", "kb_rejected") else None
    return render(
        request, "knowledge_proposals.html", staff.signed, section="knowledge", rows=rows, kb_notice=notice
    )


def _review_form(accepting: bool) -> Any:
    @staff_only()
    async def review(request: Request, staff: Staff) -> Response:
        proposal_id: int = request.path_params["proposal_id"]
        kb = kb_path(request)

        def work(session: Session, user: StaffUser) -> None:
            if accepting:
                proposals.accept(session=session, kb_path=kb, proposal_id=proposal_id, staff=user)
            else:
                proposals.reject(session=session, proposal_id=proposal_id, staff=user)

        try:
            await staff.crm(work)
        except ProposalError as problem:
            return RedirectResponse(f"/knowledge/proposals?problem={quote(str(problem))}", status_code=303)
        done = "kb_accepted" if accepting else "kb_rejected"
        return RedirectResponse(f"/knowledge/proposals?done={done}", status_code=303)

    return review


@staff_only()
async def propose_form(request: Request, staff: Staff) -> Response:
    """From the escalation page: the patron's question (and the librarian's answer) as a proposal."""
    escalation_id: int = request.path_params["escalation_id"]
    form = await request.form()
    question, given_answer = str(form.get("question") or ""), str(form.get("answer") or "")
    entry_id = str(form.get("entry_id") or "").strip()
    lang = str(form.get("lang") or "")
    back = f"/escalations/{escalation_id}"
    if len(question) > LONGEST_FORM_TEXT or len(given_answer) > LONGEST_FORM_TEXT:
        problem = f"at most {LONGEST_FORM_TEXT} characters"
        return RedirectResponse(f"{back}?{urlencode({'problem': problem})}#kb-propose", status_code=303)
    fields = {
        "kind": "alternative" if entry_id else "entry",
        "lang": lang if lang in ("zh", "en") else detect_language(question),
        "question": question,
        "answer": given_answer or None,
        "entry_id": entry_id or None,
    }
    try:
        await staff.crm(_make(fields, kb_path(request), escalation_id))
    except ProposalError as problem:
        return RedirectResponse(f"{back}?{urlencode({'problem': str(problem)})}#kb-propose", status_code=303)
    return RedirectResponse(f"{back}?done=kb_proposed#kb-propose", status_code=303)


ROUTES = [
    one_route("/api/knowledge/proposals", {"GET": proposals_api, "POST": propose_api}),
    Route("/api/knowledge/proposals/{proposal_id:id}/accept", _review(True), methods=["POST"]),
    Route("/api/knowledge/proposals/{proposal_id:id}/reject", _review(False), methods=["POST"]),
    Route("/knowledge/proposals", proposals_page, methods=["GET"]),
    Route("/knowledge/proposals/{proposal_id:id}/accept", _review_form(True), methods=["POST"]),
    Route("/knowledge/proposals/{proposal_id:id}/reject", _review_form(False), methods=["POST"]),
    Route("/escalations/{escalation_id:id}/propose", propose_form, methods=["POST"]),
]
