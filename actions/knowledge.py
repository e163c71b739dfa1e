"""The action that answers library-service questions from the knowledge base, or says it does not know."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.language import patron_language
from bot.knowledge import KnowledgeError, KnowledgeService
from bot.library import FactsError, load_facts
from bot.settings import get_settings

log = logging.getLogger(__name__)


@functools.cache
def knowledge_service() -> KnowledgeService:
    settings = get_settings()
    return KnowledgeService(
        kb_path=settings.path(settings.knowledge_base),
        tuning_path=settings.path(settings.retrieval_tuning),
        model=settings.embedding_model,
        multilingual=settings.multilingual_model,
    )


def _contact() -> dict[str, str]:
    settings = get_settings()
    try:
        facts = load_facts(settings.path(settings.library_facts))
    except FactsError:
        return {"phone": "-", "email": "-"}
    return {"phone": facts.phone, "email": facts.email}


class ActionAnswerFaq(Action):  # type: ignore[misc]
    """Answer when retrieval is confident; offer the closest questions when it is unsure; otherwise
    say honestly that the bot does not know, and how to reach a librarian."""

    def name(self) -> str:
        return "action_answer_faq"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        text = (tracker.latest_message or {}).get("text") or ""
        language = patron_language(tracker)
        try:
            decision = knowledge_service().retriever().decide(text, lang=language)
        except KnowledgeError as error:
            log.error("cannot answer from the knowledge base: %s", error)
            dispatcher.utter_message(response="utter_action_unavailable")
            return []
        best = decision.best
        if decision.kind == "answer" and best is not None:
            dispatcher.utter_message(text=best.entry.answer_for(tracker.get_slot("patron_type")))
        elif decision.kind == "suggest":
            buttons = [{"title": hit.entry.question, "payload": hit.entry.question} for hit in decision.hits]
            dispatcher.utter_message(response="utter_faq_did_you_mean", buttons=buttons)
        else:
            dispatcher.utter_message(response="utter_faq_unknown", **_contact())
        return []


def warm_up() -> None:
    """Load the models and index the knowledge base before the first patron asks (takes seconds)."""
    try:
        knowledge_service().retriever()
    except KnowledgeError as error:
        log.error("cannot index the knowledge base: %s", error)


# `patronbot run` sets this for the action server, which then answers /health only once warm.
if os.environ.get("PATRONBOT_WARM_UP") == "1":
    warm_up()
