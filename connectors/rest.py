"""The REST channel: POST /webhooks/rest/webhook, with input checked and conversations kept per channel.

Messages that no Rasa turn produced (staff replies) wait in the CRM's outbox: they come before the
bot's replies in the next webhook response, or from GET /webhooks/rest/outbox?sender=ID for a widget.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from sqlalchemy.engine import Engine

from bot.crm.database import make_engine, session_scope, tune_every_sqlite_connection
from bot.language import detect_language
from bot.outbound.outbox import take_pending
from bot.pseudonyms import fingerprint
from bot.settings import get_settings
from rasa_server.speedups import install as install_rasa_speedups

log = logging.getLogger(__name__)

# Rasa loads this module before it opens its tracker store and event broker.
tune_every_sqlite_connection()
install_rasa_speedups()

MAX_SENDER_CHARS = 200

# Said when the bot produced no reply (the action server is down, say) or Rasa failed; by then the
# message is in the tracker store, so it is recorded.
APOLOGY = {
    "zh": "抱歉，我暂时无法回答，您的消息已记录。请稍后再试。",
    "en": "Sorry, I can't answer that right now. Your message has been recorded; please try again shortly.",
}


class BadRequestError(ValueError):
    """The request cannot be handled as it is; the message tells the client what to fix."""


@dataclass(frozen=True)
class PatronMessage:
    """A checked patron message from the REST channel."""

    sender: str
    text: str
    metadata: dict[str, Any]


def clean_text(text: str) -> str:
    """The text without NUL characters, which no database stores; everything else is kept as sent."""
    return text.replace("\x00", "")


def parse_sender(sender: object) -> str:
    """Check a sender id (the patron as the client knows them): a non-empty string, or a number."""
    if isinstance(sender, int) and not isinstance(sender, bool):
        sender = str(sender)
    if not isinstance(sender, str) or not sender.strip():
        raise BadRequestError("'sender' is required: a non-empty string that identifies the patron")
    if len(sender) > MAX_SENDER_CHARS:
        raise BadRequestError(f"'sender' is longer than {MAX_SENDER_CHARS} characters")
    return clean_text(sender.strip())


def parse_request(body: bytes, *, max_chars: int) -> PatronMessage:
    """Check a webhook body: a JSON object with a non-empty ``sender`` and ``message``."""
    try:
        payload = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        raise BadRequestError('the body must be JSON: {"sender": "...", "message": "..."}') from None
    if not isinstance(payload, dict):
        raise BadRequestError("the body must be a JSON object with 'sender' and 'message'")
    sender = parse_sender(payload.get("sender"))
    text = payload.get("message")
    if not isinstance(text, str):
        raise BadRequestError("'message' is required: the patron's text as a string")
    text = clean_text(text)
    if not text.strip():
        raise BadRequestError("'message' is empty: there is nothing to answer")
    if len(text) > max_chars:
        raise BadRequestError(f"'message' is longer than {max_chars} characters")
    metadata = payload.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise BadRequestError("'metadata', when given, must be a JSON object")
    return PatronMessage(sender=sender, text=text, metadata=metadata)


@functools.cache
def crm_engine(url: str) -> Engine:
    """The CRM engine of this Rasa process, made on first use (statement parameters kept out of errors)."""
    return make_engine(url, hide_parameters=True)


def pending_replies(*, engine: Engine, conversation_id: str, recipient_id: str) -> list[dict[str, str]]:
    """The conversation's waiting outbox messages as replies, marked delivered once committed."""
    with session_scope(engine) as session:
        messages = take_pending(session=session, channel=RestInput.name(), recipient=conversation_id)
        return [{"recipient_id": recipient_id, "text": str(message.text)} for message in messages]


async def _outbox_replies(conversation_id: str, recipient_id: str) -> list[dict[str, str]] | None:
    """pending_replies off the event loop; None (logged without patron data) if the CRM fails."""
    engine = crm_engine(get_settings().crm_database_url)
    try:
        return await asyncio.to_thread(
            pending_replies, engine=engine, conversation_id=conversation_id, recipient_id=recipient_id
        )
    except Exception as error:
        log.error(
            "rest: the outbox of %s could not be read (%s)",
            fingerprint(conversation_id),
            type(error).__name__,
        )
        return None


class RestInput(InputChannel):  # type: ignore[misc]
    """Rasa's REST channel made strict: bad requests get a 400 with the reason, never a 500.

    The Rasa conversation id is ``rest:<sender>``, so the same id on another channel is another
    conversation; replies carry the sender id as the client sent it.
    """

    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("patronbot_rest_webhook", __name__)
        max_chars = get_settings().max_message_chars

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                message = parse_request(request.body, max_chars=max_chars)
            except BadRequestError as error:
                return response.json({"error": str(error)}, status=400)
            conversation_id = f"{self.name()}:{message.sender}"
            collector = CollectingOutputChannel()
            try:
                await on_new_message(
                    UserMessage(
                        message.text,
                        collector,
                        conversation_id,
                        input_channel=self.name(),
                        metadata=message.metadata,
                    )
                )
            except Exception:
                # Logged without the patron's words; the patron gets an apology, not a 500.
                log.exception("rest: handling a message from %s failed", fingerprint(conversation_id))
            if not collector.messages:
                language = detect_language(message.text) or "zh"
                collector.messages.append({"recipient_id": conversation_id, "text": APOLOGY[language]})
            for reply in collector.messages:
                reply["recipient_id"] = message.sender
            # Staff replies waiting for this conversation come first: they were written before these.
            waiting = await _outbox_replies(conversation_id, message.sender) or []
            return response.json([*waiting, *collector.messages])

        @webhook.route("/outbox", methods=["GET"])
        async def outbox(request: Request) -> HTTPResponse:
            try:
                sender = parse_sender(request.args.get("sender"))
            except BadRequestError as error:
                return response.json({"error": str(error)}, status=400)
            waiting = await _outbox_replies(f"{self.name()}:{sender}", sender)
            if waiting is None:
                return response.json(
                    {"error": "the outbox cannot be read right now; try again shortly"}, status=503
                )
            return response.json(waiting)

        return webhook
