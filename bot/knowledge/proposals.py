"""Proposals for the knowledge base: a librarian's answer to a patron, proposed from the console as a new
way of asking an entry or as a new entry, and reviewed by a person before the bot uses it (the bot never
learns from patrons unreviewed). Accepting one writes the knowledge base through the editor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.models import PROPOSAL_KINDS, KnowledgeProposal, StaffUser, utcnow
from bot.knowledge import editing
from bot.knowledge.drafts import (
    ENTRY_ID,
    LONGEST_ALTERNATIVE,
    LONGEST_ANSWER,
    LONGEST_QUESTION,
    EditError,
    EntryNotFoundError,
    StoredEntry,
    draft_from,
)
from bot.language import LANGUAGES

SHOWN = 200


class ProposalError(Exception):
    """A proposal that cannot be made or reviewed; the message says why."""


class ProposalNotFoundError(ProposalError):
    """No proposal has that id."""


class ProposalConflictError(ProposalError):
    """The proposal was reviewed already, or the new entry's id is taken."""


@dataclass(frozen=True)
class Accepted:
    """What accepting did: the proposal, and the entry as the knowledge base holds it now."""

    proposal: KnowledgeProposal
    entry: StoredEntry


def _checked(text: str | None, name: str, longest: int, *, required: bool = True) -> str | None:
    text = (text or "").replace("\r\n", "\n").strip()
    if not text:
        if required:
            raise ProposalError(f"the {name} must not be empty")
        return None
    if len(text) > longest:
        raise ProposalError(f"the {name} has {len(text)} characters: at most {longest}")
    return text


def propose(
    *,
    session: Session,
    kb_path: Path,
    kind: str,
    lang: str,
    question: str,
    answer: str | None = None,
    entry_id: str | None = None,
    source: str | None = None,
    patron_id: int | None = None,
    staff: StaffUser | None = None,
) -> KnowledgeProposal:
    """A pending proposal: the patron's `question` as another way of asking `entry_id`, or (with the
    librarian's `answer`) as a new entry."""
    if kind not in PROPOSAL_KINDS:
        raise ProposalError(f"the kind must be one of {', '.join(PROPOSAL_KINDS)}")
    if lang not in LANGUAGES:
        raise ProposalError(f"the language must be one of {', '.join(LANGUAGES)}")
    longest = LONGEST_ALTERNATIVE if kind == "alternative" else LONGEST_QUESTION
    asked = _checked(question, "question", longest)
    answered = _checked(answer, "answer", LONGEST_ANSWER, required=kind == "entry")
    entry_id = (entry_id or "").strip() or None
    if kind == "alternative":
        if entry_id is None or not ENTRY_ID.fullmatch(entry_id):
            raise ProposalError("name the existing entry the question is another way of asking")
        try:
            entry = editing.get_entry(path=kb_path, entry_id=entry_id)
        except EntryNotFoundError as problem:
            raise ProposalNotFoundError(str(problem)) from None
        except EditError as problem:
            raise ProposalError(str(problem)) from None
        if lang not in entry.entry.texts:
            raise ProposalConflictError(f"entry {entry_id!r} has no {lang} question yet")
    proposal = KnowledgeProposal(
        kind=kind,
        entry_id=entry_id if kind == "alternative" else None,
        lang=lang,
        question=asked,
        answer=answered,
        source=(source or None) and source[:100],
        patron_id=patron_id,
        proposed_by=staff.id if staff is not None else None,
        status="pending",
        created_at=utcnow(),
    )
    session.add(proposal)
    session.flush()
    return proposal


def list_proposals(*, session: Session, status: str | None = "pending") -> list[KnowledgeProposal]:
    """Proposals of a status (all with None), oldest first, so the longest waiting is reviewed first."""
    query = select(KnowledgeProposal).order_by(KnowledgeProposal.created_at, KnowledgeProposal.id)
    if status is not None:
        query = query.where(KnowledgeProposal.status == status)
    return list(session.execute(query.limit(SHOWN)).scalars())


def pending_proposal(*, session: Session, proposal_id: int) -> KnowledgeProposal:
    """A proposal still waiting for review, locked until the caller's transaction ends."""
    query = select(KnowledgeProposal).where(KnowledgeProposal.id == proposal_id).with_for_update()
    proposal: KnowledgeProposal | None = session.execute(query).scalar_one_or_none()
    if proposal is None:
        raise ProposalNotFoundError(f"no proposal {proposal_id}")
    if proposal.status != "pending":
        raise ProposalConflictError(f"proposal {proposal_id} was already {proposal.status}")
    return proposal


def _reviewed(proposal: KnowledgeProposal, status: str, staff: StaffUser) -> None:
    proposal.status = status
    proposal.reviewed_by = staff.id
    proposal.reviewed_at = utcnow()


def accept(
    *,
    session: Session,
    kb_path: Path,
    proposal_id: int,
    staff: StaffUser,
    new_entry_id: str | None = None,
    topic: str | None = None,
) -> Accepted:
    """Accept a pending proposal into the knowledge base: an alternative is added to its entry; an entry
    proposal becomes a new entry `new_entry_id` (in `topic`) with its question and answer. The write
    publishes it to the bot; who accepted it is recorded."""
    proposal = pending_proposal(session=session, proposal_id=proposal_id)
    try:
        if proposal.kind == "alternative":
            entry = editing.add_alternative(
                path=kb_path,
                entry_id=str(proposal.entry_id),
                lang=str(proposal.lang),
                text=str(proposal.question),
            )
        else:
            if not new_entry_id:
                raise ProposalConflictError("this proposal is for a new entry: give the id it is to have")
            block: dict[str, object] = {
                "question": proposal.question,
                "answer": proposal.answer,
                "alternatives": [],
            }
            draft = draft_from({"topic": topic, str(proposal.lang): block}, entry_id=new_entry_id)
            entry = editing.create_entry(path=kb_path, draft=draft)
    except EditError as problem:  # the id is taken, or the entry changed or went since the proposal
        raise ProposalConflictError(str(problem)) from None
    _reviewed(proposal, "accepted", staff)
    return Accepted(proposal=proposal, entry=entry)


def mark_accepted(*, session: Session, proposal_id: int, staff: StaffUser) -> KnowledgeProposal:
    """Record that a librarian accepted an entry proposal by saving it, edited, as a new entry."""
    proposal = pending_proposal(session=session, proposal_id=proposal_id)
    _reviewed(proposal, "accepted", staff)
    return proposal


def reject(*, session: Session, proposal_id: int, staff: StaffUser) -> KnowledgeProposal:
    """Decline a pending proposal: nothing reaches the knowledge base; who declined it is recorded."""
    proposal = pending_proposal(session=session, proposal_id=proposal_id)
    _reviewed(proposal, "rejected", staff)
    return proposal
