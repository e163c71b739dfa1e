"""The Rasa server's one outbox dispatcher, shared by every push channel (Telegram, WeChat, the widget)."""

from __future__ import annotations

from typing import Any

from bot.outbound.dispatcher import Dispatcher
from bot.settings import get_settings


def dispatcher(app: Any) -> Dispatcher:
    """The dispatcher of this Sanic app, made on first call. Each push channel registers its sender and
    calls `start()` in its blueprint's after_server_start listener and `await stop()` in its
    before_server_stop listener (both do nothing when already done)."""
    found = getattr(app.ctx, "patronbot_dispatcher", None)
    if found is None:
        from connectors.rest import crm_engine  # the Rasa process's one CRM engine

        found = Dispatcher(engine=crm_engine(get_settings().crm_database_url))
        app.ctx.patronbot_dispatcher = found
    return found
