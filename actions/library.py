"""Actions that answer from the library's facts file: opening hours, address and contact."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.language import patron_language
from bot.knowledge.facts import FactsError, LibraryFacts, contact_reply, load_facts
from bot.knowledge.hours import hours_reply
from bot.settings import get_settings

log = logging.getLogger(__name__)


def _facts_or_apology(dispatcher: CollectingDispatcher) -> LibraryFacts | None:
    """The library's facts; if the file is broken, an apology to the patron and an operator log line."""
    settings = get_settings()
    try:
        return load_facts(settings.path(settings.library_facts))
    except FactsError as error:
        log.error("cannot answer from the library facts file: %s", error)
        dispatcher.utter_message(response="utter_action_unavailable")
        return None


class ActionOpeningHours(Action):  # type: ignore[misc]
    """Answers an opening-hours question for the day it names, or with the week's hours."""

    def name(self) -> str:
        return "action_opening_hours"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        facts = _facts_or_apology(dispatcher)
        if facts is not None:
            text = (tracker.latest_message or {}).get("text") or ""
            reply = hours_reply(facts=facts, text=text, language=patron_language(tracker))
            dispatcher.utter_message(text=reply)
        return []


class ActionLibraryContact(Action):  # type: ignore[misc]
    """Answers where the library is and how to reach it."""

    def name(self) -> str:
        return "action_library_contact"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        facts = _facts_or_apology(dispatcher)
        if facts is not None:
            dispatcher.utter_message(text=contact_reply(facts=facts, language=patron_language(tracker)))
        return []
