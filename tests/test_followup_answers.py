"""The patron's side of a follow-up question and of a pause: the NLU reads an answer as one (with a
stand-in classifier), and the actions ask, record, pause and resume against a real CRM database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rasa.shared.nlu.training_data.message import Message
from rasa_sdk import Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions.outreach import (
    ActionAskFollowup,
    ActionPauseMessages,
    ActionRecordFollowupAnswer,
    ActionResumeMessages,
)
from actions.relationship import crm_engine
from bot.crm.consent import record_consent
from bot.crm.database import session_scope
from bot.crm.models import Campaign, Delivery, Escalation, Feedback, Patron, Segment, utcnow
from bot.crm.patrons import get_or_create_patron, patron_key
from nlu.answers import ANSWER_FOLLOWUP, OpenQuestion, answers, open_question
from nlu.context import read_in_context
from tests.test_actions import FACTS

START = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"}]
EXTERNAL = {
    "event": "user",
    "text": "EXTERNAL: followup_question",
    "metadata": {"is_external": True},
    "parse_data": {"intent": {"name": "followup_question"}},
}


def asked(delivery: str = "7", asks: str = "csat") -> list[dict[str, Any]]:
    """The events of a follow-up question asked (as trigger_intent and action_ask_followup leave them)."""
    return [
        *START,
        EXTERNAL,
        {"event": "action", "name": "action_ask_followup"},
        {"event": "bot", "text": "How satisfied were you?"},
        {"event": "slot", "name": "followup_delivery", "value": delivery},
        {"event": "slot", "name": "followup_asks", "value": asks},
        {"event": "action", "name": "action_listen"},
    ]


def said(text: str, intent: str) -> list[dict[str, Any]]:
    return [
        {"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}},
        {"event": "action", "name": "action_opening_hours"},
        {"event": "bot", "text": "..."},
        {"event": "action", "name": "action_listen"},
    ]


def test_the_question_asked_is_open_until_answered() -> None:
    assert open_question(asked()) == OpenQuestion(delivery="7", asks="csat", messages_since=0)
    later = [*asked(), *said("what time do you open?", "ask_hours")]
    assert open_question(later) == OpenQuestion(delivery="7", asks="csat", messages_since=1)
    answered = [
        *asked(),
        {"event": "action", "name": "action_record_followup_answer"},
        {"event": "slot", "name": "followup_delivery", "value": None},
    ]
    assert open_question(answered) is None


def test_a_question_from_an_earlier_session_or_under_a_form_is_not_open() -> None:
    # Slots carried into a new session come back without the action that asked.
    carried = [*asked(), *START, {"event": "slot", "name": "followup_delivery", "value": "7"}]
    assert open_question(carried) is None
    in_form = [*asked(), {"event": "active_loop", "name": "feedback_form"}]
    assert open_question(in_form) is None
    talked_on = [*asked(), *(said("hours?", "ask_hours") * 4)]
    assert open_question(talked_on) is None


CSAT = OpenQuestion(delivery="7", asks="csat", messages_since=0)


@pytest.mark.parametrize(
    ("text", "intent", "confidence", "question", "expected"),
    [
        ("4", "give_feedback", 0.9, CSAT, True),
        ("not really, the book never came", "complaint", 0.8, CSAT, True),
        ("还行吧", "thanks", 0.4, CSAT, True),
        ("what time do you open?", "ask_hours", 0.95, CSAT, False),
        ("图书馆几点开门", "ask_hours", 0.95, CSAT, False),
        ("stop", "unsubscribe", 0.97, CSAT, False),
        ("暂停推送", "pause_messages", 0.97, CSAT, False),
        ("talk to a librarian", "human_handoff", 0.9, CSAT, False),
        ("ok", "thanks", 0.9, CSAT, False),
        ("thanks", "thanks", 0.95, CSAT, False),
        # After another message, only a plain rating or yes/no still answers it.
        ("5", "give_feedback", 0.9, OpenQuestion("7", "csat", 1), True),
        ("the book never came", "returns", 0.7, OpenQuestion("7", "csat", 1), False),
        ("yes", "thanks", 0.7, OpenQuestion("7", "helpful", 0), True),
        ("more study rooms", "study_spaces", 0.8, OpenQuestion("7", "open", 0), True),
    ],
)
def test_what_answers_the_question(
    text: str, intent: str, confidence: float, question: OpenQuestion, expected: bool
) -> None:
    assert answers(text, intent, confidence, question) is expected


def _read(text: str, intent: str, confidence: float, events: list[dict[str, Any]]) -> Message:
    top = {"name": intent, "confidence": confidence}
    message = Message(data={"text": text, "intent": top, "intent_ranking": [top]})
    read_in_context(message, events, lambda query: ([], None))
    return message


def test_the_nlu_reads_the_answer_as_answer_followup_and_a_question_as_itself() -> None:
    answered = _read("4", "give_feedback", 0.9, asked())
    assert answered.get("intent") == {"name": ANSWER_FOLLOWUP, "confidence": 1.0}
    assert [r["name"] for r in answered.get("intent_ranking")] == [ANSWER_FOLLOWUP, "give_feedback"]
    assert _read("what time do you open?", "ask_hours", 0.95, asked()).get("intent")["name"] == "ask_hours"
    assert _read("4", "give_feedback", 0.9, START).get("intent")["name"] == "give_feedback"


# ── the actions ──────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def crm_for_actions(crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    crm_engine.cache_clear()
    yield crm
    crm_engine().dispose()
    crm_engine.cache_clear()


def tracker(
    text: str, *, slots: dict[str, Any] | None = None, entities: list[dict[str, Any]] | None = None
) -> Tracker:
    return Tracker(
        sender_id="rest:test",
        slots={"language": "en", **(slots or {})},
        latest_message={
            "text": text,
            "intent": {"name": "x", "confidence": 0.99},
            "entities": entities or [],
        },
        events=[],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )


def run(action: Any, text: str, **options: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = action.run(dispatcher, tracker(text, **options), {})
    return events, dispatcher.messages


def _the_patron(crm: Engine, *, consent: bool = True, language: str = "en") -> int:
    with session_scope(crm) as session:
        patron_id = get_or_create_patron(
            session=session, key=patron_key("rest:test", None), language=language
        )
        if consent:
            record_consent(session=session, patron_id=patron_id, purpose="follow_up", granted=True)
        return patron_id


def test_pause_pauses_and_says_until_when_and_resume_ends_it(crm_for_actions: Engine) -> None:
    patron_id = _the_patron(crm_for_actions)
    _, paused = run(ActionPauseMessages(), "pause")
    assert [m["response"] for m in paused] == ["utter_paused"]
    with Session(crm_for_actions, future=True) as session:
        patron = session.get(Patron, patron_id)
        assert patron is not None
        assert patron.paused_until is not None
        assert patron.paused_until > utcnow()
        until = patron.paused_until.astimezone(FACTS.timezone)  # the day in the library's time zone
    assert paused[0]["resume_date"] == f"{until.day} {until:%B} {until.year}"
    _, resumed = run(ActionResumeMessages(), "resume")
    assert [m["response"] for m in resumed] == ["utter_resumed"]
    _, again = run(ActionResumeMessages(), "resume")
    assert [m["response"] for m in again] == ["utter_not_paused"]


def test_a_patron_without_consent_is_told_they_get_no_messages_anyway(crm_for_actions: Engine) -> None:
    _the_patron(crm_for_actions, consent=False)
    _, paused = run(ActionPauseMessages(), "暂停推送")
    assert [m["response"] for m in paused] == ["utter_paused_not_subscribed"]


def _question_delivery(crm: Engine, patron_id: int, asks: str = "csat") -> int:
    with session_scope(crm) as session:
        segment = Segment(name="seg", definition={})
        session.add(segment)
        session.flush()
        campaign = Campaign(
            name="q",
            segment_id=segment.id,
            status="running",
            kind="question",
            asks=asks,
            message={"en": "How satisfied were you, {display_name}?", "zh": "{display_name}，您满意吗？"},
        )
        session.add(campaign)
        session.flush()
        delivery = Delivery(campaign_id=campaign.id, patron_id=patron_id, state="queued", occasion="")
        session.add(delivery)
        session.flush()
        return int(delivery.id)


def test_the_question_is_asked_with_rating_buttons_that_answer_it(crm_for_actions: Engine) -> None:
    patron_id = _the_patron(crm_for_actions, language="zh")
    delivery = _question_delivery(crm_for_actions, patron_id)
    events, messages = run(
        ActionAskFollowup(),
        "EXTERNAL: followup_question",
        entities=[{"entity": "followup", "value": str(delivery)}],
    )
    assert events == [
        SlotSet("followup_delivery", str(delivery)),
        SlotSet("followup_asks", "csat"),
        SlotSet("language", "zh"),
    ]
    (message,) = messages
    assert message["text"].startswith("读者，您满意吗？")
    assert "暂停推送" in message["text"]  # the opt-out hint
    assert [b["title"] for b in message["buttons"]] == ["1", "2", "3", "4", "5"]
    assert message["buttons"][3]["payload"] == f'/answer_followup{{"csat": "4", "followup": "{delivery}"}}'


def test_a_delivery_of_another_patron_is_not_asked(crm_for_actions: Engine) -> None:
    _the_patron(crm_for_actions)
    with session_scope(crm_for_actions) as session:
        other = Patron(display_name="someone else", language="en")
        session.add(other)
        session.flush()
        other_id = int(other.id)
    delivery = _question_delivery(crm_for_actions, other_id)
    events, messages = run(
        ActionAskFollowup(), "x", entities=[{"entity": "followup", "value": str(delivery)}]
    )
    assert (events, messages) == ([], [])


def test_the_answer_is_recorded_against_the_question_and_a_low_one_calls_a_librarian(
    crm_for_actions: Engine,
) -> None:
    patron_id = _the_patron(crm_for_actions)
    delivery = _question_delivery(crm_for_actions, patron_id)
    slots = {"followup_delivery": str(delivery), "followup_asks": "csat"}
    events, messages = run(ActionRecordFollowupAnswer(), "not really, the book never came", slots=slots)
    assert [m["response"] for m in messages] == ["utter_feedback_thanks"]
    assert SlotSet("followup_delivery", None) in events
    _, low = run(
        ActionRecordFollowupAnswer(),
        '/answer_followup{"csat": "1"}',
        entities=[{"entity": "csat", "value": "1"}, {"entity": "followup", "value": str(delivery)}],
    )
    assert low[0]["response"] == "utter_feedback_low"
    with Session(crm_for_actions, future=True) as session:
        rows = session.execute(select(Feedback.delivery_id, Feedback.csat, Feedback.comment)).all()
        assert [tuple(row) for row in rows] == [(delivery, 1, "not really, the book never came")]
        reasons = session.execute(select(Escalation.reason)).scalars().all()
        assert reasons == ["low_rating"]
