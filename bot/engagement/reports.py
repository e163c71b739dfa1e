"""Patrons' reports (complaints and suggestions) as staff find them: by the number the patron was told.

The number is the `suggestion` row's id (bot.engagement.feedback.record_report). A complaint is handed
to staff by an escalation, which has an id of its own; `suggestion.escalation_id` joins the two, so
the patron's number finds both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.models import Escalation, Suggestion
from bot.crm.models.feedback import SUGGESTION_STATUSES
from bot.engagement.escalations import staff_member
from bot.engagement.feedback import REPORT_KINDS


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
