"""A turn found again in Rasa's tracker by its user event's message id, so that an update a dead process
left is answered with the replies its turn already made instead of running the turn a second time."""

from __future__ import annotations

from typing import Any


async def tracker_of(agent: Any, sender: str, *, full: bool) -> Any:
    """The conversation's tracker (all sessions when `full`), or None before Rasa's agent is ready."""
    store = getattr(agent, "tracker_store", None)
    if store is None:
        return None
    if full and hasattr(store, "retrieve_full_tracker"):
        return await store.retrieve_full_tracker(sender)
    return await store.retrieve(sender)


async def replies_of_turn(agent: Any, sender: str, wanted: str) -> list[dict[str, Any]] | None:
    """The replies of the turn whose user event has the message id `wanted`, if the tracker has it (Rasa
    saves a turn's events together, at its end); None if the turn never happened."""
    tracker = await tracker_of(agent, sender, full=True)
    if tracker is None:
        return None
    replies: list[dict[str, Any]] | None = None
    for event in tracker.events:
        kind = getattr(event, "type_name", None)
        if kind == "user":
            if replies is not None:
                break
            if getattr(event, "message_id", None) == wanted:
                replies = []
        elif kind == "bot" and replies is not None:
            data = getattr(event, "data", None) or {}
            replies.append({**data, "text": getattr(event, "text", None) or ""})
    return replies
