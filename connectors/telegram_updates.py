"""Telegram updates read strictly: a webhook body checked, an update turned into what the bot does."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.language import Language

# The largest update body accepted. An update holds one message of at most 4,096 characters (each up to 12
# bytes as escaped JSON) with its entities and the sender's and chat's details: far below this.
MAX_BODY_BYTES = 256 * 1024
# The longest text handed to Rasa (Telegram's own limit for a message).
MAX_TEXT_CHARS = 4096
# A deep-link payload, as Telegram allows it: https://core.telegram.org/bots/features#deep-linking
START_PAYLOAD = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Telegram's commands: "/start", "/help@LibraryBot", "/stop", with what follows after a space.
COMMAND = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?(?:\s+(.*))?", re.DOTALL)
# What each command is for Rasa (an intent payload; the domain has no help intent: the greeting says what
# the bot can answer).
COMMAND_INTENTS = {"start": "greet", "help": "greet", "stop": "unsubscribe"}
# A message with one of these and no text is something the bot cannot read: it says so politely.
MEDIA_KEYS = (
    "photo", "sticker", "voice", "audio", "video", "video_note", "animation", "document", "location",
    "venue", "contact", "poll", "dice", "game", "story", "paid_media",
)  # fmt: skip
# Telegram's limit for a button's callback_data; a longer payload is sent as a key that is mapped back.
MAX_CALLBACK_BYTES = 64
CALLBACK_KEY_PREFIX = "#cb:"

Kind = Literal["turn", "media", "kicked", "ignored"]


class BadUpdateError(ValueError):
    """The webhook body is not a Telegram update; the message says what was wrong."""

    status = 400


@dataclass(frozen=True)
class Incoming:
    """What one update asks of the bot: a Rasa turn, a polite "text only" answer, a patron who blocked
    the bot, or nothing (ignored by rule)."""

    kind: Kind
    chat_id: int | None = None
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    language: Language | None = None
    command: str | None = None
    callback_query_id: str | None = None
    callback_data: str | None = None

    @property
    def sender(self) -> str | None:
        """The Rasa sender id, `telegram:<chat_id>`."""
        return None if self.chat_id is None else f"telegram:{self.chat_id}"


IGNORED = Incoming(kind="ignored")


def parse_body(body: bytes) -> dict[str, Any]:
    """Check a webhook body: UTF-8 JSON, an object with an integer `update_id`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadUpdateError("the body must be UTF-8 JSON (a Telegram update)") from None
    try:
        update = json.loads(text)
    except ValueError:
        raise BadUpdateError("the body must be JSON (a Telegram update)") from None
    if not isinstance(update, dict):
        raise BadUpdateError("the body must be a JSON object (a Telegram update)")
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool) or not 0 <= update_id < 2**63:
        raise BadUpdateError("'update_id' is required: a non-negative integer")
    return update


def language_of(user: object) -> Language | None:
    """The patron's language from Telegram's `language_code` (their app's language): zh* is Chinese,
    any other English; None when Telegram gives none."""
    code = user.get("language_code") if isinstance(user, dict) else None
    if not isinstance(code, str) or not code.strip():
        return None
    return "zh" if code.strip().lower().startswith("zh") else "en"


def _private_chat_id(chat: object) -> int | None:
    if not isinstance(chat, dict) or chat.get("type") != "private":
        return None
    chat_id = chat.get("id")
    if isinstance(chat_id, int) and not isinstance(chat_id, bool) and chat_id > 0:
        return chat_id
    return None


def read_update(update: dict[str, Any]) -> Incoming:
    """What the bot does with an update (never raises for any JSON object)."""
    if isinstance(update.get("message"), dict):
        return _read_message(update["message"])
    if isinstance(update.get("callback_query"), dict):
        return _read_callback(update["callback_query"])
    if isinstance(update.get("my_chat_member"), dict):
        return _read_member(update["my_chat_member"])
    # edited messages, channel posts, inline queries, reactions, polls, unknown kinds: ignored by rule.
    return IGNORED


def _read_message(message: dict[str, Any]) -> Incoming:
    chat_id = _private_chat_id(message.get("chat"))
    if chat_id is None:  # groups, supergroups, channels: the bot is for private chats
        return IGNORED
    language = language_of(message.get("from"))
    metadata: dict[str, Any] = {"language": language} if language else {}
    text = message.get("text")
    if isinstance(text, str):
        text = text.replace("\x00", "")[:MAX_TEXT_CHARS]
        if not text.strip():
            return IGNORED
        return _read_text(chat_id, text, metadata, language)
    if any(key in message for key in MEDIA_KEYS):
        return Incoming(kind="media", chat_id=chat_id, metadata=metadata, language=language)
    return IGNORED  # service messages (pinned, joined, ...): nothing to answer


def _read_text(chat_id: int, text: str, metadata: dict[str, Any], language: Language | None) -> Incoming:
    found = COMMAND.fullmatch(text.strip())
    if found is None:
        # Rasa reads a text starting with "/" as an intent: a patron's "/hours?" is read as words.
        words = text.lstrip().lstrip("/").strip() if text.lstrip().startswith("/") else text
        if not words:
            return IGNORED
        return Incoming(kind="turn", chat_id=chat_id, text=words, metadata=metadata, language=language)
    command, argument = found.group(1).lower(), (found.group(2) or "").strip()
    intent = COMMAND_INTENTS.get(command)
    if intent is None:
        words = f"{command} {argument}".strip().replace("_", " ")
        return Incoming(kind="turn", chat_id=chat_id, text=words, metadata=metadata, language=language)
    if command == "start" and START_PAYLOAD.fullmatch(argument):
        metadata = {**metadata, "source": argument}
    return Incoming(
        kind="turn", chat_id=chat_id, text=f"/{intent}", metadata=metadata, language=language, command=command
    )


def _read_callback(query: dict[str, Any]) -> Incoming:
    message = query.get("message")
    chat_id = _private_chat_id(message.get("chat")) if isinstance(message, dict) else None
    query_id, data = query.get("id"), query.get("data")
    if chat_id is None or not isinstance(query_id, str) or not isinstance(data, str) or not data:
        return IGNORED
    language = language_of(query.get("from"))
    metadata: dict[str, Any] = {"language": language} if language else {}
    title = button_title(message, data) if isinstance(message, dict) else None
    if title:
        metadata["typed"] = title
    return Incoming(
        kind="turn",
        chat_id=chat_id,
        text=data,
        metadata=metadata,
        language=language,
        callback_query_id=query_id,
        callback_data=data,
    )


def button_title(message: dict[str, Any], data: str) -> str | None:
    """The title of the inline button whose callback_data is `data`, in the message it was under."""
    markup = message.get("reply_markup")
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    for row in rows if isinstance(rows, list) else []:
        for button in row if isinstance(row, list) else []:
            if isinstance(button, dict) and button.get("callback_data") == data:
                title = button.get("text")
                return title[:200] if isinstance(title, str) else None
    return None


def _read_member(member: dict[str, Any]) -> Incoming:
    chat_id = _private_chat_id(member.get("chat"))
    new = member.get("new_chat_member")
    if chat_id is not None and isinstance(new, dict) and new.get("status") == "kicked":
        return Incoming(kind="kicked", chat_id=chat_id)
    return IGNORED


def callback_data(payload: str) -> str:
    """A button payload as Telegram's callback_data: itself when it fits in 64 bytes, else a key that
    `payload_of_key` maps back from the buttons the bot sent."""
    if len(payload.encode("utf-8")) <= MAX_CALLBACK_BYTES and not payload.startswith(CALLBACK_KEY_PREFIX):
        return payload
    return CALLBACK_KEY_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def is_callback_key(data: str) -> bool:
    return data.startswith(CALLBACK_KEY_PREFIX)


def payload_of_key(data: str, payloads: list[str]) -> str | None:
    """The payload among those the bot offered whose callback_data is `data`."""
    for payload in payloads:
        if callback_data(payload) == data:
            return payload
    return None
