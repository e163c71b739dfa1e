"""Suggestions in the console: listed with what the patron wrote (each read audited), answered from the
page or the API, and the answer goes to the patron on their channel."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.models import AuditLog, OutboxMessage, Suggestion
from tests.console_helpers import signed_in, staff
from tests.test_report_answers import patron_with_report


def test_the_list_shows_what_patrons_asked_and_audits_the_read(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron, number = patron_with_report(crm)
    signed_in(console, "lin")
    rows = console.get("/api/suggestions").json()["suggestions"]
    assert [(row["id"], row["kind"], row["status"], row["text"]) for row in rows] == [
        (number, "purchase", "new", "more chemistry e-books")
    ]
    assert console.get("/api/suggestions", params={"status": "done"}).json()["suggestions"] == []
    assert console.get("/api/suggestions", params={"status": "lost"}).status_code == 400
    with Session(crm, future=True) as session:
        reads = session.execute(select(AuditLog.reason).where(AuditLog.patron_id == patron)).scalars().all()
    assert reads == ["console: suggestions and requests"]  # the filtered list showed no one: no read


def test_answering_from_the_api_sends_it_to_the_patron(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, number = patron_with_report(crm)
    token = {"X-CSRF-Token": signed_in(console, "lin")}
    done = console.post(
        f"/api/suggestions/{number}/answer", headers=token, json={"text": "Ordered.", "status": "accepted"}
    )
    assert done.json()["status"] == "accepted"
    assert done.json()["channel"] == "telegram"
    assert (
        console.post(f"/api/suggestions/{number}/answer", headers=token, json={"text": " "}).status_code
        == 400
    )
    assert console.post("/api/suggestions/999/answer", headers=token, json={"text": "x"}).status_code == 404
    assert console.post(f"/api/suggestions/{number}/answer", json={"text": "no csrf"}).status_code == 403
    with Session(crm, future=True) as session:
        [(recipient, text)] = session.execute(select(OutboxMessage.recipient, OutboxMessage.text)).all()
    assert recipient == "telegram:9001"
    assert text.endswith("Ordered.")


def test_answering_from_the_page(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, number = patron_with_report(crm, language="zh", kind="service", channel="wechat", sender="wechat:oQ")
    token = signed_in(console, "lin")
    page = console.get("/suggestions").text
    assert "more chemistry e-books" in page
    answered = console.post(
        f"/suggestions/{number}/answer", data={"csrf_token": token, "text": "已采纳", "status": "done"}
    )
    assert "答复已发送给读者" in answered.text or "The answer is on its way" in answered.text
    assert "已采纳" in answered.text  # the answer is shown with the report
    with Session(crm, future=True) as session:
        report = session.get(Suggestion, number)
    assert report is not None
    assert (report.status, report.library_answer) == ("done", "已采纳")
