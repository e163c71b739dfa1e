"""A patron's report number (the suggestion's id, which the bot tells them) finds the report and the
escalation that handed a complaint to staff."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import AuditLog, Suggestion
from bot.engagement.feedback import record_report
from bot.engagement.reports import (
    ReportError,
    ReportNotFoundError,
    escalation_of_report,
    list_reports,
    read_report,
    report_numbers,
)
from bot.knowledge.facts import LibraryFacts
from tests.test_escalations import add_patron, escalate


def report(
    crm: Engine, patron: int | None, sender: str, kind: str = "complaint", text: str = "too noisy"
) -> int:
    """A complaint or suggestion as actions/feedback.py records it."""
    with session_scope(crm) as session:
        return record_report(
            session=session, patron_id=patron, kind=kind, text=text, topic="spaces", rasa_sender_id=sender
        ).id


def test_a_complaint_is_found_by_the_number_the_patron_was_told(crm: Engine, facts: LibraryFacts) -> None:
    alice, bob = add_patron(crm, "alice"), add_patron(crm, "bob")
    # Other patrons' reports and escalations come first: the numbers of the two kinds of row differ.
    report(crm, bob, "rest:bob", kind="purchase", text="more manga")
    escalate(crm, facts, bob, rasa_sender_id="rest:bob", reason="requested")
    escalate(crm, facts, add_patron(crm, "carol"), rasa_sender_id="rest:carol", reason="fallback")
    number = report(crm, alice, "rest:alice", text="the renewal page never loads")
    escalation = escalate(crm, facts, alice, reason="complaint", priority="high")
    assert number != escalation
    with Session(crm, future=True) as session:
        assert escalation_of_report(session=session, report_id=number) == escalation
        assert report_numbers(session=session, escalation_ids=[escalation, escalation - 1]) == {
            escalation: [number]
        }
        assert session.get(Suggestion, 1).escalation_id is None  # type: ignore[union-attr]


def test_a_second_complaint_joins_the_conversations_open_escalation(crm: Engine, facts: LibraryFacts) -> None:
    alice = add_patron(crm, "alice")
    first = report(crm, alice, "rest:alice", text="too noisy")
    escalation = escalate(crm, facts, alice, reason="complaint")
    second = report(crm, alice, "rest:alice", text="and too cold")
    assert escalate(crm, facts, alice, reason="complaint") == escalation
    with Session(crm, future=True) as session:
        assert report_numbers(session=session, escalation_ids=[escalation]) == {escalation: [first, second]}
        assert escalation_of_report(session=session, report_id=second) == escalation


def test_a_librarian_already_on_the_conversation_gets_the_complaint_made_to_them(
    crm: Engine, facts: LibraryFacts
) -> None:
    alice = add_patron(crm, "alice")
    live = escalate(crm, facts, alice, reason="requested")
    number = report(crm, alice, "rest:alice")
    assert escalate(crm, facts, alice, reason="complaint") == live
    with Session(crm, future=True) as session:
        assert escalation_of_report(session=session, report_id=number) == live


def test_a_suggestion_has_no_escalation_and_an_unknown_number_is_no_report(crm: Engine) -> None:
    number = report(crm, add_patron(crm), "rest:alice", kind="service", text="open on Sundays")
    with Session(crm, future=True) as session:
        with pytest.raises(ReportError, match=f"report {number} \\(service\\) has no escalation"):
            escalation_of_report(session=session, report_id=number)
        with pytest.raises(ReportNotFoundError, match="no report 999: `patronbot reports` lists them"):
            escalation_of_report(session=session, report_id=999)


def test_reports_are_listed_newest_first_with_their_escalation_and_read_with_an_audit(
    crm: Engine, facts: LibraryFacts
) -> None:
    alice = add_patron(crm, "alice")
    idea = report(crm, alice, "rest:alice", kind="service", text="open on Sundays")
    complaint = report(crm, alice, "rest:alice", text="too noisy")
    escalation = escalate(crm, facts, alice, reason="complaint")
    with Session(crm, future=True) as session:
        listed = [(r.id, e.id if e else None) for r, e in list_reports(session=session)]
        assert listed == [(complaint, escalation), (idea, None)]
        assert [r.id for r, _ in list_reports(session=session, kind="service")] == [idea]
        assert list_reports(session=session, status="done") == []
        with pytest.raises(ReportError, match="kind must be one of"):
            list_reports(session=session, kind="rant")
    with session_scope(crm) as session:
        found, its_escalation = read_report(session=session, report_id=complaint, staff="li.wei")
        assert (found.text, its_escalation.id if its_escalation else None) == ("too noisy", escalation)
    with Session(crm, future=True) as session:
        audit = session.execute(select(AuditLog)).scalar_one()
        assert (audit.actor, audit.action, audit.patron_id) == ("staff:li.wei", "read", alice)
        assert audit.detail == {"report_id": complaint}
