"""'Delete my data' from the chat: an explicit confirmation, then erasure by the ingester."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from bot.engagement.feedback import is_affirmation

# What confirms; anything else cancels, so nothing is erased by a misunderstanding.
# The request repeated counts in either language ("delete my data" as much as "删除我的数据").
CONFIRMATIONS = {"delete", "yes delete", "yes, delete", "delete my data", "confirm", "确认删除", "删除",
                 "确认", "删除我的数据", "删除数据", "确定删除", "是的，删除", "是，删除"}  # fmt: skip


def is_confirmation(text: str) -> bool:
    return " ".join(text.strip().lower().rstrip("!.。！").split()) in CONFIRMATIONS


class ValidateDeleteForm(FormValidationAction):  # type: ignore[misc]
    """Turns the patron's answer into yes or no."""

    def name(self) -> str:
        return "validate_delete_form"

    def validate_delete_confirmation(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "")
        if is_affirmation(text):  # a bare "yes" confirms nothing this serious: the question is asked again
            return {"delete_confirmation": None}
        return {"delete_confirmation": "yes" if is_confirmation(text) else "no"}


class ActionEraseMyData(Action):  # type: ignore[misc]
    """Confirmed: say that the patron's data will be erased. That reply (`utter_delete_scheduled`) is the
    request: the ingester erases the patron from the CRM and Rasa's stores once this turn is stored, so
    the request and this reply are erased too. A reply is said once, for the turn that asked; a slot
    would not do, since Rasa copies every slot event into each new session of the conversation."""

    def name(self) -> str:
        return "action_erase_my_data"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[dict[str, Any]]:
        if tracker.get_slot("delete_confirmation") != "yes":
            dispatcher.utter_message(response="utter_delete_cancelled")
            return [SlotSet("delete_confirmation", None)]
        dispatcher.utter_message(response="utter_delete_scheduled")
        return [SlotSet("delete_confirmation", None)]
