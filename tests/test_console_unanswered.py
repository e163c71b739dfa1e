"""The unanswered-questions page and API: clusters with counts and the patrons' phrasings (shown as
text), a link to a new knowledge-base entry carrying them, and every patron whose words show audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import AuditLog, Conversation, Interaction, Patron, utcnow
from tests.console_helpers import signed_in, staff

XSS = "<script>alert('x')</script> when do you close?"
TOPICS = {"close": ("关门", "close"), "card": ("卡丢", "card")}


class TopicEncoder:
    """A stand-in for e5: one direction per topic (the reference texts: none), counting its texts."""

    def __init__(self) -> None:
        self.texts = 0

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.texts += len(texts)
        vectors = np.zeros((len(texts), 4), np.float32)
        for row, text in enumerate(texts):
            for column, words in enumerate(TOPICS.values()):
                if any(word in text for word in words):
                    vectors[row, column] = 1.0
        return vectors

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encode_queries(texts)


def _patron_asked(crm: Engine, sender: str, language: str, *questions: str) -> int:
    now = utcnow()
    with session_scope(crm) as session:
        patron = Patron(language=language)
        session.add(patron)
        session.flush()
        conversation = Conversation(patron_id=patron.id, channel="telegram", rasa_sender_id=sender)
        session.add(conversation)
        session.flush()
        for number, question in enumerate(questions):
            for direction, text, producer in (("in", question, None), ("out", "?", "utter_faq_unknown")):
                session.add(
                    Interaction(
                        patron_id=patron.id,
                        conversation_id=conversation.id,
                        channel="telegram",
                        direction=direction,
                        text=text,
                        language=language,
                        produced_by=producer,
                        event_key=f"{sender}:{number}:{direction}",
                        occurred_at=now - dt.timedelta(hours=2, minutes=-number),
                    )
                )
        return int(patron.id)


def test_the_page_and_api_show_clusters_with_entry_links_and_audit_the_reads(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    encoder = TopicEncoder()
    console.app.state.unanswered_encoder = encoder  # type: ignore[attr-defined]
    amy = _patron_asked(crm, "telegram:1", "en", "what time do you close", XSS)
    bo = _patron_asked(crm, "telegram:2", "zh", "几点关门", "我的卡丢了")
    signed_in(console, "lin")

    shown = console.get("/api/unanswered").json()
    assert shown["days"] == 30
    closing, card = shown["clusters"]
    assert (closing["count"], closing["patrons"], closing["languages"]) == (3, 2, ["en", "zh"])
    assert set(closing["examples"]) == {"what time do you close", XSS, "几点关门"}
    assert (card["count"], card["examples"]) == (1, ["我的卡丢了"])
    link = parse_qs(urlsplit(closing["entry_link"]).query)
    assert urlsplit(closing["entry_link"]).path == "/knowledge/new"
    assert link["question"] == [closing["representative"]]
    assert link["lang"] == [closing["language"]]
    same_language = {"what time do you close", XSS} if closing["language"] == "en" else {"几点关门"}
    assert set(link.get("alternative", [])) == same_language - {closing["representative"]}

    page = console.get("/unanswered")
    assert page.status_code == 200
    assert XSS not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert "我的卡丢了" in page.text
    assert 'href="/knowledge/new?lang=' in page.text
    assert 'href="/unanswered" aria-current="page"' in page.text
    with Session(crm, future=True) as session:
        reads = session.execute(
            select(AuditLog.patron_id).where(AuditLog.reason == "console: unanswered questions")
        ).scalars()
        assert sorted(reads) == sorted([amy, bo, amy, bo])  # once per patron, for the API and the page
    encoded = encoder.texts
    console.get("/api/unanswered")
    assert encoder.texts == encoded  # the phrasings' vectors are remembered between views

    assert console.get("/api/unanswered", params={"days": "0"}).status_code == 400
    assert console.get("/api/unanswered", params={"days": "366"}).status_code == 400
    old = console.get("/api/unanswered", params={"days": "1"}).json()["clusters"]
    assert sum(cluster["count"] for cluster in old) == 4


def test_nothing_unanswered_is_said_plainly(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    console.app.state.unanswered_encoder = TopicEncoder()  # type: ignore[attr-defined]
    signed_in(console, "lin")
    assert console.get("/api/unanswered").json()["clusters"] == []
    page = console.get("/unanswered", params={"lang": "en"}).text
    assert "No unanswered questions in this period." in page or "这段时间没有未答问题。" in page
