"""Rasa's endpoints (action server, tracker store, lock store, event broker) made from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from bot.files import write_private
from bot.settings import Settings

# Rasa's SQL stores, made cheaper per turn (rasa_server/stores.py); Rasa imports them by these names.
TRACKER_STORE_CLASS = "rasa_server.stores.PatronTrackerStore"
EVENT_BROKER_CLASS = "rasa_server.stores.PatronEventBroker"
# Rasa's RabbitMQ broker, logging a failed publish without the event.
PIKA_BROKER_CLASS = "rasa_server.stores.PatronPikaEventBroker"


def _sql_store(url: str, store_type: str) -> dict[str, Any]:
    parsed = make_url(url)
    dialect = parsed.get_backend_name()
    config: dict[str, Any] = {"type": store_type, "dialect": dialect, "db": parsed.database}
    if dialect != "sqlite":
        config |= {
            "url": parsed.host or "localhost",
            "port": parsed.port or 5432,
            "username": parsed.username,
            "password": parsed.password,
        }
        if parsed.query:
            config["query"] = dict(parsed.query)
    return config


def _amqp_broker(url: str, queue: str) -> dict[str, Any]:
    parsed = make_url(url.replace("amqp://", "amqp+pika://", 1))
    return {
        "type": PIKA_BROKER_CLASS,
        "url": parsed.host or "localhost",
        "port": parsed.port or 5672,
        "username": parsed.username or "guest",
        "password": parsed.password or "guest",
        "queues": [queue],
    }


def rasa_endpoints(settings: Settings) -> dict[str, Any]:
    """The content of the endpoints file Rasa is started with."""
    endpoints: dict[str, Any] = {"action_endpoint": {"url": settings.action_endpoint_url}}
    if settings.rasa_tracker_url != "memory":
        endpoints["tracker_store"] = _sql_store(settings.rasa_tracker_url, TRACKER_STORE_CLASS)
    if settings.lock_store_url != "memory":
        parsed = make_url(settings.lock_store_url)
        endpoints["lock_store"] = {
            "type": "redis",
            "url": parsed.host or "localhost",
            "port": parsed.port or 6379,
            "db": int(parsed.database or 0),
            "password": parsed.password,
            "key_prefix": "patronbot",
        }
    broker = settings.rasa_event_broker_url
    if broker.startswith("amqp://"):
        endpoints["event_broker"] = _amqp_broker(broker, settings.event_queue)
    else:
        endpoints["event_broker"] = _sql_store(broker, EVENT_BROKER_CLASS)
    return endpoints


def write_endpoints(settings: Settings) -> Path:
    """Write the endpoints file to the data folder (readable by its owner only: it may hold passwords)."""
    path = settings.data_path / "endpoints.yml"
    content = "# Written by `patronbot run` from the PATRONBOT_* settings; edits here are overwritten.\n"
    content += yaml.safe_dump(rasa_endpoints(settings), sort_keys=False, allow_unicode=True)
    write_private(path, content)
    return path
