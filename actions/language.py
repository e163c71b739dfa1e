"""The patron's language as an action sees it: the language slot, else the message itself."""

from __future__ import annotations

from rasa_sdk import Tracker

from actions.buttons import is_tap
from bot.language import Language, detect_language

DEFAULT_LANGUAGE: Language = "zh"


def patron_language(tracker: Tracker) -> Language:
    """The language to answer in: the latest typed message's, else the conversation's, else the
    language of the patron's app (message metadata `language`), else Chinese."""
    text = (tracker.latest_message or {}).get("text") or ""
    # A button's payload ("/give_feedback{...}") says nothing about the patron's language.
    detected = None if is_tap(text) else detect_language(text)
    if detected is not None:
        return detected
    slot = tracker.get_slot("language")
    if slot in ("zh", "en"):
        return slot  # type: ignore[no-any-return]
    # The patron's app language, as a channel tells it (Telegram's language_code): the first guess.
    told = ((tracker.latest_message or {}).get("metadata") or {}).get("language")
    return told if told in ("zh", "en") else DEFAULT_LANGUAGE
