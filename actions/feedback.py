"""Feedback actions: "did this help?", the CSAT/NPS form, complaints and suggestions, into the CRM."""

from __future__ import annotations

import logging
from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import REQUESTED_SLOT
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.buttons import csat_buttons, helpful_tap, is_tap, tapped
from actions.crm import library_facts, patron_id_for, with_crm, with_crm_once
from actions.handoff import open_escalation_for, when_staff_answer
from actions.knowledge_base import faq_topic
from actions.language import patron_language
from bot.engagement.feedback import (
    LOW_CSAT,
    is_cancel,
    latest_rating,
    parse_csat,
    parse_nps,
    rating_correction,
    rating_in_request,
    record_feedback,
    record_helpful,
)
from bot.language import is_question

log = logging.getLogger(__name__)

SKIPPED = "-"
# A comment or report longer than this is cut (the full text stays in the conversation's record).
MAX_TEXT = 4000


def latest_text(tracker: Tracker) -> str:
    return str((tracker.latest_message or {}).get("text") or "")


def _given_now(tracker: Tracker, slot: str, value: Any) -> bool:
    """Whether a form's value came with the patron's latest message (typed, or a tapped button's
    entity), not from a form the patron left earlier: slots outlive a form left by "stop" or "talk to
    a librarian" (and carry over to the next session), and an old rating must not be recorded as new."""
    given = str(value if value is not None else "").strip()
    return given == latest_text(tracker).strip() or tapped(tracker, slot) == given


# Ends a form at once, whatever is still unanswered (Rasa ends a loop whose requested slot is None).
LEAVE_FORM = {"requested_slot": None}
# Intents that act wherever they are said: never taken as the answer to a form's question.
COMMANDS = frozenset(
    {"unsubscribe", "pause_messages", "human_handoff", "privacy_what_we_know", "privacy_delete"}
)


def told_not_asked(tracker: Tracker, domain: DomainDict, slot: str) -> dict[str, Any]:
    """The latest message as the value of the free-text ``slot`` the form asked for, when its intent
    is a library service that the slot's mapping leaves to the interruption rules, but the patron
    told rather than asked: "renewal online never works" is the complaint itself (the classifier
    says renewal), while "how do I renew?" is answered before the form asks again."""
    if tracker.get_slot(REQUESTED_SLOT) != slot:
        return {}
    latest = tracker.latest_message or {}
    intent = (latest.get("intent") or {}).get("name")
    text = str(latest.get("text") or "").strip()
    mappings = (domain.get("slots", {}).get(slot) or {}).get("mappings") or []
    left_out = {name for mapping in mappings for name in mapping.get("not_intent") or []}
    if intent not in left_out - COMMANDS or is_tap(text) or is_cancel(text) or is_question(text):
        return {}
    return {slot: text}


def record_helpful_tap(dispatcher: CollectingDispatcher, tracker: Tracker) -> bool:
    """A tap on "did this help?", wherever the patron is (in a form too): recorded with the topic of the
    answer it was under, and answered. False when the latest message is no such tap."""
    value = tapped(tracker, "helpful")
    if value is None:
        return False
    helpful, faq = helpful_tap(value)
    answer = faq or tracker.get_slot("last_faq")
    topic = faq_topic(answer)
    same_answer = answer == tracker.get_slot("helpful_about")

    def record(session: Session) -> int:
        patron_id = patron_id_for(session, tracker)
        row = record_helpful(
            session=session,
            patron_id=patron_id,
            helpful=helpful,
            topic=topic,
            same_answer=same_answer,
            rasa_sender_id=tracker.sender_id,
        )
        return row.id

    if (
        with_crm_once(record, tracker=tracker, action="record_helpful", doing="record a did-this-help answer")
        is None
    ):
        dispatcher.utter_message(response="utter_action_unavailable")
    else:
        dispatcher.utter_message(response="utter_helpful_thanks" if helpful else "utter_helpful_sorry")
    return True


def helpful_about(tracker: Tracker) -> dict[str, Any]:
    """The slot that remembers which answer the latest "did this help?" tap was under (a tap under
    another answer is a new row)."""
    value = tapped(tracker, "helpful")
    if value is None:
        return {}
    return {"helpful_about": helpful_tap(value)[1] or tracker.get_slot("last_faq")}


class ActionRecordHelpful(Action):  # type: ignore[misc]
    """One tap on "did this help?" after an answer: recorded with the answer's topic."""

    def name(self) -> str:
        return "action_record_helpful"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        record_helpful_tap(dispatcher, tracker)
        return [SlotSet(name, value) for name, value in helpful_about(tracker).items()]


class ActionStartFeedback(Action):  # type: ignore[misc]
    """Before the feedback form: a rating just given, corrected ("不对，改成3分", "actually 3") or tapped
    again, is changed rather than given a second time; otherwise the form starts."""

    def name(self) -> str:
        return "action_start_feedback"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        text = latest_text(tracker)
        tap = tapped(tracker, "csat")
        wanted = parse_csat(tap) if tap is not None else (None if is_tap(text) else rating_correction(text))
        if wanted is None:
            return []

        def change(session: Session) -> tuple[int, int] | None:
            patron_id = patron_id_for(session, tracker)
            row = latest_rating(session=session, patron_id=patron_id)
            if row is None or row.csat is None:
                return None
            before = int(row.csat)
            row.csat = wanted
            if wanted <= LOW_CSAT < before:
                open_escalation_for(
                    session=session, tracker=tracker, patron_id=patron_id, reason="low_rating"
                )
            return before, wanted

        changed = with_crm(change, doing="change a rating")
        if changed is None:
            return []  # no rating given just before: this one starts the form
        before, after = changed
        if before == after:
            dispatcher.utter_message(response="utter_feedback_thanks")
        else:
            dispatcher.utter_message(response="utter_rating_changed", csat=str(after))
        return [FollowupAction("action_listen")]


def _tap_at_comment(dispatcher: CollectingDispatcher, tracker: Tracker) -> dict[str, Any] | None:
    """A button tapped while the comment is asked: 👍 under an answer is recorded, the same rating again
    changes nothing, another rating changes it; each time the comment is asked again."""
    if record_helpful_tap(dispatcher, tracker):
        return {"comment": None, **helpful_about(tracker)}
    tap = tapped(tracker, "csat")
    if tap is None:
        return None
    rating = parse_csat(tap)
    if rating is None or str(rating) == str(tracker.get_slot("csat")):
        return {"comment": None}
    dispatcher.utter_message(response="utter_rating_changed", csat=str(rating))
    return {"csat": str(rating), "comment": None}


class ValidateFeedbackForm(FormValidationAction):  # type: ignore[misc]
    """Checks the rating (1-5), the optional comment and, where the library asks it, NPS (0-10)."""

    def name(self) -> str:
        return "validate_feedback_form"

    async def required_slots(
        self,
        domain_slots: list[str],
        dispatcher: CollectingDispatcher,
        tracker: Tracker,
        domain: DomainDict,
    ) -> list[str]:
        facts = library_facts()
        if facts is not None and facts.feedback_nps:
            return list(domain_slots)
        return [slot for slot in domain_slots if slot != "nps"]

    async def next_requested_slot(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any] | None:
        """As rasa-sdk asks the next missing slot (required_slots is overridden here), except when the
        patron left before rating: validate_csat ended the form, and asking for the rating again would
        undo that."""
        if (
            tracker.slots.get("csat") is None
            and tracker.slots.get(REQUESTED_SLOT) is None
            and is_cancel(latest_text(tracker))
        ):
            return None
        event: dict[str, Any] | None = await super().next_requested_slot(dispatcher, tracker, domain)
        return event

    def extract_csat(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        """A rating given with the message that starts the form ("I'd like to give feedback: 5 stars",
        "我要给图书馆打5分", or a "5" typed after goodbye): the answer, not a question to ask again."""
        text = latest_text(tracker)
        if is_tap(text):
            return {}
        if tracker.get_slot(REQUESTED_SLOT) == "csat":
            # A rating answers the rating question whatever the classifier took it for ("很不满意" is
            # not a complaint here).
            return {"csat": text} if parse_csat(text) is not None else {}
        if tracker.get_slot(REQUESTED_SLOT) is not None:
            return {}
        rating = rating_in_request(text)
        return {"csat": str(rating)} if rating is not None else {}

    def validate_csat(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if record_helpful_tap(dispatcher, tracker):  # 👍 under an answer, tapped while the rating is asked
            return {"csat": None, **helpful_about(tracker)}
        starting = tracker.get_slot(REQUESTED_SLOT) is None
        opening = rating_in_request(latest_text(tracker)) if starting else None
        if str(value) == str(opening):
            return {"csat": str(value)}
        if not _given_now(tracker, "csat", value):
            return {"csat": None}
        if is_cancel(str(value or "")):
            return {"csat": None, **LEAVE_FORM}
        rating = parse_csat(str(value or ""))
        if rating is None:
            dispatcher.utter_message(response="utter_invalid_csat")
            return {"csat": None}
        return {"csat": str(rating)}

    def extract_comment(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return told_not_asked(tracker, domain, "comment")

    def validate_comment(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not _given_now(tracker, "comment", value):
            return {"comment": None}
        text = str(value or "").strip()
        tapped_meanwhile = _tap_at_comment(dispatcher, tracker)
        if tapped_meanwhile is not None:
            return tapped_meanwhile
        if not text or is_cancel(text) or is_tap(text):  # is_cancel: skip words too
            return {"comment": SKIPPED}
        corrected = rating_correction(text)
        if corrected is not None:
            # "actually 3", "改成3分": the patron changes the rating; the comment is asked again.
            dispatcher.utter_message(response="utter_rating_changed", csat=str(corrected))
            return {"csat": str(corrected), "comment": None}
        return {"comment": text[:MAX_TEXT]}

    def validate_nps(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        if not _given_now(tracker, "nps", value):
            return {"nps": None}
        text = str(value or "")
        if is_cancel(text):  # skip words too
            return {"nps": SKIPPED}
        score = parse_nps(text)
        if score is None:
            dispatcher.utter_message(response="utter_invalid_nps")
            return {"nps": None}
        return {"nps": str(score)}


class ActionSubmitFeedback(Action):  # type: ignore[misc]
    """Records the completed form; a low rating also asks a librarian to follow the patron up."""

    def name(self) -> str:
        return "action_submit_feedback"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        csat = parse_csat(str(tracker.get_slot("csat") or ""))
        nps_slot = str(tracker.get_slot("nps") or "")
        nps = parse_nps(nps_slot) if nps_slot and nps_slot != SKIPPED else None
        comment = tracker.get_slot("comment")
        comment = None if comment in (None, SKIPPED) else str(comment)
        low = csat is not None and csat <= LOW_CSAT
        topic = faq_topic(tracker.get_slot("last_faq"))
        reset = [SlotSet("csat", None), SlotSet("comment", None), SlotSet("nps", None)]
        if csat is None:
            # The patron left the form before rating: nothing to record.
            dispatcher.utter_message(response="utter_feedback_cancelled")
            return reset

        def record(session: Session) -> int:
            patron_id = patron_id_for(session, tracker)
            row = record_feedback(
                session=session,
                patron_id=patron_id,
                csat=csat,
                nps=nps,
                comment=comment,
                topic=topic,
                rasa_sender_id=tracker.sender_id,
            )
            if low:
                open_escalation_for(
                    session=session, tracker=tracker, patron_id=patron_id, reason="low_rating"
                )
            return row.id

        if with_crm_once(record, tracker=tracker, action=self.name(), doing="record feedback") is None:
            dispatcher.utter_message(response="utter_action_unavailable")
            return reset
        if low:
            dispatcher.utter_message(response="utter_feedback_low")
            dispatcher.utter_message(text=when_staff_answer(patron_language(tracker)))
        else:
            dispatcher.utter_message(response="utter_feedback_thanks")
        return reset


class ActionAskCsat(Action):  # type: ignore[misc]
    """The feedback form's rating question, with a button for each rating."""

    def name(self) -> str:
        return "action_ask_csat"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(response="utter_ask_csat", buttons=csat_buttons())
        return []


class ActionGoodbye(Action):  # type: ignore[misc]
    """Goodbye, with one tap to rate the conversation."""

    def name(self) -> str:
        return "action_goodbye"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        dispatcher.utter_message(response="utter_goodbye_rate", buttons=csat_buttons())
        return []
