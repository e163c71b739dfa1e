"""Telegram without a public URL: long polling getUpdates in the Rasa process, for one bot process only."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from telegram.error import Conflict, InvalidToken, RetryAfter, TelegramError
from telegram.ext import ExtBot

from bot.redaction import describe_failure
from connectors.telegram_send import POLL_SECONDS, retry_seconds
from connectors.telegram_turns import UpdateHandler

log = logging.getLogger(__name__)

# The updates the bot handles (others are not even fetched).
ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]
# Another process polls with the same token (Telegram answers 409): wait this long before trying again.
CONFLICT_BACKOFF = 30.0
# After a failure, wait this long, doubling to MAX_BACKOFF.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0


async def poll_updates(
    *, bot: ExtBot[int], handler: UpdateHandler, conflict_backoff: float = CONFLICT_BACKOFF
) -> None:
    """Fetch updates until cancelled; each is recorded (then handled) before the offset moves past it,
    so an update is never dropped, and a redelivered one is recognised."""
    await _delete_webhook(bot)
    offset: int | None = None
    backoff = FIRST_BACKOFF
    said_conflict = False
    while True:
        try:
            updates = await bot.get_updates(
                offset=offset,
                timeout=POLL_SECONDS,
                allowed_updates=ALLOWED_UPDATES,
                read_timeout=POLL_SECONDS + 10,
            )
        except asyncio.CancelledError:
            raise
        except Conflict:
            if not said_conflict:
                log.warning(
                    "telegram: another process polls with this token (or a webhook is set); polling is "
                    "for one bot process: trying again every %.0f s",
                    conflict_backoff,
                )
                said_conflict = True
            await asyncio.sleep(conflict_backoff)
            continue
        except RetryAfter as error:
            await asyncio.sleep(retry_seconds(error))
            continue
        except InvalidToken:
            log.error("telegram: the Bot API refuses PATRONBOT_TELEGRAM_TOKEN; check it with @BotFather")
            await asyncio.sleep(MAX_BACKOFF)
            continue
        except TelegramError as error:
            log.warning("telegram: getUpdates failed (%s); trying again", describe_failure(error))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            continue
        backoff, said_conflict = FIRST_BACKOFF, False
        offset = await _record_all([update.to_dict() for update in updates], handler, offset)


async def _record_all(updates: list[Any], handler: UpdateHandler, offset: int | None) -> int | None:
    """Record each update in order; the offset after the last one recorded (a failure stops there, so
    the rest are fetched again)."""
    for update in updates:
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            continue
        try:
            await handler.accept(update, json.dumps(update, ensure_ascii=False))
        except Exception as error:  # the CRM is down: fetch it again later
            log.error("telegram: an update could not be recorded (%s)", describe_failure(error))
            await asyncio.sleep(FIRST_BACKOFF)
            return offset
        offset = update_id + 1
    return offset


async def _delete_webhook(bot: ExtBot[int]) -> None:
    """Polling and a webhook exclude each other: the webhook goes (its pending updates are kept)."""
    for attempt in range(5):
        try:
            await bot.delete_webhook(drop_pending_updates=False)
            return
        except TelegramError as error:
            log.warning("telegram: deleteWebhook failed (%s)", describe_failure(error))
            await asyncio.sleep(FIRST_BACKOFF * 2**attempt)
