"""Patrons' reports (complaints and suggestions) as staff find them: by the number the patron was told.

The number is the `suggestion` row's id (bot.engagement.feedback.record_report). A complaint is handed
to staff by an escalation, which has an id of its own; `suggestion.escalation_id` joins the two, so
the patron's number finds both.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.models import Conversation, Escalation, Patron, Suggestion, utcnow
from bot.crm.models.feedback import SUGGESTION_STATUSES
from bot.crm.patrons import patron_key
from bot.engagement.escalations import staff_member
from bot.engagement.feedback import REPORT_KINDS
from bot.language import Language
from bot.outbound.outbox import send

# How the library's answer reaches the patron, by the report's kind, in the patron's language.
ANSWER_MESSAGE: dict[Language, dict[str, str]] = {
    "en": {
        "service": "The library's answer to your suggestion (no. {number}): {answer}",
        "purchase": "The library's answer to your purchase request (no. {number}): {answer}",
        "complaint": "The library's answer to your complaint (no. {number}): {answer}",
    },
    "zh": {
        "service": "图书馆对您的建议（编号 {number}）的答复：{answer}",
        "purchase": "图书馆对您的荐购（编号 {number}）的答复：{answer}",
        "complaint": "图书馆对您的投诉（编号 {number}）的答复：{answer}",
    },
}
ANSWER_PRODUCER = "answer_report"
LONGEST_ANSWER = 2000  # characters: one message on every channel (WeChat's limit is the lowest)


class ReportError(Exception):
    """A staff action on a report that cannot be done; the message says why, in one line."""


class ReportNotFoundError(ReportError, LookupError):
    """No report has the number given."""


def _report(session: Session, report_id: int) -> Suggestion:
    report = session.get(Suggestion, report_id)
    if report is None:
        raise ReportNotFoundError(f"no report {report_id}: `patronbot reports` lists them")
    return report


def escalation_of_report(*, session: Session, report_id: int) -> int:
    """The id of the escalation that handed report `report_id` (a complaint) to staff."""
    report = _report(session, report_id)
    if report.escalation_id is None:
        raise ReportError(
            f"report {report_id} ({report.kind}) has no escalation:"
            f" `patronbot reports show {report_id} --staff NAME` shows it"
        )
    return int(report.escalation_id)


def report_numbers(*, session: Session, escalation_ids: Collection[int]) -> dict[int, list[int]]:
    """The numbers of the reports each of these escalations handed to staff, lowest first."""
    numbers: dict[int, list[int]] = defaultdict(list)
    ids = sorted(set(escalation_ids))
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(Suggestion.escalation_id, Suggestion.id)
            .where(Suggestion.escalation_id.in_(ids[start : start + 500]))
            .order_by(Suggestion.id)
        ).all()
        for escalation_id, report_id in rows:
            numbers[int(escalation_id)].append(int(report_id))
    return dict(numbers)


def list_reports(
    *, session: Session, kind: str | None = None, status: str | None = None
) -> list[tuple[Suggestion, Escalation | None]]:
    """Reports (all, or of one kind or status), newest first, each with its escalation if it has one."""
    if kind is not None and kind not in REPORT_KINDS:
        raise ReportError(f"kind must be one of {', '.join(REPORT_KINDS)}, got {kind!r}")
    if status is not None and status not in SUGGESTION_STATUSES:
        raise ReportError(f"status must be one of {', '.join(SUGGESTION_STATUSES)}, got {status!r}")
    query = (
        select(Suggestion, Escalation)
        .outerjoin(Escalation, Escalation.id == Suggestion.escalation_id)
        .order_by(Suggestion.id.desc())
    )
    if kind is not None:
        query = query.where(Suggestion.kind == kind)
    if status is not None:
        query = query.where(Suggestion.status == status)
    return [(report, escalation) for report, escalation in session.execute(query).all()]


def read_report(*, session: Session, report_id: int, staff: str) -> tuple[Suggestion, Escalation | None]:
    """A report with what the patron wrote, and its escalation, for a staff member; the read is
    audited (a report kept anonymously after an erasure has no patron and no text left to read)."""
    report = _report(session, report_id)
    user = staff_member(session=session, username=staff)
    if report.patron_id is not None:
        log_access(
            session=session,
            actor=f"staff:{user.username}",
            action="read",
            patron_id=report.patron_id,
            reason=f"reading report {report.id}",
            staff_user=user,
            detail={"report_id": report.id},
        )
    escalation = session.get(Escalation, report.escalation_id) if report.escalation_id is not None else None
    return report, escalation


@dataclass(frozen=True)
class Answered:
    """A report answered: its status now, and the outbox message taking the answer to the patron."""

    report_id: int
    status: str
    outbox_id: int
    channel: str


def answer_report(
    *,
    session: Session,
    report_id: int,
    staff: str,
    text: str,
    status: str | None = None,
    now: dt.datetime | None = None,
) -> Answered:
    """Record the library's answer to a report and send it to the patron on the channel they gave it
    in (the outbox, so the channel's limits and the patron's reachability apply). The patron asked, so
    it goes without the follow-up consent that campaigns need. Answering again sends the new answer.
    A report left `new` becomes `under_review` unless `status` says otherwise."""
    answer = text.strip()
    if not answer:
        raise ReportError("the answer is empty: nothing recorded or sent")
    if len(answer) > LONGEST_ANSWER:
        raise ReportError(
            f"the answer is {len(answer)} characters; at most {LONGEST_ANSWER} go in one message"
        )
    if status is not None and status not in SUGGESTION_STATUSES:
        raise ReportError(f"status must be one of {', '.join(SUGGESTION_STATUSES)}, got {status!r}")
    report = _report(session, report_id)
    if report.patron_id is None:
        raise ReportError(
            f"report {report_id} cannot be answered: the patron's data was erased at their request,"
            " so there is no one to send it to"
        )
    recipient, channel = _where_to_answer(session, report)
    user = staff_member(session=session, username=staff)
    patron = session.get(Patron, report.patron_id)
    language: Language = "en" if patron is not None and patron.language == "en" else "zh"
    kind = report.kind if report.kind in ANSWER_MESSAGE[language] else "service"
    message = ANSWER_MESSAGE[language][kind].format(number=report.id, answer=answer)
    at = now or utcnow()
    outbox_id = send(
        session=session,
        channel=channel,
        recipient=recipient,
        text=message,
        produced_by=ANSWER_PRODUCER,
        patron_id=int(report.patron_id),
    )
    report.library_answer = answer
    report.answered_by_id = user.id
    report.answered_at = at
    report.patron_notified_at = at
    report.status = status or ("under_review" if report.status == "new" else report.status)
    log_access(
        session=session,
        actor=f"staff:{user.username}",
        action="update",
        patron_id=int(report.patron_id),
        reason=f"answered report {report.id}",
        staff_user=user,
        detail={"report_id": report.id, "outbox_id": outbox_id},
    )
    session.flush()
    return Answered(report_id=int(report.id), status=str(report.status), outbox_id=outbox_id, channel=channel)


def _where_to_answer(session: Session, report: Suggestion) -> tuple[str, str]:
    """The conversation the report was given in, or else the patron's latest one: (sender, channel)."""
    if report.rasa_sender_id:
        conversation = (
            session.get(Conversation, report.conversation_id) if report.conversation_id is not None else None
        )
        channel = conversation.channel if conversation is not None else None
        return report.rasa_sender_id, str(channel or patron_key(report.rasa_sender_id, None).channel)
    latest = session.execute(
        select(Conversation)
        .where(Conversation.patron_id == report.patron_id)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if latest is None:
        raise ReportError(f"report {report.id} names no conversation to answer in")
    return str(latest.rasa_sender_id), str(latest.channel)
