"""Rasa's credentials file made from the settings: the REST channel always, the others when set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.files import write_private
from bot.settings import Settings

REST = "connectors.rest.RestInput"
TELEGRAM = "connectors.telegram.TelegramInput"
WECHAT = "connectors.wechat.WeChatInput"
WEBCHAT = "connectors.webchat.WebChatInput"


def channel_classes(settings: Settings) -> list[str]:
    """The input channels Rasa loads, in order. Each reads its own settings when Rasa starts it, so no
    secret is written to the file."""
    classes = [REST]
    if settings.telegram_on:
        classes.append(TELEGRAM)
    if settings.wechat_on:
        classes.append(WECHAT)
    if settings.webchat:
        classes.append(WEBCHAT)
    return classes


def channel_webhooks(settings: Settings) -> dict[str, str]:
    """Each channel that is on and where it listens, for `patronbot run` to print."""
    base = settings.rasa_url
    names = {
        REST: ("REST", f"{base}/webhooks/rest/webhook"),
        TELEGRAM: (
            "Telegram",
            f"{base}/webhooks/telegram/webhook"
            if settings.telegram_webhook_secret is not None
            else "polling getUpdates (no webhook secret set)",
        ),
        WECHAT: ("WeChat", f"{base}/webhooks/wechat/webhook"),
        WEBCHAT: ("web chat widget", f"{base}/webhooks/webchat/"),
    }
    return dict(names[name] for name in channel_classes(settings) if name in names)


def write_credentials(settings: Settings) -> Path:
    """Write the credentials file to the data folder (its owner only), naming the channels that are on."""
    content: dict[str, Any] = dict.fromkeys(channel_classes(settings))
    path = settings.data_path / "credentials.yml"
    text = "# Written by `patronbot run` from the PATRONBOT_* settings; edits here are overwritten.\n"
    text += yaml.safe_dump(content, sort_keys=False)
    write_private(path, text)
    return path
