"""The action that answers library-service questions from the knowledge base, or says it does not know."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.buttons import candidate_buttons, helpful_buttons, patron_type_buttons
from actions.knowledge_base import knowledge_service
from actions.language import patron_language
from actions.profile import ActionSaveProfile, answers_interests_question
from bot.engagement.profile import mentioned_patron_type
from bot.knowledge import query_vectors
from bot.knowledge.entries import Entry, KnowledgeError
from bot.knowledge.facts import FactsError, load_facts
from bot.knowledge.index import MULTILINGUAL
from bot.knowledge.text import normalise_query
from bot.language import Language
from bot.settings import get_settings
from bot.thread import FOLLOW_UP_WEIGHT, told_patron_type
from bot.thread import PARSE_KEY as THREAD_KEY

log = logging.getLogger(__name__)


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
        if answers_interests_question(tracker):
            events: list[dict[str, Any]] = ActionSaveProfile().run(dispatcher, tracker, domain)
            return events
        latest = tracker.latest_message or {}
        text = latest.get("text") or ""
        language = patron_language(tracker)
        # The NLU's e5 vector of this message, if it read the same text: then the turn encodes it once.
        e5 = query_vectors.unpack(latest.get(query_vectors.PARSE_KEY), normalise_query(text))
        vectors = {MULTILINGUAL: e5} if e5 is not None else None
        thread = latest.get(THREAD_KEY) or {}  # how nlu/context.py read it with the conversation
        context = str(thread.get("query") or "")
        try:
            retriever = knowledge_service().retriever()
            # Encoded once for both readings below.
            vectors = retriever.needed_vectors(text, language, vectors)
            # A follow-up ("那续借呢", "where is it") is read with the question it follows; a message
            # the NLU found standing on its own is, if the knowledge base answers it outright.
            decision = retriever.decide(text, lang=language, vectors=vectors)
            if context and (thread.get("threaded") or decision.kind != "answer"):
                threaded = query_vectors.unpack(thread.get(query_vectors.PARSE_KEY), normalise_query(context))
                decision = retriever.decide_in_context(
                    text,
                    context,
                    lang=language,
                    weight=FOLLOW_UP_WEIGHT,
                    vectors=vectors,
                    context_vectors={MULTILINGUAL: threaded} if threaded is not None else None,
                )
        except KnowledgeError as error:
            log.error("cannot answer from the knowledge base: %s", error)
            dispatcher.utter_message(response="utter_action_unavailable")
            return []
        best = decision.best
        if decision.kind == "answer" and best is not None:
            return self._answer(dispatcher, tracker, best.entry, text=text, language=language)
        if decision.kind == "suggest":
            buttons = candidate_buttons([hit.entry.question for hit in decision.hits], language)
            dispatcher.utter_message(response="utter_faq_did_you_mean", buttons=buttons)
        else:
            dispatcher.utter_message(response="utter_faq_unknown", **_contact())
        return []

    @staticmethod
    def _answer(
        dispatcher: CollectingDispatcher, tracker: Tracker, entry: Entry, *, text: str, language: Language
    ) -> list[dict[str, Any]]:
        """The answer for the patron's type: the one named in the question, else the one they said was
        theirs earlier in the conversation, else the one their profile holds."""
        patron_type = (
            mentioned_patron_type(text) or told_patron_type(tracker.events) or tracker.get_slot("patron_type")
        )
        events: list[dict[str, Any]] = [SlotSet("last_faq", entry.id)]
        if entry.audience and patron_type is None and not tracker.get_slot("profile_asked"):
            # The rule differs by patron type and the bot does not know theirs: ask, once.
            dispatcher.utter_message(text=entry.answer)
            dispatcher.utter_message(response="utter_ask_patron_type", buttons=patron_type_buttons(language))
            return [*events, SlotSet("profile_asked", True)]
        dispatcher.utter_message(
            text=entry.answer_for(patron_type), buttons=helpful_buttons(language, entry.id)
        )
        return events
