"""What every channel says when it cannot answer: a failed turn, or a message that is not text."""

from __future__ import annotations

# Said when the bot produced no reply (the action server is down, say) or Rasa failed; by then the
# message is in the tracker store, so it is recorded.
APOLOGY = {
    "zh": "抱歉，我暂时无法回答，您的消息已记录。请稍后再试。",
    "en": "Sorry, I can't answer that right now. Your message has been recorded; please try again shortly.",
}
# Said to a photo, a sticker, a voice message without recognition, a location...
TEXT_ONLY = {
    "zh": "抱歉，我目前只能读懂文字消息，请用文字提问。",
    "en": "Sorry, I can only read text messages for now: please type your question.",
}


def text_only(language: str | None) -> str:
    """The text-only answer in the patron's language, or in both when it is not known."""
    return TEXT_ONLY[language] if language in TEXT_ONLY else f"{TEXT_ONLY['zh']}\n{TEXT_ONLY['en']}"
