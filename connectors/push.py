"""The push channels' senders outside the Rasa server, for `patronbot sender` and `patronbot campaign run`.

Registered as the `patronbot.senders` entry point, so the command line (in bot/, which imports no
channel code) finds them without importing connectors itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from telegram.error import TelegramError

from bot.channels.wechat_api import WeChatApi, WeChatSender
from bot.crm.database import make_engine
from bot.outbound.dispatcher import ChannelSender
from bot.outbound.sharing import Pace, RateShare
from bot.redaction import describe_failure
from bot.settings import Settings
from connectors.telegram_send import PatronRateLimiter, make_bot, outbox_sender

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_senders(settings: Settings) -> AsyncIterator[dict[str, ChannelSender]]:
    """The senders of the channels whose settings are given ({"telegram": ..., "wechat": ...}), Telegram
    at PATRONBOT_TELEGRAM_RATE messages a second shared among the sending processes alive (each
    registers in the CRM's sender_worker table and beats there: bot/outbound/sharing.py)."""
    senders: dict[str, ChannelSender] = {}
    paces: dict[str, tuple[Pace, float]] = {}
    bot = None
    token = settings.telegram_token
    if settings.telegram_on and token is not None:
        bot = make_bot(
            token=token.get_secret_value(),
            api_url=settings.telegram_api_url,
            per_second=settings.telegram_rate,
        )
        try:
            await bot.initialize()
        except TelegramError as error:  # unreachable for now: each message tries again
            log.warning("telegram: the Bot API did not answer at start (%s)", describe_failure(error))
        senders["telegram"] = outbox_sender(bot)
        if isinstance(bot.rate_limiter, PatronRateLimiter):
            paces["telegram"] = (bot.rate_limiter.pace, settings.telegram_rate)
    secret = settings.wechat_secret
    if settings.wechat_on and secret is not None:
        engine = make_engine(settings.crm_database_url)
        api = WeChatApi(
            engine=engine,
            appid=settings.wechat_appid,
            secret=secret.get_secret_value(),
            base_url=settings.wechat_api_url,
        )
        senders["wechat"] = WeChatSender(api=api, engine=engine, template_id=settings.wechat_template_id).send
    sharing = RateShare(engine=make_engine(settings.crm_database_url), paces=paces)
    try:
        await sharing.start()
        yield senders
    finally:
        await sharing.stop()
        sharing.engine.dispose()
        if bot is not None:
            try:
                await bot.shutdown()
            except TelegramError as error:
                log.info("telegram: the bot did not shut down cleanly (%s)", describe_failure(error))
