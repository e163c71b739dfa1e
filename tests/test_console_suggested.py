"""Suggested answers beside an escalated patron's questions: the knowledge base's best entries (the real
retrieval once), shown as text with an "Insert into reply" button, and unavailable without breaking
anything when the knowledge base cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.models import AuditLog
from bot.knowledge.entries import Entry
from bot.knowledge.index import Hit
from bot.settings import PROJECT_ROOT, Settings
from console.app import create_app
from tests.console_helpers import escalated_patron, signed_in, staff

XSS = "<script>alert('x')</script> lost my card"


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The knowledge base's vectors, kept for the module: encoded once for SQLite and PostgreSQL."""
    return tmp_path_factory.mktemp("vectors")


def _console(crm: Engine, crm_url: str, knowledge_base: Path, vectors: Path) -> TestClient:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=crm_url, knowledge_base=knowledge_base, vector_dir=vectors
    )
    return TestClient(create_app(settings=settings, engine=crm), base_url="http://console.test")


@pytest.fixture
def knowledge_console(crm: Engine, crm_url: str, tmp_path: Path, vectors: Path) -> Iterator[TestClient]:
    """The console on a copy of the shipped knowledge base."""
    copy = tmp_path / "faq.yml"
    copy.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    with _console(crm, crm_url, copy, vectors) as client:
        yield client


def _reads(crm: Engine, escalation: int) -> int:
    with Session(crm, future=True) as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(AuditLog)
                .where(AuditLog.reason == f"answering escalation {escalation}")
            ).scalar_one()
        )


def test_the_right_entry_is_suggested_for_the_patrons_question(
    knowledge_console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm, words="I lost my library card, what should I do?")
    signed_in(knowledge_console, "lin")

    found = knowledge_console.get(f"/api/escalations/{escalation}/suggestions").json()
    assert found["available"] is True
    [asked] = found["suggestions"]
    assert (asked["question"], asked["language"]) == ("I lost my library card, what should I do?", "en")
    assert asked["answers"][0]["entry_id"] == "lost-card"
    assert len(asked["answers"]) == 3
    assert all(a["language"] == "en" for a in asked["answers"])
    assert _reads(crm, escalation) == 1  # the patron's words were read: audited

    page = knowledge_console.get(f"/escalations/{escalation}").text
    assert f'hx-get="/escalations/{escalation}/suggested"' in page
    assert 'src="/static/suggested.js"' in page
    part = knowledge_console.get(f"/escalations/{escalation}/suggested", headers={"HX-Request": "true"})
    assert "<html" not in part.text
    assert 'data-insert-reply="sa1-1"' in part.text
    assert 'id="sa1-1"' in part.text
    first_answer = asked["answers"][0]["answer"].replace("'", "&#39;").replace('"', "&#34;")
    assert first_answer.split("&")[0] in part.text
    alone = knowledge_console.get(f"/escalations/{escalation}/suggested")  # without JavaScript
    assert "<html" in alone.text
    assert 'id="sa1-1"' in alone.text
    assert knowledge_console.get("/api/escalations/999/suggestions").status_code == 404


class FakeKnowledge:
    """A knowledge base whose one entry's answer is staff-written HTML (shown as text)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def retriever(self) -> Any:
        if self.fail:
            raise RuntimeError("the models did not load")
        return self

    def search(self, text: str, *, lang: str | None = None, k: int = 3) -> list[Hit]:
        entry = Entry(id="lost-card", lang=lang or "en", question="Lost card?", answer="<b>Call us</b>")
        return [Hit(entry=entry, score=0.9, signals={})]


def test_questions_and_answers_are_shown_as_text(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm, words=XSS)
    console.app.state.knowledge = FakeKnowledge()  # type: ignore[attr-defined]
    signed_in(console, "lin")
    part = console.get(f"/escalations/{escalation}/suggested", headers={"HX-Request": "true"}).text
    assert XSS not in part
    assert "&lt;script&gt;alert(" in part
    assert "<b>Call us</b>" not in part
    assert "&lt;b&gt;Call us&lt;/b&gt;" in part


def test_suggestions_are_unavailable_when_the_knowledge_base_fails(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    console.app.state.knowledge = FakeKnowledge(fail=True)  # type: ignore[attr-defined]
    signed_in(console, "lin")
    assert console.get(f"/api/escalations/{escalation}/suggestions").json() == {
        "available": False,
        "suggestions": [],
    }
    part = console.get(f"/escalations/{escalation}/suggested", params={"lang": "en"})
    assert part.status_code == 200
    assert "Suggested answers are unavailable" in part.text or "暂时无法提供推荐答复" in part.text
    assert console.get(f"/escalations/{escalation}").status_code == 200
