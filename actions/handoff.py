"""Handing a conversation to a librarian: on request, after two misunderstandings, and back again."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import FollowupAction, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict
from sqlalchemy.orm import Session

from actions.crm import library_facts, patron_id_for, tracker_key, with_crm
from actions.language import patron_language
from bot.channels.quiet import QUIET
from bot.crm.models import Escalation
from bot.engagement.escalations import LIVE_REASONS, open_escalation, open_for_sender
from bot.knowledge.staffed_hours import handoff_reply, staffed_now
from bot.language import Language

log = logging.getLogger(__name__)

FALLBACK_INTENT = "nlu_fallback"


def open_escalation_for(*, session: Session, tracker: Tracker, patron_id: int, reason: str) -> int:
    """Open (or join) the escalation for this conversation; its id."""
    escalation = open_escalation(
        session=session,
        patron_id=patron_id,
        channel=tracker_key(tracker).channel,
        rasa_sender_id=tracker.sender_id,
        reason=reason,
        priority="high" if reason == "complaint" else "normal",
        facts=library_facts(),
    )
    return int(escalation.id)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def when_staff_answer(language: Language) -> str:
    """When a librarian will answer: shortly during staffed hours, else when they are next on duty."""
    facts = library_facts()
    if facts is None:
        return ""
    return handoff_reply(facts=facts, language=language, at=_now())


def _staffed() -> bool:
    facts = library_facts()
    return facts is not None and staffed_now(facts=facts, at=_now())


def _hand_over(
    dispatcher: CollectingDispatcher, tracker: Tracker, *, reason: str, response: str
) -> list[dict[str, Any]]:
    def open_it(session: Session) -> int:
        return open_escalation_for(
            session=session, tracker=tracker, patron_id=patron_id_for(session, tracker), reason=reason
        )

    if with_crm(open_it, doing="open an escalation") is None:
        dispatcher.utter_message(response="utter_action_unavailable")
        return []
    dispatcher.utter_message(response=response)
    dispatcher.utter_message(text=when_staff_answer(patron_language(tracker)))
    # During staffed hours a librarian takes the conversation and the bot steps back; outside them
    # the bot keeps answering what it can until the librarian replies.
    return [SlotSet("handoff_active", True)] if _staffed() else []


class ActionHandoff(Action):  # type: ignore[misc]
    """ "Talk to a librarian": opens an escalation with this conversation attached."""

    def name(self) -> str:
        return "action_handoff"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        return _hand_over(dispatcher, tracker, reason="requested", response="utter_handoff_opened")


def _fallbacks_in_a_row(tracker: Tracker) -> int:
    """The patron's messages in a row, this one included, that the bot said it did not understand.
    A message a form took as its answer (a comment the classifier could not place) was understood,
    whatever the classifier made of it, and ends the run."""
    count = 0
    answered_by: str | None = None  # the first action after the user event being looked at
    latest = True
    for event in reversed(tracker.events):
        kind = event.get("event")
        if kind == "action" and event.get("name") != "action_listen":
            answered_by = event.get("name")
            continue
        if kind != "user":
            continue
        intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
        if intent != FALLBACK_INTENT or (not latest and answered_by != "action_fallback"):
            break
        count += 1
        latest, answered_by = False, None
    return count


class ActionFallback(Action):  # type: ignore[misc]
    """Did not understand: ask again; the second time in a row, ask a librarian to help."""

    def name(self) -> str:
        return "action_fallback"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        # Every second misunderstanding in a row asks a librarian (the third is asked again, the fourth
        # joins the escalation again), so one handoff is not repeated at each message after it.
        if _fallbacks_in_a_row(tracker) % 2 == 1:
            dispatcher.utter_message(response="utter_default")
            return []
        return _hand_over(dispatcher, tracker, reason="fallback", response="utter_fallback_handoff")


class ActionStaffRelay(Action):  # type: ignore[misc]
    """While the conversation is with staff: acknowledge until a librarian has claimed or answered it, then
    stay silent (the librarian answers); resume if they have closed it."""

    def name(self) -> str:
        return "action_staff_relay"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        def state(session: Session) -> str:
            escalation = open_for_sender(session=session, rasa_sender_id=tracker.sender_id)
            return "resolved" if escalation is None else str(escalation.status)

        now = with_crm(state, doing="check an escalation")
        if now == "resolved":
            # Resolved between action_check_handoff and now: the bot is back.
            dispatcher.utter_message(response="utter_handoff_resumed")
            return [SlotSet("handoff_active", False), FollowupAction("action_listen")]
        if now != "assigned":
            # Nobody has taken it yet (or the CRM cannot tell): the patron hears their words are passed on.
            dispatcher.utter_message(response="utter_handoff_ack")
        else:
            # A librarian has it: the bot stays silent (the librarian answers). The marker tells the
            # channel that this silence is meant, not a failed turn to apologise for.
            dispatcher.utter_message(json_message=QUIET)
        return []


def with_staff(escalation: Escalation | None, *, staffed: bool) -> bool:
    """Whether a librarian has the conversation: a live escalation, in staffed hours or answered."""
    if escalation is None or escalation.reason not in LIVE_REASONS:
        return False
    return staffed or escalation.status == "assigned"


class ActionCheckHandoff(Action):  # type: ignore[misc]
    """Run by Rasa at every patron message (the slot's custom mapping): is a librarian on it?"""

    def name(self) -> str:
        return "action_check_handoff"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        staffed = _staffed()

        def check(session: Session) -> bool:
            escalation = open_for_sender(session=session, rasa_sender_id=tracker.sender_id)
            return with_staff(escalation, staffed=staffed)

        active = with_crm(check, doing="check for a librarian")
        if active is None or active == bool(tracker.get_slot("handoff_active")):
            return []
        return [SlotSet("handoff_active", active)]


class ActionCancel(Action):  # type: ignore[misc]
    """ "Never mind" outside a form: all right; but while a librarian has the conversation, it does not
    take the conversation back from them ("算了" was answered as if the bot had it again)."""

    def name(self) -> str:
        return "action_cancel"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        if tracker.get_slot("handoff_active"):
            dispatcher.utter_message(response="utter_handoff_ack")
        else:
            dispatcher.utter_message(response="utter_cancel_ok")
        return []
