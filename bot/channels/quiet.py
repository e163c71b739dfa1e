"""The bot's "nothing to say" marker: a turn answered with silence on purpose, not a failed one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Sent as the turn's only message (Rasa's custom JSON) when a librarian has the conversation: the channels
# send nothing and do not apologise, and the CRM records no reply.
QUIET: dict[str, str] = {"patronbot": "quiet"}


def is_quiet(message: Any) -> bool:
    """Whether a channel message (or a tracker's bot event data) is the quiet marker."""
    return isinstance(message, dict) and message.get("custom") == QUIET


def spoken(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the patron should get: all but the quiet marker."""
    return [message for message in messages if not is_quiet(message)]
