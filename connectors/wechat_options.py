"""A WeChat patron's typed option: WeChat has no buttons, so the bot numbers them and the patron types a
number or a title, which becomes that button's payload."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.language import is_payload
from bot.outbound.outbox import buttons_sent_since
from bot.pseudonyms import fingerprint
from bot.redaction import describe_failure
from connectors.typed_buttons import MAX_TITLE_CHARS, last_written, offered_buttons, typed_payload
from connectors.wechat_messages import Inbound, numbered_payload

log = logging.getLogger(__name__)


async def as_tapped(agent: Any, engine: Engine, inbound: Inbound) -> tuple[str, dict[str, Any]]:
    """An offered option's number or title typed by the patron becomes that button's payload (the
    words kept in the metadata as `typed`); anything else goes as it came."""
    text = inbound.text
    if is_payload(text) or len(text) > MAX_TITLE_CHARS:
        return text, inbound.metadata
    try:
        tracker = await agent.tracker_store.retrieve(inbound.sender) if agent is not None else None
    except Exception as error:  # the turn reads the tracker again and reports a failure itself
        log.warning(
            "wechat: no options to match for %s (%s)", fingerprint(inbound.sender), describe_failure(error)
        )
        return text, inbound.metadata
    if tracker is None:
        return text, inbound.metadata
    buttons = offered_buttons(tracker.events) or await asyncio.to_thread(
        outbox_options, engine, inbound.sender, last_written(tracker.events)
    )
    payload = numbered_payload(text, buttons) or typed_payload(text, buttons)
    if payload is None:
        return text, inbound.metadata
    return payload, {**inbound.metadata, "typed": text}


def outbox_options(engine: Engine, sender: str, since: float | None) -> list[Mapping[str, Any]]:
    """The options of a campaign or staff message sent since the patron last wrote (never in the
    tracker, as no Rasa turn produced them)."""
    after = dt.datetime.fromtimestamp(since, tz=dt.UTC) if since is not None else None
    with session_scope(engine) as session:
        return list(buttons_sent_since(session=session, recipient=sender, since=after))
