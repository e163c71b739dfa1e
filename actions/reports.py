"""Complaints and suggestions: taken down with their details, recorded with their topic, a complaint
handed to a librarian."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.buttons import is_tap
from actions.crm import patron_id_for, with_crm_once
from actions.feedback import (
    LEAVE_FORM,
    MAX_TEXT,
    helpful_about,
    latest_text,
    record_helpful_tap,
    told_not_asked,
)
from actions.handoff import open_escalation_for, when_staff_answer
from actions.knowledge_base import knowledge_service
from actions.language import patron_language
from bot.engagement.feedback import add_report_detail, has_details, is_cancel, record_report, report_kind
from bot.knowledge.entries import KnowledgeError
from bot.thread import PARSE_KEY, REPORT_SLOT


class ActionStartReport(Action):  # type: ignore[misc]
    """A complaint or suggestion: keep what the patron said if it has details, else the form asks."""

    def name(self) -> str:
        return "action_start_report"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        kind = "complaint" if intent == "complaint" else "suggestion"
        text = latest_text(tracker).strip()
        details = text[:MAX_TEXT] if has_details(text) and not is_tap(text) else None
        return [SlotSet("report_kind", kind), SlotSet("report_details", details)]


def _topic_of(text: str, language: str) -> str | None:
    """The knowledge-base topic a complaint or suggestion is about, when retrieval can tell."""
    try:
        decision = knowledge_service().retriever().decide(text, lang=language)
    except KnowledgeError:
        return None
    best = decision.best
    return best.entry.topic if best is not None and decision.kind != "unknown" else None


class ValidateReportForm(FormValidationAction):  # type: ignore[misc]
    """What a complaint or suggestion is about, even when it names a service ("the renewal page never
    loads"); "never mind" or "算了" leaves the form."""

    def name(self) -> str:
        return "validate_report_form"

    def extract_report_details(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        told = told_not_asked(tracker, domain, "report_details")
        if told and not has_details(told["report_details"]):
            # "actually I'd rather just give feedback", "thanks": nothing about the report, so the
            # rule for what the classifier read acts (a rating instead, leaving the form)
            return {}
        return told

    def validate_report_details(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "").strip()
        if is_cancel(text):
            return {"report_details": None, **LEAVE_FORM}
        if record_helpful_tap(dispatcher, tracker):  # 👍 under an answer: recorded, then asked again
            return {"report_details": None, **helpful_about(tracker)}
        if is_tap(text):  # a button tapped meanwhile says nothing about the complaint: ask again
            return {"report_details": None}
        if not has_details(text):  # "谢谢", "hello?": not what it is about, so nothing is recorded
            return {"report_details": None}
        return {"report_details": text[:MAX_TEXT]}


class ActionSubmitReport(Action):  # type: ignore[misc]
    """Records the complaint or suggestion with its topic; a complaint opens an escalation."""

    def name(self) -> str:
        return "action_submit_report"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        complaint = tracker.get_slot("report_kind") != "suggestion"
        details = str(tracker.get_slot("report_details") or "").strip()[:MAX_TEXT]
        if not details:
            # The patron left the form instead of saying what it is about.
            dispatcher.utter_message(response="utter_report_cancelled")
            return [SlotSet("report_details", None)]
        language = patron_language(tracker)
        topic = _topic_of(details, language)

        def record(session: Session) -> int:
            patron_id = patron_id_for(session, tracker)
            row = record_report(
                session=session,
                patron_id=patron_id,
                kind=report_kind(complaint=complaint, text=details),
                text=details,
                topic=topic,
                rasa_sender_id=tracker.sender_id,
            )
            if complaint:
                open_escalation_for(session=session, tracker=tracker, patron_id=patron_id, reason="complaint")
            return row.id

        number = with_crm_once(
            record, tracker=tracker, action=self.name(), doing="record a complaint or suggestion"
        )
        reset = [SlotSet("report_details", None)]
        if number is None:
            dispatcher.utter_message(response="utter_action_unavailable")
            return reset
        when = when_staff_answer(language) if complaint else ""
        dispatcher.utter_message(response="utter_report_recorded", number=str(number), when=when)
        # The next message may add to it (a place, a time, a title): nlu/context.py reads this slot.
        return [*reset, SlotSet(REPORT_SLOT, str(number))]


class ActionAddReportDetail(Action):  # type: ignore[misc]
    """A detail sent right after a complaint or suggestion was recorded ("三楼东边") is added to it, and
    the patron told so; the librarian reads it with the report and its escalation."""

    def name(self) -> str:
        return "action_add_report_detail"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        latest = tracker.latest_message or {}
        number = str((latest.get(PARSE_KEY) or {}).get("report") or tracker.get_slot(REPORT_SLOT) or "")
        text = latest_text(tracker).strip()[:MAX_TEXT]
        if not number.isdigit() or not text:
            dispatcher.utter_message(response="utter_default")
            return []

        def add(session: Session) -> int:
            patron_id = patron_id_for(session, tracker)
            detail = add_report_detail(session=session, patron_id=patron_id, report_id=int(number), text=text)
            return int(detail is not None)

        added = with_crm_once(
            add, tracker=tracker, action=self.name(), doing="add to a complaint or suggestion"
        )
        if added is None:
            dispatcher.utter_message(response="utter_action_unavailable")
            return []
        if not added:
            dispatcher.utter_message(response="utter_default")
            return [SlotSet(REPORT_SLOT, None)]
        dispatcher.utter_message(response="utter_detail_added", number=number)
        return [SlotSet(REPORT_SLOT, number)]
