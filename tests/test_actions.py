"""Custom actions, run with rasa-sdk's CollectingDispatcher and trackers built in the test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.library import ActionLibraryContact, ActionOpeningHours
from bot.library import load_facts
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
