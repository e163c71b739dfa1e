"""Actions for the library's messages to the patron: pausing and resuming them, and a campaign's
follow-up question asked in the conversation and answered in it (bot/outreach/questions.py)."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.buttons import csat_buttons, helpful_buttons, is_tap, tapped
from actions.crm import library_facts, patron_id_for, with_crm
from actions.feedback import latest_text
from actions.handoff import open_escalation_for, when_staff_answer
from actions.language import patron_language
from actions.relationship import cancels_something_else
from bot.engagement.feedback import LOW_CSAT
from bot.outreach.pause import PauseState, pause_messages, resume_date, resume_messages
from bot.outreach.questions import DELIVERY_ENTITY, Answer, Question, question_for, record_answer

log = logging.getLogger(__name__)

# The slots that hold the question asked and not yet answered (nlu/answers.py reads them).
DELIVERY_SLOT = "followup_delivery"
ASKS_SLOT = "followup_asks"
ANSWER_INTENT = "answer_followup"


def _something_else(
    dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
) -> list[dict[str, Any]] | None:
    """ "how do I pause my hold?", "暂停借阅": pausing something other than the library's messages, which
    the classifier may still call pause_messages: answered as the question it is (the answer's events),
    nothing paused. None when the message is about the library's messages."""
    text = latest_text(tracker)
    if is_tap(text) or not cancels_something_else(text):
        return None
    from actions.knowledge import ActionAnswerFaq

    answered: list[dict[str, Any]] = ActionAnswerFaq().run(dispatcher, tracker, domain)
    return answered


def _resume_date(state: PauseState, language: str) -> str:
    facts = library_facts()
    assert state.paused_until is not None
    if facts is None:
        return f"{state.paused_until:%Y-%m-%d}"
    return resume_date(state.paused_until, language=language, zone=facts.timezone)


class ActionPauseMessages(Action):  # type: ignore[misc]
    """ "pause", "暂停推送": the library's campaign messages are held for 30 days; the patron keeps their
    consent and the bot still answers them. Told the day messages come again, and how to stop them."""

    def name(self) -> str:
        return "action_pause_messages"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        answered = _something_else(dispatcher, tracker, domain)
        if answered is not None:
            return answered

        def pause(session: Session) -> PauseState:
            return pause_messages(session=session, patron_id=patron_id_for(session, tracker))

        state = with_crm(pause, doing="pause a patron's messages")
        if state is None:
            dispatcher.utter_message(response="utter_action_unavailable")
            return []
        day = _resume_date(state, patron_language(tracker))
        response = "utter_paused" if state.subscribed else "utter_paused_not_subscribed"
        dispatcher.utter_message(response=response, resume_date=day)
        return []


class ActionResumeMessages(Action):  # type: ignore[misc]
    """ "resume", "恢复推送": the patron's pause ends now."""

    def name(self) -> str:
        return "action_resume_messages"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        answered = _something_else(dispatcher, tracker, domain)
        if answered is not None:
            return answered

        def resume(session: Session) -> PauseState:
            return resume_messages(session=session, patron_id=patron_id_for(session, tracker))

        state = with_crm(resume, doing="resume a patron's messages")
        if state is None:
            dispatcher.utter_message(response="utter_action_unavailable")
        elif not state.changed:
            dispatcher.utter_message(response="utter_not_paused")
        else:
            dispatcher.utter_message(
                response="utter_resumed" if state.subscribed else "utter_resumed_not_subscribed"
            )
        return []


def _delivery(tracker: Tracker) -> int | None:
    """The follow-up's delivery: the one a tapped button or the trigger names, else the one asked."""
    value = tapped(tracker, DELIVERY_ENTITY) or tracker.get_slot(DELIVERY_SLOT)
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def _rating_buttons(question: Question) -> list[dict[str, str]]:
    """The bot's own rating buttons, sending the answer to this question."""
    entities = {DELIVERY_ENTITY: str(question.delivery_id)}
    if question.asks == "csat":
        return csat_buttons(ANSWER_INTENT, **entities)
    if question.asks == "helpful":
        return helpful_buttons("zh" if question.language == "zh" else "en", None, ANSWER_INTENT, **entities)
    return []  # nps (0-10) and open questions are answered by typing


class ActionAskFollowup(Action):  # type: ignore[misc]
    """A campaign's follow-up question, triggered in the patron's conversation by the campaign sender:
    the campaign's message in the patron's language, with rating buttons where it asks a rating; the
    slots remember it, so the patron's next message can answer it."""

    def name(self) -> str:
        return "action_ask_followup"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        delivery = _delivery(tracker)
        if delivery is None:
            return []

        def find(session: Session) -> Question | None:
            return question_for(
                session=session, delivery_id=delivery, patron_id=patron_id_for(session, tracker)
            )

        question = with_crm(find, doing="ask a follow-up question")
        if question is None:
            # Nothing is said: the sender finds no message and records the delivery as not asked.
            log.warning("follow-up question %s is not this conversation's question: not asked", delivery)
            return []
        dispatcher.utter_message(text=question.text, buttons=[*_rating_buttons(question), *question.buttons])
        return [
            SlotSet(DELIVERY_SLOT, str(question.delivery_id)),
            SlotSet(ASKS_SLOT, question.asks),
            SlotSet("language", question.language),
        ]


class ActionRecordFollowupAnswer(Action):  # type: ignore[misc]
    """The patron's answer to the follow-up question (typed, or a tapped rating): recorded against its
    delivery, thanked; a low rating asks a librarian to follow the patron up, as the bot's own does."""

    def name(self) -> str:
        return "action_record_followup_answer"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        done = [SlotSet(DELIVERY_SLOT, None), SlotSet(ASKS_SLOT, None), SlotSet("csat", None)]
        delivery = _delivery(tracker)
        if delivery is None:
            dispatcher.utter_message(response="utter_default")
            return done
        taps = {
            name: value for name in ("csat", "helpful", "nps") if (value := tapped(tracker, name)) is not None
        }

        def record(session: Session) -> tuple[Answer | None]:
            patron_id = patron_id_for(session, tracker)
            answer = record_answer(
                session=session,
                patron_id=patron_id,
                delivery_id=delivery,
                text="" if taps else latest_text(tracker),
                tapped=taps,
                rasa_sender_id=tracker.sender_id,
            )
            if answer is not None and answer.csat is not None and answer.csat <= LOW_CSAT:
                open_escalation_for(
                    session=session, tracker=tracker, patron_id=patron_id, reason="low_rating"
                )
            return (answer,)

        recorded = with_crm(record, doing="record the answer to a follow-up question")
        answer = recorded[0] if recorded is not None else None
        if recorded is None:
            dispatcher.utter_message(response="utter_action_unavailable")
        elif answer is None:  # not this patron's question, or an answer that says nothing
            dispatcher.utter_message(response="utter_default")
        elif answer.csat is not None and answer.csat <= LOW_CSAT:
            dispatcher.utter_message(response="utter_feedback_low")
            dispatcher.utter_message(text=when_staff_answer(patron_language(tracker)))
        else:
            dispatcher.utter_message(response="utter_feedback_thanks")
        return done
