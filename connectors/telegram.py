"""The Telegram channel (python-telegram-bot): POST /webhooks/telegram/webhook, or long polling without one.

The webhook checks Telegram's secret token before it reads anything, records the update once in the CRM
(connectors/telegram_turns.py) and only then answers 200, so Telegram redelivers what was not recorded;
the turn runs after the answer. Replies and staff replies go through one rate-limited bot
(connectors/telegram_send.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from telegram.error import TelegramError
from telegram.ext import ExtBot

from bot.redaction import describe_failure
from bot.runtime.logs import quiet_libraries
from bot.settings import Settings, get_settings
from connectors.outbound import dispatcher
from connectors.rest import crm_engine
from connectors.telegram_polling import poll_updates
from connectors.telegram_send import make_bot, outbox_sender
from connectors.telegram_turns import CHANNEL, UpdateHandler
from connectors.telegram_updates import MAX_BODY_BYTES, BadUpdateError, parse_body

log = logging.getLogger(__name__)
# Loaded inside Rasa's server, which sets up its own logging: httpx would log each Bot API request's URL,
# bot token included.
quiet_libraries()

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 (a header's name)


def secret_matches(given: str | None, secret: str | None) -> bool:
    """Telegram's secret token, compared in constant time; nothing matches when no secret is set."""
    if not secret:
        return False
    return hmac.compare_digest((given or "").encode("utf-8", "replace"), secret.encode("utf-8"))


async def read_body(request: Request, limit: int) -> bytes | None:
    """The streamed request body, or None as soon as it is longer than `limit` bytes."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    if request.stream is None:
        return request.body if len(request.body or b"") <= limit else None
    while True:
        chunk = await request.stream.read()
        if chunk is None:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def _error(message: str, status: int) -> HTTPResponse:
    return response.json({"ok": False, "error": message}, status=status)


class TelegramRuntime:
    """The channel's state in one Rasa process: the bot, the update handler and its background tasks."""

    def __init__(self, settings: Settings, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> None:
        self.settings = settings
        self.on_new_message = on_new_message
        self.bot: ExtBot[int] | None = None
        self.handler: UpdateHandler | None = None
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def secret(self) -> str | None:
        secret = self.settings.telegram_webhook_secret
        return secret.get_secret_value() if secret is not None else None

    async def start(self, app: Any) -> None:
        token = self.settings.telegram_token
        if token is None or not token.get_secret_value():
            return
        bot = make_bot(
            token=token.get_secret_value(),
            api_url=self.settings.telegram_api_url,
            per_second=self.settings.telegram_rate,
        )
        try:
            await bot.initialize()
        except TelegramError as error:  # the Bot API unreachable for now: each request tries again
            log.warning("telegram: the Bot API did not answer at start (%s)", describe_failure(error))
        self.bot = bot
        self.handler = UpdateHandler(
            engine=crm_engine(self.settings.crm_database_url),
            bot=bot,
            on_new_message=self.on_new_message,
            agent=lambda: getattr(app.ctx, "agent", None),
        )
        outbox = dispatcher(app)
        outbox.register(CHANNEL, outbox_sender(bot))
        outbox.start()
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self.handler.maintain(), name="patronbot-telegram-takeover"))
        if self.secret is None:
            self.tasks.append(
                loop.create_task(poll_updates(bot=bot, handler=self.handler), name="patronbot-telegram-poll")
            )

    async def stop(self, app: Any) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.handler is not None:
            await self.handler.drain()
        await dispatcher(app).stop()
        if self.bot is not None:
            try:
                await self.bot.shutdown()
            except TelegramError as error:
                log.info("telegram: the bot did not shut down cleanly (%s)", describe_failure(error))

    async def receive(self, request: Request) -> HTTPResponse:
        if not secret_matches(request.headers.get(SECRET_HEADER), self.secret):
            return _error("wrong or missing X-Telegram-Bot-Api-Secret-Token", 403)
        body = await read_body(request, MAX_BODY_BYTES)
        if body is None:
            return _error(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            update = parse_body(body)
        except BadUpdateError as error:
            return _error(str(error), error.status)
        if self.handler is None:  # the server is still starting: Telegram delivers it again
            return _error("starting; try again shortly", 503)
        try:
            await self.handler.accept(update, body.decode("utf-8"))
        except Exception as error:  # not recorded (the CRM is down): Telegram must deliver it again
            log.error("telegram: an update could not be recorded (%s)", describe_failure(error))
            return _error("the update could not be recorded; deliver it again", 503)
        return response.json({"ok": True})


class TelegramInput(InputChannel):  # type: ignore[misc]
    """Telegram through python-telegram-bot: private chats, conversations `telegram:<chat_id>`."""

    @classmethod
    def name(cls) -> str:
        return CHANNEL

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> TelegramInput:
        return cls()  # the settings hold the token and the secret; the credentials file holds none

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("patronbot_telegram_webhook", __name__)
        runtime = self.runtime = TelegramRuntime(get_settings(), on_new_message)

        @webhook.listener("after_server_start")
        async def start(app: Any, _: Any) -> None:
            await runtime.start(app)

        @webhook.listener("before_server_stop")
        async def stop(app: Any, _: Any) -> None:
            await runtime.stop(app)

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"], stream=True)
        async def receive(request: Request) -> HTTPResponse:
            return await runtime.receive(request)

        return webhook
