"""A message read with the conversation before it (nlu/context.py), with a stand-in for the classifier."""

from __future__ import annotations

from typing import Any

from rasa.shared.nlu.training_data.message import Message

from bot.thread import PARSE_KEY
from nlu.context import ADD_DETAIL, read_in_context

START = [{"event": "action", "name": "action_session_start"}, {"event": "session_started"}]


def user(text: str, intent: str) -> dict[str, Any]:
    return {"event": "user", "text": text, "parse_data": {"intent": {"name": intent}}}


def message(text: str, intent: str, confidence: float) -> Message:
    top = {"name": intent, "confidence": confidence}
    return Message(data={"text": text, "intent": top, "intent_ranking": [top]})


class Classifier:
    """Ranks any text as `ranking`, and remembers what it was asked to read."""

    def __init__(self, *ranking: tuple[str, float]) -> None:
        self.ranking = [{"name": name, "confidence": confidence} for name, confidence in ranking]
        self.read: list[str] = []

    def __call__(self, text: str) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        self.read.append(text)
        return [dict(r) for r in self.ranking], None


def read(
    text: str, intent: str, confidence: float, events: list[dict[str, Any]], rank: Classifier
) -> Message:
    found = message(text, intent, confidence)
    read_in_context(found, events, rank)
    return found


RETURNS = [*START, user("Can I return books when the library is closed?", "returns")]


def test_a_follow_up_that_points_back_is_read_with_its_thread() -> None:
    rank = Classifier(("returns", 0.9), ("ask_contact", 0.05))
    found = read("where is it", "ask_contact", 0.6, RETURNS, rank)
    assert found.get("intent")["name"] == "returns"
    assert rank.read == ["Can I return books when the library is closed? where is it"]
    assert found.get(PARSE_KEY) == {
        "follows": "returns",
        "query": "Can I return books when the library is closed? where is it",
        "threaded": True,
    }


def test_a_question_that_stands_on_its_own_keeps_its_reading() -> None:
    rank = Classifier(("returns", 0.7), ("out_of_scope", 0.2))
    weather = read("what's the weather like tomorrow", "out_of_scope", 0.9, RETURNS, rank)
    assert weather.get("intent")["name"] == "out_of_scope"
    assert weather.get(PARSE_KEY) is None
    # A new service question keeps its intent; the knowledge base may read it with the thread only
    # when it finds no answer alone.
    wifi = read("how do I connect to the wifi", "tech_services", 0.95, RETURNS, Classifier(("returns", 0.6)))
    assert wifi.get("intent")["name"] == "tech_services"
    assert wifi.get(PARSE_KEY)["threaded"] is False


def test_acknowledgements_requests_and_answers_to_the_bot_are_not_follow_ups() -> None:
    rank = Classifier(("returns", 0.9))
    assert read("ok great", "greet", 0.5, RETURNS, rank).get("intent")["name"] == "greet"
    assert (
        read("talk to a librarian", "human_handoff", 0.95, RETURNS, rank).get("intent")["name"]
        == "human_handoff"
    )
    asked = [*RETURNS, {"event": "bot", "metadata": {"utter_action": "utter_ask_patron_type"}}]
    assert read("postgrad", "inform_profile", 0.4, asked, rank).get(PARSE_KEY) is None
    assert read("where is it", "ask_contact", 0.6, [], rank).get("intent")["name"] == "ask_contact"
    assert rank.read == []


def test_a_question_the_classifier_cannot_place_takes_the_threads_topic() -> None:
    loans = [*START, user("怎么看我借了哪些书", "card_account")]
    rank = Classifier(("subscribe", 0.3), ("card_account", 0.25), ("out_of_scope", 0.2))
    found = read("快到期了会提醒我吗", "subscribe", 0.37, loans, rank)
    assert found.get("intent")["name"] == "card_account"
    # None listed above the chosen intent (FallbackClassifier would read it as ambiguous).
    assert all(r["confidence"] <= 0.25 for r in found.get("intent_ranking"))
    # Read alone first by the knowledge base: it stands on its own words.
    assert found.get(PARSE_KEY)["threaded"] is False
    # Too unlikely a topic: left as it was (the fallback says it did not understand).
    unlikely = Classifier(("subscribe", 0.3), ("card_account", 0.1))
    assert read("快到期了会提醒我吗", "subscribe", 0.37, loans, unlikely).get("intent")["name"] == "subscribe"


def test_where_after_a_service_question_is_where_that_service_is() -> None:
    computers = [*START, user("do you have computers students can use", "tech_services")]
    rank = Classifier(("ask_contact", 0.5), ("tech_services", 0.3))
    assert read("which floor", "ask_contact", 0.62, computers, rank).get("intent")["name"] == "tech_services"
    # The library itself named: its address.
    assert (
        read("where is the library", "ask_contact", 0.9, computers, rank).get("intent")["name"]
        == "ask_contact"
    )


RECORDED = [
    *START,
    user("阅览室空调太冷了，能不能调高一点", "complaint"),
    {"event": "slot", "name": "last_report", "value": "7"},
]


def test_a_detail_after_a_recorded_report_is_added_to_it() -> None:
    rank = Classifier(("study_spaces", 0.5))
    found = read("三楼东边", "study_spaces", 0.4, RECORDED, rank)
    assert found.get("intent") == {"name": ADD_DETAIL, "confidence": 1.0}
    assert found.get(PARSE_KEY) == {"report": "7"}
    assert rank.read == []


def test_after_a_report_a_question_or_a_sure_request_is_not_a_detail() -> None:
    rank = Classifier(("study_spaces", 0.5))
    for text, intent, confidence in [
        ("谢谢", "thanks", 0.95),
        ("好的", "thanks", 0.4),
        ("还有，厕所也很脏", "complaint", 0.9),
        ("what time do you close?", "ask_hours", 0.9),
        ("转人工", "human_handoff", 0.97),
    ]:
        assert read(text, intent, confidence, RECORDED, rank).get("intent")["name"] == intent, text
