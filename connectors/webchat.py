"""The website chat widget (rasa-webchat 1.0.1) over socket.io, its demo page, and staff replies pushed to it.

Served by the Rasa server when `PATRONBOT_WEBCHAT=true`:
- `GET /webhooks/webchat/`: a demo page (a library's page, in Chinese and English) that embeds the widget;
- `GET /webhooks/webchat/static/<file>`: the widget (fetched by scripts/fetch_webchat.py), its licence,
  and `embed.js` / `webchat.css`, the snippet a library puts on its own pages;
- socket.io at `/webhooks/webchat/socket.io/` (the widget's `socketPath`).

The session id is issued by the server (connectors/webchat_sessions.py), never taken from the browser:
a browser that brings back an id it was given keeps its conversation; any other id gets a new one. A
socket speaks only for the session it was confirmed for, as Rasa sender `webchat:<session>`. Staff
replies in the outbox are pushed to the session's open sockets; with none open in this process they
wait, and go when the widget reconnects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.channels.socketio import SocketBlueprint, SocketIOInput, SocketIOOutput
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncServer  # type: ignore[import-untyped]

from bot.channels.quiet import QUIET
from bot.crm.models import OutboxMessage
from bot.language import detect_language, is_payload
from bot.outbound.dispatcher import SENT, Attempt
from bot.outbound.outbox import buttons_of
from bot.pseudonyms import fingerprint, load_key
from bot.redaction import describe_failure, failure_stack
from bot.settings import get_settings, web_origins
from connectors.outbound import dispatcher
from connectors.replies import APOLOGY
from connectors.rest import BadRequestError, clean_text, parse_metadata
from connectors.socketio_compat import enter_room, leave_room, patch_sanic_websocket_wait
from connectors.typed_buttons import MAX_TITLE_CHARS, offered_buttons, typed_payload
from connectors.webchat_sessions import CHANNEL, issue_session, sender_of

log = logging.getLogger(__name__)

URL_PREFIX = "/webhooks/webchat"
# The socket.io endpoint, under the channel's own prefix so one reverse-proxy rule covers the channel.
SOCKET_PATH = f"{URL_PREFIX}/socket.io"
USER_EVENT = "user_uttered"
BOT_EVENT = "bot_uttered"
# Sent to the one socket whose event was refused: {"error": CODE, "message": "..."}.
ERROR_EVENT = "patronbot_error"
STATIC = Path(__file__).with_name("static") / "webchat"
VENDOR = STATIC / "vendor"
# What /static/<name> serves: the widget and its licence as fetched, and the page's own files.
SERVED = {
    "rasa-webchat.js": (VENDOR / "rasa-webchat.js", "application/javascript; charset=utf-8"),
    "LICENSE-rasa-webchat.txt": (VENDOR / "LICENSE", "text/plain; charset=utf-8"),
    "embed.js": (STATIC / "embed.js", "application/javascript; charset=utf-8"),
    "webchat.css": (STATIC / "webchat.css", "text/css; charset=utf-8"),
}
DEMO_PAGE = STATIC / "demo.html"
# A staff reply claimed while its widget was closing: offered again after this many seconds.
NO_SOCKET_RETRY = 2.0


def _refusal(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def widget_message(message: OutboxMessage) -> dict[str, Any]:
    """An outbox message as the widget shows a bot message: its text, and its buttons as quick replies
    (as Rasa's socket.io channel sends them)."""
    shown: dict[str, Any] = {"text": str(message.text)}
    buttons = buttons_of(message)
    if buttons:
        shown["quick_replies"] = [{"content_type": "text", **button} for button in buttons]
    return shown


class _CountingOutput(SocketIOOutput):  # type: ignore[misc]
    """Rasa's socket.io output, counting what it sent, so a turn that said nothing gets an apology."""

    def __init__(self, sio: AsyncServer, bot_message_evt: str) -> None:
        super().__init__(sio, bot_message_evt)
        self.sent = 0

    async def _send_message(self, socket_id: str, response: Any) -> None:
        await super()._send_message(socket_id, response)
        self.sent += 1

    async def send_custom_json(self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any) -> None:
        if json_message != QUIET:  # the quiet marker: a librarian has it, silence is the answer
            await super().send_custom_json(recipient_id, json_message, **kwargs)
        self.sent += 1

    @classmethod
    def name(cls) -> str:
        return CHANNEL


class WebChatInput(SocketIOInput):  # type: ignore[misc]
    """Rasa's socket.io channel with this stack's fixes (connectors/socketio_compat.py), server-issued
    sessions, checked input, the demo page and the widget's files, and a push sender for the outbox."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        return cls()  # everything comes from the settings; the credentials file names the class only

    def __init__(self) -> None:
        super().__init__(
            user_message_evt=USER_EVENT,
            bot_message_evt=BOT_EVENT,
            namespace=None,
            session_persistence=True,
            socketio_path=SOCKET_PATH,
        )
        self.settings = get_settings()
        self.key = load_key(settings=self.settings)
        self.app: Any = None
        # This process's open sockets: each socket's session (sender id), and each session's sockets.
        self.session_of: dict[str, str] = {}
        self.sockets: dict[str, set[str]] = {}

    def holds(self, recipient: str) -> bool:
        """Whether this process has an open widget for `recipient` (a sender id `webchat:...`)."""
        return bool(self.sockets.get(recipient))

    async def push(self, message: OutboxMessage) -> Attempt:
        """The outbox's sender: the message as a bot utterance to every open socket of the session."""
        recipient = str(message.recipient)
        if self.sio is None or not self.holds(recipient):
            return Attempt("retry", reason="no_open_widget", retry_after=NO_SOCKET_RETRY)
        await self.sio.emit(BOT_EVENT, widget_message(message), room=recipient)
        return SENT

    async def _bind(self, sio: AsyncServer, sid: str, sender: str) -> None:
        previous = self.session_of.get(sid)
        if previous == sender:
            return
        if previous is not None:
            self._unbind(sid)
            await leave_room(sio, sid, previous)
        await enter_room(sio, sid, sender)
        self.session_of[sid] = sender
        self.sockets.setdefault(sender, set()).add(sid)

    def _unbind(self, sid: str) -> None:
        sender = self.session_of.pop(sid, None)
        if sender is not None:
            open_sockets = self.sockets.get(sender, set())
            open_sockets.discard(sid)
            if not open_sockets:
                self.sockets.pop(sender, None)

    async def _as_tapped(
        self, sender: str, text: str, metadata: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """A button's title typed instead of tapped becomes the button's payload (as on the REST channel)."""
        if is_payload(text) or len(text) > MAX_TITLE_CHARS:
            return text, metadata
        agent = getattr(getattr(self.app, "ctx", None), "agent", None)
        try:
            tracker = await agent.tracker_store.retrieve(sender) if agent is not None else None
        except Exception as error:  # the turn reads the tracker again and reports a failure itself
            log.warning(
                "webchat: no buttons to match for %s (%s)", fingerprint(sender), describe_failure(error)
            )
            return text, metadata
        payload = typed_payload(text, offered_buttons(tracker.events)) if tracker is not None else None
        if payload is None:
            return text, metadata
        return payload, {**metadata, "typed": text}

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        patch_sanic_websocket_wait()
        max_chars = self.settings.max_message_chars
        # The pages PATRONBOT_WEBCHAT_ORIGINS names may open the socket (any page by default: a
        # library's several sites); the session id, not the page's origin, is still what a
        # conversation trusts. Packets larger than the longest acceptable message
        # (every character escaped) close the socket before they are parsed.
        sio = AsyncServer(
            async_mode="sanic",
            cors_allowed_origins=web_origins(self.settings.webchat_origins) or "*",
            max_http_buffer_size=6 * max_chars + 16_384,
            logger=False,
            engineio_logger=False,
        )
        self.sio = sio
        webchat: Blueprint = SocketBlueprint(sio, SOCKET_PATH, "patronbot_webchat", __name__)

        @webchat.listener("after_server_start")
        async def start(app: Any, _loop: Any) -> None:
            self.app = app
            if not SERVED["rasa-webchat.js"][0].is_file():
                log.warning(
                    "webchat: the widget is not installed; run `make install` (scripts/fetch_webchat.py)"
                )
            outbox = dispatcher(app)
            outbox.register(CHANNEL, self.push, holds=self.holds)
            outbox.start()

        @webchat.listener("before_server_stop")
        async def stop(app: Any, _loop: Any) -> None:
            await dispatcher(app).stop()

        @webchat.route("/", methods=["GET"])
        async def demo(_: Request) -> HTTPResponse:
            return response.html(
                DEMO_PAGE.read_text(encoding="utf-8"),
                headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
            )

        @webchat.route("/static/<name:str>", methods=["GET"])
        async def static(_: Request, name: str) -> HTTPResponse:
            found = SERVED.get(name)
            if found is None:
                return response.json({"error": f"no file {name!r} here"}, status=404)
            path, content_type = found
            if not path.is_file():
                return response.json(
                    {"error": f"{name} is not installed: run `make install` (scripts/fetch_webchat.py)"},
                    status=404,
                )
            return response.raw(
                path.read_bytes(),
                content_type=content_type,
                headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=3600"},
            )

        self._socket_events(sio, on_new_message, max_chars=max_chars)
        return webchat

    def _socket_events(
        self, sio: AsyncServer, on_new_message: Callable[[UserMessage], Awaitable[Any]], *, max_chars: int
    ) -> None:
        """The widget's events: a session asked for and confirmed, a patron's message, a socket gone."""

        @sio.on("disconnect")
        async def disconnect(sid: str, *_: Any) -> None:
            self._unbind(sid)

        @sio.on("session_request")
        async def session_request(sid: str, data: Any = None) -> None:
            given = data.get("session_id") if isinstance(data, dict) else None
            sender = sender_of(given, key=self.key)
            session_id = given if sender is not None else issue_session(key=self.key)
            if sender is None:
                sender = sender_of(session_id, key=self.key)
            assert sender is not None  # an id just issued always verifies
            await self._bind(sio, sid, sender)
            await sio.emit("session_confirm", session_id, room=sid)
            if given is not None and session_id == given and self.app is not None:
                dispatcher(self.app).wake()  # staff replies may be waiting for this widget

        @sio.on(USER_EVENT)
        async def user_uttered(sid: str, data: Any = None) -> None:
            sender = self.session_of.get(sid)
            if sender is None:
                await sio.emit(ERROR_EVENT, _refusal("no_session", "send session_request first"), room=sid)
                return
            if not isinstance(data, dict) or sender_of(data.get("session_id"), key=self.key) != sender:
                await sio.emit(
                    ERROR_EVENT,
                    _refusal("wrong_session", "the message must carry the session_id this socket was given"),
                    room=sid,
                )
                return
            text = data.get("message")
            if not isinstance(text, str):
                await sio.emit(ERROR_EVENT, _refusal("bad_message", "'message' must be a string"), room=sid)
                return
            text = clean_text(text)
            if not text.strip():
                return  # nothing to answer
            if len(text) > max_chars:
                await sio.emit(
                    ERROR_EVENT,
                    _refusal("too_long", f"'message' is longer than {max_chars} characters"),
                    room=sid,
                )
                return
            custom = data.get("customData")
            try:
                metadata = parse_metadata(json.loads(custom) if isinstance(custom, str) else custom)
            except (BadRequestError, ValueError) as error:
                reason = str(error) if isinstance(error, BadRequestError) else "customData is not JSON"
                await sio.emit(ERROR_EVENT, _refusal("bad_custom_data", reason), room=sid)
                return
            await self._handle(sio, on_new_message, sender=sender, text=text, metadata=metadata)

    async def _handle(
        self,
        sio: AsyncServer,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        *,
        sender: str,
        text: str,
        metadata: dict[str, Any],
    ) -> None:
        """One turn: Rasa's replies go to the session's room; an apology if it produced none."""
        text, metadata = await self._as_tapped(sender, text, metadata)
        output = _CountingOutput(sio, BOT_EVENT)
        try:
            await on_new_message(UserMessage(text, output, sender, input_channel=CHANNEL, metadata=metadata))
        except Exception as error:
            log.error(
                "webchat: handling a message from %s failed (%s)\n%s",
                fingerprint(sender),
                describe_failure(error),
                failure_stack(error),
            )
        if not output.sent:
            language = detect_language(metadata.get("typed") or text) or "zh"
            await sio.emit(BOT_EVENT, {"text": APOLOGY[language]}, room=sender)
