"""Test data: Rasa events as Rasa itself serialises them, and helpers to read the CRM."""

from __future__ import annotations

import json
from typing import Any

from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from sqlalchemy import Table, insert, select
from sqlalchemy.engine import Engine

from bot.crm.models import Interaction
from bot.ingest.events import BrokerEvent


def user_event(
    sender: str,
    text: str,
    *,
    intent: str = "greet",
    confidence: float = 0.93,
    language: str | None = None,
    timestamp: float | None = None,
    channel: str = "rest",
) -> BrokerEvent:
    entities = [{"entity": "language", "value": language}] if language else []
    event = UserUttered(
        text, {"name": intent, "confidence": confidence}, entities, input_channel=channel, timestamp=timestamp
    )
    return BrokerEvent(sender_id=sender, data={"sender_id": sender, **event.as_dict()})


def bot_event(
    sender: str, text: str, *, utter_action: str | None = None, timestamp: float | None = None
) -> BrokerEvent:
    metadata = {"utter_action": utter_action} if utter_action else {}
    event = BotUttered(text, metadata=metadata, timestamp=timestamp)
    return BrokerEvent(sender_id=sender, data={"sender_id": sender, **event.as_dict()})


def action_event(sender: str, name: str, *, timestamp: float | None = None) -> BrokerEvent:
    event = ActionExecuted(name, timestamp=timestamp)
    return BrokerEvent(sender_id=sender, data={"sender_id": sender, **event.as_dict()})


def interactions(engine: Engine) -> list[Interaction]:
    from sqlalchemy.orm import Session

    with Session(engine, future=True) as session:
        return list(session.execute(select(Interaction).order_by(Interaction.id)).scalars())


def broker_table(engine: Engine) -> Table:
    """Rasa's SQL event broker table, created as Rasa creates it."""
    from bot.crm.rasa_events import EVENTS

    EVENTS.metadata.create_all(engine)
    return EVENTS


def publish(engine: Engine, table: Table, events: list[BrokerEvent], raw: list[Any] | None = None) -> None:
    with engine.begin() as connection:
        for event in events:
            connection.execute(insert(table).values(sender_id=event.sender_id, data=json.dumps(event.data)))
        for value in raw or []:
            connection.execute(insert(table).values(sender_id="rest:x", data=value))
