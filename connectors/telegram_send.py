"""Sending to Telegram: the one rate-limited bot, replies as messages with inline keyboards, and the
outbox sender that says what came of each staff reply."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.ext import BaseRateLimiter, ExtBot
from telegram.request import HTTPXRequest
from typing_extensions import override

from bot.channels.reachability import set_reachable
from bot.crm.models import OutboxMessage
from bot.outbound.claims import announcing, request_leaving
from bot.outbound.dispatcher import Attempt
from bot.outbound.outbox import buttons_of
from bot.outbound.sharing import Pace
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure
from connectors.telegram_updates import callback_data

log = logging.getLogger(__name__)

# Telegram's limits, kept here and nowhere else: about 30 messages a second overall and one a second per
# chat (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this). A little under
# each, so that the jitter of the network never crosses them: evenly spaced (no bursts), a pace of 29.6
# a second delivers about 29 (each message waits for its slot and then for the event loop).
MESSAGES_PER_SECOND = 29.6
SECONDS_PER_CHAT_MESSAGE = 1.05
# A 429 (retry_after) pauses every request for that long and is retried this often: the request was
# refused, so a retry cannot send twice. No other failure is retried by the limiter.
RETRIES_AFTER_429 = 2
# Telegram's longest message.
MAX_MESSAGE_CHARS = 4096
# Waits of the Bot API client (seconds). A long poll waits POLL_SECONDS more.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
POOL_TIMEOUT = 10.0
POLL_SECONDS = 25
# Failures where the request surely did not reach Telegram (safe to send again).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

JSONDict = dict[str, Any]


class _ChatPace:
    """One chat's messages, one at a time, each sent at least SECONDS_PER_CHAT_MESSAGE after the
    previous one was answered (so the spacing holds at Telegram, however long each waited before)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.last = float("-inf")

    def idle(self, now: float) -> bool:
        return not self.lock.locked() and now - self.last >= SECONDS_PER_CHAT_MESSAGE


class PatronRateLimiter(BaseRateLimiter[int]):
    """Telegram's limits in one place: messages to chats evenly spaced at `per_second` (no bursts), one
    message a second per private chat, and a 429 pausing every request for its retry_after.

    PTB's AIORateLimiter let requests pass its limiter during a pause and then wait, so they all left
    at once when it ended, and any request finishing meanwhile ended the pause early: against a Bot API
    that allows 30 a second, 1,200 staff replies met 104 429s and went at 26 a second. The chat's
    spacing is counted from when its previous message was answered, not from when it began to wait.
    The overall pace may change while sending (several sender processes share the bot's rate)."""

    def __init__(self, *, per_second: float = MESSAGES_PER_SECOND, retries: int = RETRIES_AFTER_429) -> None:
        self.pace = Pace(per_second)
        self._retries = retries
        self._paused_until = 0.0
        self._chats: dict[int, _ChatPace] = {}

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _pace(self, chat_id: int) -> _ChatPace:
        if len(self._chats) > 1024:  # forget idle chats
            now = asyncio.get_running_loop().time()
            for key, pace in list(self._chats.items()):
                if key != chat_id and pace.idle(now):
                    del self._chats[key]
        return self._chats.setdefault(chat_id, _ChatPace())

    async def _unpaused(self) -> None:
        loop = asyncio.get_running_loop()
        while (wait := self._paused_until - loop.time()) > 0:
            await asyncio.sleep(wait)

    async def _paced(self, callback: Callable[[], Awaitable[bool | JSONDict | list[JSONDict]]]) -> Any:
        """One message: after any pause, in its slot of the overall pace, retried after a 429 (the
        request was refused, so a retry cannot send twice)."""
        loop = asyncio.get_running_loop()
        for attempt in range(self._retries + 1):
            await self._unpaused()
            await self.pace.slot()
            await self._unpaused()  # a pause may have begun while this waited for its slot
            await request_leaving()  # an outbox message is in flight from here
            try:
                return await callback()
            except RetryAfter as refused:
                if attempt == self._retries:
                    raise
                wait = refused.retry_after
                seconds = wait.total_seconds() if isinstance(wait, dt.timedelta) else float(wait)
                self._paused_until = max(self._paused_until, loop.time() + seconds + 0.1)
        raise AssertionError("unreachable")  # pragma: no cover

    @override
    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | JSONDict | list[JSONDict]:
        def call() -> Awaitable[bool | JSONDict | list[JSONDict]]:
            return callback(*args, **kwargs)

        chat_id = data.get("chat_id")
        if not (isinstance(chat_id, int) and chat_id > 0):
            if chat_id is None:  # getUpdates, answerCallbackQuery, getMe: not messages, not paced
                await self._unpaused()
                result: bool | JSONDict | list[JSONDict] = await call()
                return result
            return await self._paced(call)  # type: ignore[no-any-return]
        pace = self._pace(chat_id)
        loop = asyncio.get_running_loop()
        async with pace.lock:
            wait = pace.last + SECONDS_PER_CHAT_MESSAGE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._paced(call)  # type: ignore[no-any-return]
            finally:
                pace.last = loop.time()


def make_bot(
    *, token: str, api_url: str, read_timeout: float = READ_TIMEOUT, per_second: float = MESSAGES_PER_SECOND
) -> ExtBot[int]:
    """The process's bot: rate limited, with room for many conversations at once. Initialise it in
    the event loop that uses it (a server-start listener)."""
    request = HTTPXRequest(
        connection_pool_size=64,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        pool_timeout=POOL_TIMEOUT,
    )
    polling = HTTPXRequest(connection_pool_size=2, read_timeout=POLL_SECONDS + 10.0)
    return ExtBot(
        token,
        base_url=api_url,
        request=request,
        get_updates_request=polling,
        rate_limiter=PatronRateLimiter(per_second=per_second),
    )


def chat_of(recipient: str) -> int | None:
    """The chat id in a Rasa sender id `telegram:<chat_id>`."""
    channel, _, external = recipient.partition(":")
    if channel != "telegram" or not external.isdigit():
        return None
    return int(external)


def split_text(text: str) -> list[str]:
    """A text in pieces Telegram takes (at most 4,096 characters each, cut at a line break if possible)."""
    pieces: list[str] = []
    while len(text) > MAX_MESSAGE_CHARS:
        cut = text.rfind("\n", 0, MAX_MESSAGE_CHARS)
        cut = cut if cut > MAX_MESSAGE_CHARS // 2 else MAX_MESSAGE_CHARS
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return [*pieces, text] if text.strip() else pieces


def inline_keyboard(buttons: Iterable[Mapping[str, Any]]) -> InlineKeyboardMarkup | None:
    """Rasa buttons as an inline keyboard, one button a row (a link button opens its URL)."""
    rows: list[list[InlineKeyboardButton]] = []
    for button in buttons:
        title = str(button.get("title") or "").strip()[:64]
        if not title:
            continue
        url, payload = button.get("url"), button.get("payload")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            rows.append([InlineKeyboardButton(title, url=url)])
        elif isinstance(payload, str) and payload:
            rows.append([InlineKeyboardButton(title, callback_data=callback_data(payload))])
    return InlineKeyboardMarkup(rows) if rows else None


def reply_parts(reply: Mapping[str, Any]) -> tuple[str, InlineKeyboardMarkup | None]:
    """A Rasa reply (text, buttons, an image, custom JSON with a text) as a Telegram text and keyboard."""
    text = str(reply.get("text") or "")
    image = reply.get("image")
    if isinstance(image, str) and image:
        text = f"{text}\n{image}".strip()
    custom = reply.get("custom")
    if not text and isinstance(custom, Mapping) and isinstance(custom.get("text"), str):
        text = str(custom["text"])
    buttons = reply.get("buttons") or reply.get("quick_replies") or []
    keyboard = inline_keyboard(button for button in buttons if isinstance(button, Mapping))
    return text, keyboard


def retry_seconds(error: RetryAfter) -> float:
    """How long Telegram asked to wait, in seconds."""
    with warnings.catch_warnings():  # PTB 22 warns that the int form of retry_after is deprecated
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def surely_not_sent(error: NetworkError) -> bool:
    """Whether a network failure happened before the request reached Telegram (or Telegram answered
    that it failed, a 5xx): then sending again cannot send twice."""
    cause = error.__cause__
    if isinstance(error, TimedOut):
        return isinstance(cause, _NOT_SENT)
    return not isinstance(cause, httpx.HTTPError) or isinstance(cause, _NOT_SENT)


def attempt_for(error: TelegramError) -> Attempt:
    """What a failed send means for the outbox."""
    if isinstance(error, RetryAfter):
        return Attempt("retry", reason="http_429", retry_after=retry_seconds(error))
    if isinstance(error, Forbidden):
        return Attempt("blocked", reason="http_403")
    if isinstance(error, BadRequest):
        return Attempt("failed", reason="http_400")
    if isinstance(error, NetworkError):
        if surely_not_sent(error):
            return Attempt("retry", reason=_reason(error))
        return Attempt("unknown", reason="timeout" if isinstance(error, TimedOut) else "connection_lost")
    return Attempt("retry", reason=type(error).__name__)  # an invalid token, say: kept until fixed


def _reason(error: NetworkError) -> str:
    cause = error.__cause__
    if isinstance(cause, httpx.HTTPError):
        return type(cause).__name__.lower()[:64]
    return "http_5xx"


def outbox_sender(bot: ExtBot[int]) -> Callable[[OutboxMessage], Coroutine[Any, Any, Attempt]]:
    """The dispatcher's sender for the telegram channel: one outbox message, and what came of it. Its
    requests announce themselves when they leave (after their slot), so the message is in flight only then."""

    @announcing
    async def send(message: OutboxMessage) -> Attempt:
        chat_id = chat_of(str(message.recipient))
        pieces = split_text(str(message.text or ""))
        if chat_id is None or not pieces:
            return Attempt("failed", reason="not_a_telegram_chat" if chat_id is None else "empty")
        keyboard = inline_keyboard(buttons_of(message))
        sent = 0
        try:
            for index, piece in enumerate(pieces):
                # The buttons go under the last piece, as with the bot's own replies.
                await bot.send_message(
                    chat_id, piece, reply_markup=keyboard if index == len(pieces) - 1 else None
                )
                sent += 1
        except TelegramError as error:
            attempt = attempt_for(error)
            if sent and attempt.outcome == "retry":  # part of it went: never send that part twice
                return Attempt("unknown", reason="partly_sent")
            return attempt
        return Attempt("sent")

    return send


def mark_unreachable(*, engine: Engine, chat_id: int) -> int:
    """The patron behind a Telegram chat blocked the bot: not reachable there (nothing if unknown)."""
    return set_reachable(engine=engine, channel="telegram", external_id=str(chat_id), reachable=False)


async def send_replies(
    *,
    bot: ExtBot[int],
    engine: Engine,
    chat_id: int,
    replies: Iterable[Mapping[str, Any]],
    skip: int = 0,
    on_sent: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """A turn's replies, in order, as Telegram messages, leaving out the first `skip` (sent before a
    crash); `on_sent(n)` is told once the n-th message went. Returns how many messages there are. A
    refused request (429 beyond the limiter's retries, a 5xx, no connection) is tried again twice; a
    blocked bot stops and marks the patron unreachable."""
    messages: list[tuple[str, InlineKeyboardMarkup | None]] = []
    for reply in replies:
        text, keyboard = reply_parts(reply)
        pieces = split_text(text)
        messages += [
            (piece, keyboard if index == len(pieces) - 1 else None) for index, piece in enumerate(pieces)
        ]
    for number, (piece, markup) in enumerate(messages, start=1):
        if number <= skip:
            continue
        try:
            await _send_with_retries(bot, chat_id, piece, markup)
        except Forbidden:
            await asyncio.to_thread(mark_unreachable, engine=engine, chat_id=chat_id)
            log.info("telegram: %s blocked the bot", fingerprint(f"telegram:{chat_id}"))
            return len(messages)
        except TelegramError as error:
            log.error(
                "telegram: a reply to %s was not sent (%s)",
                fingerprint(f"telegram:{chat_id}"),
                describe_failure(error),
            )
        if on_sent is not None:  # sent, or given up: either way not to be sent again
            await on_sent(number)
    return len(messages)


async def _send_with_retries(
    bot: ExtBot[int], chat_id: int, text: str, markup: InlineKeyboardMarkup | None
) -> None:
    for attempt in range(3):
        try:
            await bot.send_message(chat_id, text, reply_markup=markup)
            return
        except (BadRequest, Forbidden):
            raise
        except RetryAfter as error:
            if attempt == 2:
                raise
            await asyncio.sleep(retry_seconds(error))
        except NetworkError as error:
            if attempt == 2 or not surely_not_sent(error):
                raise
            await asyncio.sleep(1.0 + attempt)
    raise AssertionError("unreachable: the third failure is raised")
