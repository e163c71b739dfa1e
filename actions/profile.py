"""The patron's profile: patron type and interests, told once and skippably, kept with consent."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy import select
from sqlalchemy.orm import Session

from actions.buttons import helpful_buttons, interest_buttons, is_tap, patron_type_buttons, tapped
from actions.crm import patron_id_for, privacy_url, tracker_key, with_crm
from actions.knowledge_base import faq_entry
from actions.language import patron_language
from bot.crm.models import PATRON_TYPES, Consent
from bot.engagement.profile import INTERESTS, described_patron_type, mentioned_interests, save_profile
from bot.language import is_question

SKIP = "skip"


def answers_interests_question(tracker: Tracker) -> bool:
    """Whether the patron's latest message answers, typed rather than tapped, the interests question
    the bot has just asked ("databases and new books", "讲座"): the classifier takes it for a service
    question, and channels without buttons have only text. "How do I reach the databases?" asks."""
    text = str((tracker.latest_message or {}).get("text") or "")
    if is_tap(text) or is_question(text, keywords_ask=False) or not mentioned_interests(text):
        return False
    return just_asked(tracker, "utter_ask_interests")


def just_asked(tracker: Tracker, response: str) -> bool:
    """Whether the bot's last message was `response` (the question the patron may be answering)."""
    said = next((event for event in reversed(tracker.events) if event.get("event") == "bot"), None)
    return said is not None and (said.get("metadata") or {}).get("utter_action") == response


class ActionSaveProfile(Action):  # type: ignore[misc]
    """Keeps the patron type or interests the patron chose to tell; then the next question, if any."""

    def name(self) -> str:
        return "action_save_profile"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        text = str((tracker.latest_message or {}).get("text") or "")
        typed = not is_tap(text)
        asked = just_asked(tracker, "utter_ask_patron_type")
        # Only the patron's own type, told or answered: not one named for someone else.
        patron_type = tapped(tracker, "patron_type") or (
            described_patron_type(text, asked=asked) if typed else None
        )
        interest = tapped(tracker, "interest")
        interests = [interest] if interest else (mentioned_interests(text) if typed else [])
        events: list[dict[str, Any]] = [SlotSet("profile_asked", True)]
        if SKIP in (patron_type, interest):
            dispatcher.utter_message(response="utter_profile_skipped")
            return events
        patron_type = patron_type if patron_type in PATRON_TYPES else None
        interests = [i for i in interests if i in INTERESTS]
        if patron_type is None and not interests:
            dispatcher.utter_message(
                response="utter_ask_patron_type", buttons=patron_type_buttons(patron_language(tracker))
            )
            return events

        def save(session: Session) -> bool:
            patron_id = patron_id_for(session, tracker)
            save_profile(
                session=session,
                patron_id=patron_id,
                channel=tracker_key(tracker).channel,
                patron_type=patron_type,
                interests=interests,
            )
            # Asked for follow-up messages only if the patron has never decided either way.
            asked = select(Consent.id).where(Consent.patron_id == patron_id, Consent.purpose == "follow_up")
            decided = session.execute(asked.limit(1)).first()
            return decided is None

        ask_consent = with_crm(save, doing="save a patron's profile")
        if ask_consent is None:
            dispatcher.utter_message(response="utter_action_unavailable")
            return events
        in_form = bool((tracker.active_loop or {}).get("name"))
        if patron_type is not None:
            events.append(SlotSet("patron_type", patron_type))
            entry = faq_entry(tracker.get_slot("last_faq"), patron_language(tracker))
            if entry is not None and patron_type in entry.audience:
                # The answer for their type, with "did this help?" like every answer.
                language = patron_language(tracker)
                dispatcher.utter_message(
                    text=entry.answer_for(patron_type), buttons=helpful_buttons(language, entry.id)
                )
            if in_form:  # told in the middle of a form: kept, and the form goes on with no more questions
                return events
            if not interests:
                dispatcher.utter_message(
                    response="utter_ask_interests", buttons=interest_buttons(patron_language(tracker))
                )
                return events
        if ask_consent:
            dispatcher.utter_message(response="utter_ask_follow_up_consent", privacy_url=privacy_url())
        else:
            dispatcher.utter_message(response="utter_profile_saved")
        return events
