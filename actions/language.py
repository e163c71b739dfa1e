"""The patron's language as an action sees it: the language slot, else the message itself."""

from __future__ import annotations

from rasa_sdk import Tracker

from actions.buttons import is_tap
from bot.language import Language, detect_language

DEFAULT_LANGUAGE: Language = "zh"


def patron_language(tracker: Tracker) -> Language:
    """The language to answer in: the latest typed message's, else the conversation's, else Chinese."""
    text = (tracker.latest_message or {}).get("text") or ""
    # A button's payload ("/give_feedback{...}") says nothing about the patron's language.
    detected = None if is_tap(text) else detect_language(text)
    if detected is not None:
        return detected
    slot = tracker.get_slot("language")
    return slot if slot in ("zh", "en") else DEFAULT_LANGUAGE
