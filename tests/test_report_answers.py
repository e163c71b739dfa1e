"""Closing the co-creation loop: staff answer a suggestion, purchase request or complaint, the answer goes
to the patron on their channel in their language, and an answered suggestion brings its follow-up."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.cli.main import main
from bot.crm.database import session_scope
from bot.crm.models import (
    AuditLog,
    Campaign,
    ChannelIdentity,
    Conversation,
    Delivery,
    OutboxMessage,
    Patron,
    Suggestion,
    utcnow,
)
from bot.engagement.feedback import record_report
from bot.engagement.reports import ReportError, ReportNotFoundError, answer_report
from bot.outreach.triggers import fill_triggered
from bot.settings import get_settings


def patron_with_report(
    crm: Engine,
    *,
    language: str = "en",
    kind: str = "purchase",
    channel: str = "telegram",
    sender: str = "telegram:9001",
) -> tuple[int, int]:
    """A patron who gave a report in a conversation on `channel`: (patron id, report number)."""
    with session_scope(crm) as session:
        patron = Patron(language=language, display_name="Amy")
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel=channel, external_id=sender.split(":")[1]))
        conversation = Conversation(patron_id=patron.id, channel=channel, rasa_sender_id=sender)
        session.add(conversation)
        session.flush()
        report = record_report(
            session=session,
            patron_id=patron.id,
            kind=kind,
            text="more chemistry e-books",
            topic=None,
            rasa_sender_id=sender,
        )
        report.conversation_id = conversation.id
        return int(patron.id), int(report.id)


def outbox(crm: Engine) -> list[tuple[str, str, str, str, int | None]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(
                OutboxMessage.channel,
                OutboxMessage.recipient,
                OutboxMessage.text,
                OutboxMessage.produced_by,
                OutboxMessage.patron_id,
            ).order_by(OutboxMessage.id)
        ).all()
        return [tuple(row) for row in rows]


def test_the_answer_reaches_the_patron_on_the_channel_they_asked_in(crm: Engine) -> None:
    patron, number = patron_with_report(crm)
    at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    with session_scope(crm) as session:
        answered = answer_report(
            session=session, report_id=number, staff="lin", text=" Ordered: on the shelf next week. ", now=at
        )
    assert (answered.status, answered.channel) == ("under_review", "telegram")
    assert outbox(crm) == [
        (
            "telegram",
            "telegram:9001",
            f"The library's answer to your purchase request (no. {number}): Ordered: on the shelf next week.",
            "answer_report",
            patron,
        )
    ]
    with Session(crm, future=True) as session:
        report = session.get(Suggestion, number)
        assert report is not None
        assert report.library_answer == "Ordered: on the shelf next week."
        assert (report.answered_at, report.patron_notified_at) == (at, at)
        assert report.answered_by_id is not None
        audit = session.execute(select(AuditLog).where(AuditLog.patron_id == patron)).scalars().all()
        assert [(row.actor, row.action) for row in audit] == [("staff:lin", "update")]
        assert audit[0].detail == {"report_id": number, "outbox_id": answered.outbox_id}


def test_a_chinese_patron_reads_it_in_chinese_and_the_status_is_the_one_given(crm: Engine) -> None:
    _, number = patron_with_report(crm, language="zh", kind="service", channel="wechat", sender="wechat:oAbc")
    with session_scope(crm) as session:
        answered = answer_report(
            session=session, report_id=number, staff="lin", text="周日开放已列入计划", status="accepted"
        )
    assert answered.status == "accepted"
    [(channel, recipient, text, _, _)] = outbox(crm)
    assert (channel, recipient) == ("wechat", "wechat:oAbc")
    assert text == f"图书馆对您的建议（编号 {number}）的答复：周日开放已列入计划"


@pytest.mark.parametrize(
    ("text", "status", "message"),
    [
        ("   ", None, "the answer is empty"),
        ("x" * 2001, None, "at most 2000"),
        ("fine", "maybe", "status must be one of"),
    ],
)
def test_a_bad_answer_is_refused_and_nothing_is_recorded_or_sent(
    crm: Engine, text: str, status: str | None, message: str
) -> None:
    _, number = patron_with_report(crm)
    with pytest.raises(ReportError, match=message), session_scope(crm) as session:
        answer_report(session=session, report_id=number, staff="lin", text=text, status=status)
    assert outbox(crm) == []
    with Session(crm, future=True) as session:
        report = session.get(Suggestion, number)
        assert report is not None
        assert (report.library_answer, report.status) == (None, "new")


def test_an_erased_patrons_report_and_an_unknown_number_cannot_be_answered(crm: Engine) -> None:
    with session_scope(crm) as session:
        anonymous = Suggestion(patron_id=None, kind="service", text=None)  # as an erasure leaves it
        session.add(anonymous)
        session.flush()
        number = int(anonymous.id)
    with pytest.raises(ReportError, match="erased at their request"), session_scope(crm) as session:
        answer_report(session=session, report_id=number, staff="lin", text="thanks")
    with pytest.raises(ReportNotFoundError, match="no report 999"), session_scope(crm) as session:
        answer_report(session=session, report_id=999, staff="lin", text="thanks")
    assert outbox(crm) == []


def test_a_report_given_outside_a_conversation_is_answered_in_the_patrons_latest_one(crm: Engine) -> None:
    patron, _ = patron_with_report(crm, channel="rest", sender="rest:amy")
    with session_scope(crm) as session:
        session.add(
            Conversation(
                patron_id=patron,
                channel="webchat",
                rasa_sender_id="webchat:s1",
                last_message_at=utcnow() + dt.timedelta(minutes=1),
            )
        )
        number = int(
            record_report(session=session, patron_id=patron, kind="service", text="quiet zone", topic=None).id
        )
    with session_scope(crm) as session:
        answer_report(session=session, report_id=number, staff="lin", text="done")
    assert [(channel, recipient) for channel, recipient, *_ in outbox(crm)] == [("webchat", "webchat:s1")]


def test_an_answered_suggestion_brings_its_triggered_follow_up_once(crm: Engine) -> None:
    patron, number = patron_with_report(crm)
    with session_scope(crm) as session:
        session.add(
            Campaign(
                name="after-answer",
                message={"en": "Did our answer help?"},
                schedule={"after": {"event": "suggestion_answered", "days": 2}},
                trigger_event="suggestion_answered",
                trigger_days=2.0,
                status="scheduled",
                created_at=utcnow() - dt.timedelta(days=30),
            )
        )
    answered_at = utcnow() - dt.timedelta(days=3)
    with session_scope(crm) as session:
        answer_report(session=session, report_id=number, staff="lin", text="ordered", now=answered_at)

    assert fill_triggered(engine=crm) == 1
    assert fill_triggered(engine=crm) == 0  # once
    with Session(crm, future=True) as session:
        [(who, occasion)] = session.execute(select(Delivery.patron_id, Delivery.occasion)).all()
    assert (who, occasion) == (patron, f"suggestion_answered:{number}")


def test_the_command_line_answers_by_number_as_suggestions_or_reports(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    get_settings.cache_clear()
    _, number = patron_with_report(crm)
    assert (
        main(["suggestions", "answer", str(number), "Ordered.", "--status", "accepted", "--staff", "lin"])
        == 0
    )
    assert f"report {number} answered (accepted)" in capsys.readouterr().out
    assert main(["reports", "answer", f"report:{number}", "Arrived.", "--staff", "lin"]) == 0
    assert main(["suggestions", "answer", "999", "x", "--staff", "lin"]) == 2
    assert "no report 999" in capsys.readouterr().err
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 2
        report = session.get(Suggestion, number)
        assert report is not None
        assert (report.library_answer, report.status) == ("Arrived.", "accepted")
