"""The REST channel: POST /webhooks/rest/webhook, with input checked and conversations kept per channel.

Messages that no Rasa turn produced (staff replies) wait in the CRM's outbox: they come before the
bot's replies in the next webhook response, or from GET /webhooks/rest/outbox?sender=ID for a widget.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hmac
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

from bot.channels.access import is_loopback
from bot.channels.quiet import spoken
from bot.crm.database import make_engine, session_scope, tune_every_sqlite_connection
from bot.crm.models import utcnow
from bot.language import detect_language, is_payload
from bot.outbound.outbox import buttons_of, release, take_pending
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure, failure_stack
from bot.settings import get_settings
from connectors.replies import APOLOGY
from connectors.typed_buttons import MAX_TITLE_CHARS, offered_buttons, typed_payload
from rasa_server.model_offload import install as run_the_model_off_the_loop
from rasa_server.speedups import install as install_rasa_speedups

log = logging.getLogger(__name__)

# Rasa loads this module before it opens its tracker store and event broker.
tune_every_sqlite_connection()
install_rasa_speedups()
run_the_model_off_the_loop()

MAX_SENDER_CHARS = 200
# Client metadata goes into every user event Rasa stores (tracker store and broker): only what the
# channel uses is kept, and only so much is accepted.
MAX_METADATA_BYTES = 2048
MAX_METADATA_DEPTH = 3
KEPT_METADATA = ("source",)  # how the patron arrived (a page, a poster's QR code, a campaign)
MAX_SOURCE_CHARS = 200


class BadRequestError(ValueError):
    """The request cannot be handled as it is; the message tells the client what to fix."""

    status = 400


class TooLargeError(BadRequestError):
    """The request body is larger than any acceptable request."""

    status = 413


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
    # Checked as it will be stored: "\x00" would otherwise become the empty id every such sender shares.
    cleaned = clean_text(sender).strip() if isinstance(sender, str) else ""
    if not cleaned:
        raise BadRequestError("'sender' is required: a non-empty string that identifies the patron")
    if len(cleaned) > MAX_SENDER_CHARS:
        raise BadRequestError(f"'sender' is longer than {MAX_SENDER_CHARS} characters")
    return cleaned


def parse_request(body: bytes, *, max_chars: int) -> PatronMessage:
    """Check a webhook body: a JSON object with a non-empty ``sender`` and ``message``."""
    # The longest acceptable request, every character escaped as JSON allows (12 bytes for an emoji's
    # surrogate pair, 6 for a Chinese character): anything longer is refused before it is parsed.
    limit = 12 * (max_chars + MAX_SENDER_CHARS) + 6 * MAX_METADATA_BYTES + 4096
    if len(body or b"") > limit:
        raise TooLargeError(f"the request body is larger than {limit} bytes")
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
    return PatronMessage(sender=sender, text=text, metadata=parse_metadata(payload.get("metadata")))


def parse_metadata(metadata: object) -> dict[str, Any]:
    """Check the client's metadata (a small, shallow JSON object) and keep what the channel uses."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise BadRequestError("'metadata', when given, must be a JSON object")
    size = len(json.dumps(metadata, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise BadRequestError(f"'metadata' is larger than {MAX_METADATA_BYTES} bytes")
    if _depth(metadata) > MAX_METADATA_DEPTH:
        raise BadRequestError(f"'metadata' is nested deeper than {MAX_METADATA_DEPTH} levels")
    source = metadata.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE_CHARS):
        raise BadRequestError(f"'metadata.source' must be a string of at most {MAX_SOURCE_CHARS} characters")
    kept = {key: clean_text(metadata[key]) for key in KEPT_METADATA if isinstance(metadata.get(key), str)}
    return {key: value for key, value in kept.items() if value}


def _depth(value: object) -> int:
    """How deeply a JSON value nests objects and lists (a scalar: 0)."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth + 1)
            level.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@functools.cache
def crm_engine(url: str) -> Engine:
    """The CRM engine of this Rasa process, made on first use (statement parameters kept out of errors)."""
    return make_engine(url, hide_parameters=True)


@dataclass(frozen=True)
class Claimed:
    """Outbox messages handed to one response: the replies, and what gives them back if it fails."""

    replies: list[dict[str, Any]]
    ids: list[int]
    at: dt.datetime | None


def pending_replies(*, engine: Engine, conversation_id: str, recipient_id: str) -> Claimed:
    """The conversation's waiting outbox messages as replies, marked delivered once committed."""
    at = utcnow()
    with session_scope(engine) as session:
        messages = take_pending(session=session, channel=RestInput.name(), recipient=conversation_id, now=at)
        replies = [
            {"recipient_id": recipient_id, "text": str(message.text)}
            | ({"buttons": buttons_of(message)} if buttons_of(message) else {})
            for message in messages
        ]
        return Claimed(replies=replies, ids=[int(message.id) for message in messages], at=at)


def release_replies(*, engine: Engine, claimed: Claimed) -> None:
    if claimed.ids and claimed.at is not None:
        with session_scope(engine) as session:
            release(session=session, ids=claimed.ids, delivered_at=claimed.at)


NOTHING = Claimed(replies=[], ids=[], at=None)


async def _outbox_replies(conversation_id: str, recipient_id: str) -> Claimed | None:
    """pending_replies off the event loop; None (logged without patron data) if the CRM fails. If the
    patron's client goes away meanwhile (Sanic then cancels the request), the messages go back."""
    engine = crm_engine(get_settings().crm_database_url)
    claiming = asyncio.ensure_future(
        asyncio.to_thread(
            pending_replies, engine=engine, conversation_id=conversation_id, recipient_id=recipient_id
        )
    )
    try:
        return await asyncio.shield(claiming)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(_give_back(engine, await claiming))
        raise
    except Exception as error:
        log.error(
            "rest: the outbox of %s could not be read (%s)",
            fingerprint(conversation_id),
            type(error).__name__,
        )
        return None


async def _give_back(engine: Engine, claimed: Claimed) -> None:
    await asyncio.to_thread(release_replies, engine=engine, claimed=claimed)


async def _respond(request: Request, payload: object, *, claimed: Claimed, status: int = 200) -> None:
    """Write the response; the outbox messages claimed for it are marked delivered only if it was
    written: a connection lost before (Sanic cancels the request) puts them back for the next one."""
    try:
        answer = await request.respond(status=status, content_type="application/json")
        await answer.send(json.dumps(payload, ensure_ascii=False).encode("utf-8"), end_stream=True)
    except BaseException:
        if claimed.ids:
            engine = crm_engine(get_settings().crm_database_url)
            with contextlib.suppress(Exception):
                await asyncio.shield(_give_back(engine, claimed))
        raise


async def _as_tapped(
    request: Request, conversation_id: str, message: PatronMessage
) -> tuple[str, dict[str, Any]]:
    """The message as Rasa gets it: a button's title the patron typed becomes that button's payload (the
    words kept in the metadata as `typed`, which the CRM records); anything else as it came."""
    if is_payload(message.text) or len(message.text) > MAX_TITLE_CHARS:
        return message.text, message.metadata
    agent = getattr(request.app.ctx, "agent", None)
    try:
        tracker = await agent.tracker_store.retrieve(conversation_id) if agent is not None else None
    except Exception as error:  # the turn reads the tracker again and reports a failure itself
        log.warning(
            "rest: no buttons to match for %s (%s)", fingerprint(conversation_id), describe_failure(error)
        )
        return message.text, message.metadata
    payload = typed_payload(message.text, offered_buttons(tracker.events)) if tracker is not None else None
    if payload is None:
        return message.text, message.metadata
    return payload, {**message.metadata, "typed": message.text}


def refusal(request: Request, token: str | None) -> HTTPResponse | None:
    """Who may speak as a patron on the REST channel: with a token set, a request that brings it
    (`Authorization: Bearer <token>`, compared in constant time); without one, only this machine. A
    sender id is what "what do you know about me" and "delete my data" trust, so a stranger must not
    choose one. None when the request may go on; else the 401 or 403 to answer."""
    if token:
        scheme, _, given = str(request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return response.json(
            {"error": "this channel needs 'Authorization: Bearer <token>' (PATRONBOT_REST_TOKEN)"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="patronbot"'},
        )
    if is_loopback(str(request.ip or "")):
        return None
    return response.json(
        {"error": "without PATRONBOT_REST_TOKEN the REST channel answers only this machine"}, status=403
    )


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
        settings = get_settings()
        max_chars = settings.max_message_chars
        token = settings.rest_token.get_secret_value() if settings.rest_token is not None else None

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse | None:
            refused = refusal(request, token)
            if refused is not None:
                return refused
            try:
                message = parse_request(request.body, max_chars=max_chars)
            except BadRequestError as error:
                return response.json({"error": str(error)}, status=error.status)
            conversation_id = f"{self.name()}:{message.sender}"
            text, metadata = await _as_tapped(request, conversation_id, message)
            collector = CollectingOutputChannel()
            try:
                await on_new_message(
                    UserMessage(
                        text, collector, conversation_id, input_channel=self.name(), metadata=metadata
                    )
                )
            except Exception as error:
                # The patron gets an apology, not a 500. The log names the failure and where it was
                # raised, never its message: a store's error quotes the events it could not write.
                log.error(
                    "rest: handling a message from %s failed (%s)\n%s",
                    fingerprint(conversation_id),
                    describe_failure(error),
                    failure_stack(error),
                )
            if not collector.messages:
                language = detect_language(message.text) or "zh"
                collector.messages.append({"recipient_id": conversation_id, "text": APOLOGY[language]})
            collector.messages = spoken(collector.messages)  # a librarian has it: silence is the answer
            for reply in collector.messages:
                reply["recipient_id"] = message.sender
            # Staff replies waiting for this conversation come first: they were written before these.
            claimed = await _outbox_replies(conversation_id, message.sender) or NOTHING
            await _respond(request, [*claimed.replies, *collector.messages], claimed=claimed)
            return None

        @webhook.route("/outbox", methods=["GET"])
        async def outbox(request: Request) -> HTTPResponse | None:
            refused = refusal(request, token)
            if refused is not None:
                return refused
            try:
                sender = parse_sender(request.args.get("sender"))
            except BadRequestError as error:
                return response.json({"error": str(error)}, status=400)
            claimed = await _outbox_replies(f"{self.name()}:{sender}", sender)
            if claimed is None:
                return response.json(
                    {"error": "the outbox cannot be read right now; try again shortly"}, status=503
                )
            await _respond(request, claimed.replies, claimed=claimed)
            return None

        return webhook
