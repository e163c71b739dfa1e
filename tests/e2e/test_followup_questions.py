"""End to end: a campaign's follow-up question asked in the patron's Rasa conversation by the running
bot's campaign scheduler (trigger_intent), answered there and recorded against it; "pause" and "暂停推送"
hold a later campaign message. The trained model, a real `patronbot run`, the REST channel."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import make_engine, session_scope
from bot.crm.models import Campaign, Conversation, Delivery, Feedback, Patron, Segment, utcnow
from bot.settings import PROJECT_ROOT
from tests.e2e.conftest import RunningBot
from tests.e2e.test_rest_conversation import FACTS, response_text

pytestmark = pytest.mark.rasa
T = TypeVar("T")

# Questions are asked through the Rasa server's HTTP API, which `patronbot run` must start it with
# (--enable-api and the installation's token, bot/runtime/runner.py).
asked_through_rasa = pytest.mark.skipif(
    "--enable-api" not in (PROJECT_ROOT / "bot" / "runtime" / "runner.py").read_text(encoding="utf-8"),
    reason="patronbot run starts the Rasa server without its HTTP API (--enable-api): see docs/campaigns.md",
)

QUESTION = {
    "en": "Hello {display_name}, how satisfied were you with the help you got on Monday?",
    "zh": "{display_name}您好，您对周一得到的帮助满意吗？",
}
NEWS = {"en": "The research data workshop is on Friday.", "zh": "周五有科研数据讲座。"}


def eventually(check: Callable[[], T | None], *, what: str, timeout: float = 60) -> T:
    """The first true value of `check`, looked at until `timeout` (the bot's processes work on their own)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def daytime_zone() -> str:
    """A time zone where it is about noon now, so quiet hours (21:00-08:00) hold nothing back."""
    offset = 12 - utcnow().hour
    offset = offset - 24 if offset > 14 else offset + 24 if offset < -12 else offset
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


@pytest.fixture
def crm(running_bot: RunningBot) -> Iterator[Engine]:
    engine = make_engine(running_bot.crm_url)
    yield engine
    engine.dispose()


def subscribed_patron(bot: RunningBot, crm: Engine, *, greeting: str) -> tuple[str, int]:
    """A new REST patron who said `greeting` and tapped "yes" to the library's messages, as the CRM
    knows them once the ingester has written their conversation; (sender, patron id)."""
    sender = f"e2e-fq-{uuid.uuid4().hex[:10]}"
    bot.say(sender, greeting)
    bot.say(sender, "/subscribe")

    def conversation() -> int | None:
        with Session(crm, future=True) as session:
            return session.execute(
                select(Conversation.patron_id).where(Conversation.rasa_sender_id == f"rest:{sender}")
            ).scalar_one_or_none()

    patron_id = eventually(conversation, what="the patron's conversation in the CRM")
    with session_scope(crm) as session:
        session.execute(update(Patron).where(Patron.id == patron_id).values(time_zone=daytime_zone()))
    return sender, int(patron_id)


def campaign(crm: Engine, *, kind: str, asks: str | None = None) -> int:
    """A running campaign (its deliveries are made by the test, not by a segment's run)."""
    name = f"e2e-{kind}-{uuid.uuid4().hex[:8]}"
    with session_scope(crm) as session:
        segment = Segment(name=f"seg-{name}", definition={})
        session.add(segment)
        session.flush()
        row = Campaign(
            name=name,
            segment_id=segment.id,
            status="running",
            kind=kind,
            asks=asks,
            message=QUESTION if kind == "question" else NEWS,
        )
        session.add(row)
        session.flush()
        return int(row.id)


def deliver(crm: Engine, campaign_id: int, patron_id: int) -> int:
    """A delivery due now: the running bot's campaign scheduler releases it within a second or two."""
    with session_scope(crm) as session:
        row = Delivery(campaign_id=campaign_id, patron_id=patron_id, state="pending", scheduled_at=utcnow())
        session.add(row)
        session.flush()
        return int(row.id)


def outbox(bot: RunningBot, sender: str) -> list[dict[str, Any]]:
    """What waits for the patron in the REST channel's outbox (taken once read)."""
    url = f"{bot.webhook.removesuffix('/webhook')}/outbox?sender={quote(sender)}"
    with urllib.request.urlopen(url, timeout=30) as reply:
        found: list[dict[str, Any]] = json.loads(reply.read())
        return found


def asked(bot: RunningBot, crm: Engine, sender: str, delivery_id: int) -> dict[str, Any]:
    """The follow-up question as the patron's client fetches it, once the scheduler has asked it."""
    messages = eventually(lambda: outbox(bot, sender), what="the question in the patron's outbox")
    with Session(crm, future=True) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        assert delivery.state == "queued"
    (question,) = messages
    return question


def feedback_of(crm: Engine, delivery_id: int) -> list[tuple[Any, ...]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(Feedback.patron_id, Feedback.csat, Feedback.comment).where(
                Feedback.delivery_id == delivery_id
            )
        ).all()
        return [tuple(row) for row in rows]


@asked_through_rasa
def test_a_rating_answers_the_follow_up_question_and_is_recorded_against_it(
    running_bot: RunningBot, crm: Engine
) -> None:
    sender, patron_id = subscribed_patron(running_bot, crm, greeting="hello")
    delivery = deliver(crm, campaign(crm, kind="question", asks="csat"), patron_id)
    question = asked(running_bot, crm, sender, delivery)
    assert question["text"].startswith(
        "Hello reader, how satisfied were you with the help you got on Monday?"
    )
    assert "PAUSE" in question["text"]  # the opt-out hint
    assert [button["title"] for button in question["buttons"]] == ["1", "2", "3", "4", "5"]
    assert running_bot.say(sender, "4") == [response_text("utter_feedback_thanks", "en")]
    assert feedback_of(crm, delivery) == [(patron_id, 4, None)]


@asked_through_rasa
def test_an_answer_in_words_is_recorded_as_the_patrons_comment(running_bot: RunningBot, crm: Engine) -> None:
    sender, patron_id = subscribed_patron(running_bot, crm, greeting="hi there")
    delivery = deliver(crm, campaign(crm, kind="question", asks="csat"), patron_id)
    asked(running_bot, crm, sender, delivery)
    running_bot.say(sender, "not really, the book never came")
    assert feedback_of(crm, delivery) == [(patron_id, None, "not really, the book never came")]


@asked_through_rasa
def test_a_question_instead_of_an_answer_is_answered_and_records_nothing(
    running_bot: RunningBot, crm: Engine
) -> None:
    sender, patron_id = subscribed_patron(running_bot, crm, greeting="good morning")
    delivery = deliver(crm, campaign(crm, kind="question", asks="csat"), patron_id)
    asked(running_bot, crm, sender, delivery)
    replies = running_bot.say(sender, "what time do you open on Monday?")
    assert any(FACTS.weekly["monday"].span() in reply for reply in replies), replies
    assert feedback_of(crm, delivery) == []


@pytest.mark.parametrize(
    ("greeting", "pause", "language"), [("hello", "pause", "en"), ("你好", "暂停推送", "zh")]
)
def test_pause_holds_a_later_campaign_message(
    running_bot: RunningBot, crm: Engine, greeting: str, pause: str, language: str
) -> None:
    sender, patron_id = subscribed_patron(running_bot, crm, greeting=greeting)
    (reply,) = running_bot.say(sender, pause)
    opening = response_text("utter_paused", language).split("{resume_date}")[0]
    assert reply.startswith(opening), reply
    with Session(crm, future=True) as session:
        patron = session.get(Patron, patron_id)
        assert patron is not None
        assert patron.paused_until is not None
        assert patron.paused_until > utcnow() + dt.timedelta(days=29)
    # The bot still answers while messages are paused.
    hours = running_bot.say(sender, "图书馆几点开门？" if language == "zh" else "when do you open on Monday?")
    assert any(FACTS.weekly["monday"].span() in text for text in hours), hours
    delivery = deliver(crm, campaign(crm, kind="announcement"), patron_id)

    def settled() -> tuple[str, str | None] | None:
        with Session(crm, future=True) as session:
            row = session.get(Delivery, delivery)
            assert row is not None
            return (str(row.state), row.reason) if row.state != "pending" else None

    assert eventually(settled, what="the campaign message released") == ("skipped", "paused")
    assert outbox(running_bot, sender) == []
