"""Custom actions, run with rasa-sdk's CollectingDispatcher and trackers built in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.library import ActionLibraryContact, ActionOpeningHours
from bot.knowledge.facts import load_facts
from bot.settings import PROJECT_ROOT

FACTS = load_facts(PROJECT_ROOT / "knowledge" / "library.yml")


def tracker(text: str, *, language: str | None = None) -> Tracker:
    return Tracker(
        sender_id="rest:test",
        slots={"language": language},
        latest_message={"text": text, "intent": {"name": "ask_hours", "confidence": 0.99}, "entities": []},
        events=[],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )


def run(
    action: Any, text: str, language: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    dispatcher = CollectingDispatcher()
    events = action.run(dispatcher, tracker(text, language=language), {})
    return events, dispatcher.messages


def test_opening_hours_for_saturday_in_english() -> None:
    events, messages = run(ActionOpeningHours(), "When do you open on Saturday?")
    assert events == []
    assert len(messages) == 1
    assert FACTS.weekly["saturday"].span() in messages[0]["text"]
    assert "Saturday" in messages[0]["text"]


def test_opening_hours_in_chinese_week_summary() -> None:
    _, messages = run(ActionOpeningHours(), "图书馆几点开门？")
    assert FACTS.name["zh"] in messages[0]["text"]
    assert "周一至周五" in messages[0]["text"]


def test_message_without_words_answers_in_the_conversation_language() -> None:
    _, messages = run(ActionLibraryContact(), "👍", language="en")
    assert FACTS.address["en"] in messages[0]["text"]


def test_contact_in_chinese() -> None:
    _, messages = run(ActionLibraryContact(), "图书馆在哪里")
    assert FACTS.address["zh"] in messages[0]["text"]
    assert FACTS.phone in messages[0]["text"]


def test_broken_facts_file_gives_an_apology_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("name: [unclosed", encoding="utf-8")
    monkeypatch.setenv("PATRONBOT_LIBRARY_FACTS", str(broken))
    _, messages = run(ActionOpeningHours(), "opening hours")
    assert len(messages) == 1
    assert messages[0]["response"] == "utter_action_unavailable"


@pytest.fixture
def small_kb(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A two-entry knowledge base (renewal; loan limits, with a postgraduate answer) on characters and
    MiniLM, so that retrieval is quick and its answers known."""
    import yaml

    from actions.knowledge_base import knowledge_service

    kb = tmp_path / "faq.yml"
    kb.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    {
                        "id": "renew",
                        "topic": "renewal",
                        "en": {
                            "question": "How can I renew a borrowed book?",
                            "answer": "Renew in My Library.",
                        },
                        "zh": {"question": "怎么续借图书？", "answer": "在我的图书馆里续借。"},
                    },
                    {
                        "id": "limits",
                        "topic": "borrowing",
                        "en": {"question": "How many books can I borrow?", "answer": "Twenty."},
                        "zh": {"question": "能借几本书？", "answer": "二十本。"},
                        "audience": {
                            "postgraduate": {"en": "Thirty, for 60 days.", "zh": "三十本，借期 60 天。"}
                        },
                    },
                ]
            },
            allow_unicode=True,
        ),
        encoding="utf-8",
    )
    tuning = tmp_path / "retrieval.yml"
    tuning.write_text(
        "languages:\n  en: {weights: {sentence: 0.5, characters: 0.5}, answer: 0.8, suggest: 0.3}\n"
        "  zh: {weights: {sentence: 0.3, characters: 0.7}, answer: 0.8, suggest: 0.3}\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PATRONBOT_KNOWLEDGE_BASE", str(kb))
    monkeypatch.setenv("PATRONBOT_RETRIEVAL_TUNING", str(tuning))
    monkeypatch.setenv("PATRONBOT_MULTILINGUAL_MODEL", "false")
    knowledge_service.cache_clear()
    yield
    knowledge_service.cache_clear()


def test_faq_action_answers_offers_or_admits_not_knowing(small_kb: None) -> None:
    from actions.knowledge import ActionAnswerFaq

    _, answered = run(ActionAnswerFaq(), "How can I renew a borrowed book?")
    assert [m["text"] for m in answered] == ["Renew in My Library."]
    _, chinese = run(ActionAnswerFaq(), "怎么续借图书？")
    assert [m["text"] for m in chinese] == ["在我的图书馆里续借。"]

    dispatcher = CollectingDispatcher()
    postgraduate = tracker("How many books can I borrow?")
    postgraduate.slots["patron_type"] = "postgraduate"
    ActionAnswerFaq().run(dispatcher, postgraduate, {})
    assert [m["text"] for m in dispatcher.messages] == ["Thirty, for 60 days."]

    _, unsure = run(ActionAnswerFaq(), "renewing stuff")
    assert unsure[0]["response"] == "utter_faq_did_you_mean"
    assert unsure[0]["buttons"][0]["payload"] == "How can I renew a borrowed book?"
    assert unsure[0]["buttons"][-1] == {
        "title": "None of these: ask a librarian",
        "payload": "/human_handoff",
    }

    _, unknown = run(ActionAnswerFaq(), "zzzz qqqq")
    assert unknown[0]["response"] == "utter_faq_unknown"
    assert unknown[0]["phone"] == FACTS.phone


def test_a_follow_up_is_answered_with_its_thread_and_the_type_told_earlier(small_kb: None) -> None:
    from actions.knowledge import ActionAnswerFaq
    from bot.thread import PARSE_KEY

    def answer(*, thread: dict[str, Any] | None, earlier: list[dict[str, Any]]) -> list[Any]:
        message = tracker("and how long for me")
        message.latest_message["intent"] = {"name": "borrowing_rules", "confidence": 0.6}
        if thread is not None:
            message.latest_message[PARSE_KEY] = thread
        message.events = earlier
        dispatcher = CollectingDispatcher()
        ActionAnswerFaq().run(dispatcher, message, {})
        return [m.get("text") or m.get("response") for m in dispatcher.messages]

    said_type = [{"event": "user", "text": "I'm a postgraduate student", "parse_data": {}}]
    threaded = {"query": "How many books can I borrow? and how long for me", "threaded": True}
    # Alone, "and how long for me" is nothing the knowledge base can answer.
    assert answer(thread=None, earlier=said_type) in (["utter_faq_unknown"], ["utter_faq_did_you_mean"])
    # With the question it follows, and the type the patron told earlier: the postgraduate answer,
    # without asking the patron type again.
    assert answer(thread=threaded, earlier=said_type)[:1] == ["Thirty, for 60 days."]
    # Told for someone else, the type is not theirs: the general answer and the question.
    someone = [{"event": "user", "text": "asking for my professor", "parse_data": {}}]
    assert answer(thread=threaded, earlier=someone) == ["Twenty.", "utter_ask_patron_type"]


def test_faq_action_scores_with_the_nlu_vector_of_the_same_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The e5 vector in the parse data is used instead of encoding the message again, only when it was
    made of the same text. Handing over the vector of another question shows which one was scored."""
    import yaml

    from actions.knowledge import ActionAnswerFaq
    from actions.knowledge_base import knowledge_service
    from bot.knowledge import query_vectors
    from bot.knowledge.encoders import MultilingualEncoder
    from bot.knowledge.text import normalise_query

    kb = tmp_path / "faq.yml"
    entries = [
        ("renew", "How can I renew a borrowed book?", "Renew in My Library."),
        ("limits", "How many books can I borrow?", "Twenty."),
    ]
    kb.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    {"id": key, "topic": "borrowing", "en": {"question": question, "answer": answer}}
                    for key, question, answer in entries
                ]
            }
        ),
        encoding="utf-8",
    )
    tuning = tmp_path / "retrieval.yml"
    tuning.write_text(
        "languages:\n  en: {weights: {multilingual: 1.0}, answer: 0.5, suggest: 0.3}\n", encoding="utf-8"
    )
    monkeypatch.setenv("PATRONBOT_KNOWLEDGE_BASE", str(kb))
    monkeypatch.setenv("PATRONBOT_RETRIEVAL_TUNING", str(tuning))
    knowledge_service.cache_clear()
    text = "How can I renew a borrowed book?"
    other = MultilingualEncoder().encode_queries(["how many books can i borrow?"])[0]

    def answer(handed: Any) -> list[str]:
        message = tracker(text)
        message.latest_message[query_vectors.PARSE_KEY] = handed
        dispatcher = CollectingDispatcher()
        ActionAnswerFaq().run(dispatcher, message, {})
        return [m.get("text") for m in dispatcher.messages]

    try:
        assert answer(query_vectors.pack(normalise_query(text), other)) == ["Twenty."]
        assert answer(query_vectors.pack("another text", other)) == ["Renew in My Library."]
        assert answer({"model": "multilingual-e5-small", "float16": "not base64!"}) == [
            "Renew in My Library."
        ]
        assert answer(None) == ["Renew in My Library."]
    finally:
        knowledge_service.cache_clear()
