"""The ingester: Rasa's events, read from its event broker, become CRM interactions, each once."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from bot.channels.quiet import is_quiet
from bot.crm.conversations import ConversationBook, link_to_conversations
from bot.crm.database import erasure_lock
from bot.crm.models import ChannelIdentity, Conversation, Interaction, Patron
from bot.crm.patrons import PatronKey, patron_key, touch_patrons
from bot.language import LANGUAGES, detect_language, is_payload
from bot.privacy.erasure import erased_at
from bot.privacy.requests import note_requests, requested_in

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerEvent:
    """One event as Rasa published it: the conversation's sender id and the event's dict."""

    sender_id: str
    data: dict[str, Any]


class IngestState:
    """What the ingester remembers between batches: the last action run in each conversation, which
    produced the bot message after it.

    A turn's events arrive together, so the memory is short and bounded: at most `max_senders`
    conversations, each for at most `max_age` seconds, and an erased patron's are forgotten at once.
    """

    def __init__(self, *, max_senders: int = 10_000, max_age: float = 600.0) -> None:
        self.max_senders = max_senders
        self.max_age = max_age
        self._actions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def remember_action(self, sender: str, action: str) -> None:
        self._actions[sender] = (action, time.monotonic())
        self._actions.move_to_end(sender)
        self._expire()

    def last_action(self, sender: str) -> str | None:
        self._expire()
        remembered = self._actions.get(sender)
        return remembered[0] if remembered else None

    def forget(self, senders: Iterable[str]) -> None:
        for sender in senders:
            self._actions.pop(sender, None)

    def senders(self) -> set[str]:
        return set(self._actions)

    def _expire(self) -> None:
        oldest = time.monotonic() - self.max_age
        while self._actions and (
            len(self._actions) > self.max_senders or next(iter(self._actions.values()))[1] < oldest
        ):
            self._actions.popitem(last=False)


def event_key(event: BrokerEvent) -> str:
    """A digest that is the same for a redelivered copy of an event and differs between events.

    A patron's message with a message id (a channel's update id, `telegram:<update_id>`, or Rasa's own
    random one) is keyed by that id: a turn run again after its process was killed between publishing
    and storing it (the update taken over) is the same message, not a second one."""
    message_id = event.data.get("message_id")
    if event.data.get("event") == "user" and isinstance(message_id, str) and message_id:
        return hashlib.sha256(f"{event.sender_id}\nuser\n{message_id}".encode()).hexdigest()
    canonical = json.dumps(event.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{event.sender_id}\n{canonical}".encode()).hexdigest()


def _timestamp(data: dict[str, Any]) -> dt.datetime:
    """The event's time; now when it has none, or one that is not a number or not a date."""
    value = data.get("timestamp")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):  # out of range, or NaN
            pass
    return dt.datetime.now(dt.UTC)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


@functools.cache
def _length(model: Any, column: str) -> int | None:
    length = getattr(model.__table__.c[column].type, "length", None)
    return int(length) if length else None


def _fit(model: Any, column: str, value: object) -> str | None:
    """`value` as a string cut to the length of the model's column (None stays None)."""
    text = _text(value)
    length = _length(model, column)
    return text[:length] if text is not None and length else text


def _triggered(data: dict[str, Any]) -> bool:
    """A "user" event the library made, not the patron: an intent triggered through Rasa's API (a
    follow-up question, "EXTERNAL: followup_question"). It is no message from the patron: not stored
    as one, and it makes no one active."""
    return data.get("event") == "user" and bool(_mapping(data.get("metadata")).get("is_external"))


def _user_language(data: dict[str, Any]) -> str | None:
    """The language entity when it names one of the bot's languages, else the text's language.

    A patron can type any entity value (`/greet{"language":"…"}`), and Rasa does not check it.
    """
    entities = _mapping(data.get("parse_data")).get("entities")
    for entity in entities if isinstance(entities, list) else []:
        if isinstance(entity, dict) and entity.get("entity") == "language":
            value = entity.get("value")
            if isinstance(value, str) and value in LANGUAGES:
                return value
    text = _text(data.get("text")) or ""
    return None if is_payload(text) else detect_language(text)  # a tap says nothing of the language


def _patron_text(data: dict[str, Any]) -> str | None:
    """What the patron wrote: a button's title typed rather than tapped reaches Rasa as the button's
    payload, and the channel keeps the words in the message's metadata (`typed`)."""
    typed = _mapping(data.get("metadata")).get("typed")
    return _text(typed) if isinstance(typed, str) and typed else _text(data.get("text"))


def _patron_key(sender_id: str, input_channel: object) -> PatronKey:
    key = patron_key(sender_id, input_channel if isinstance(input_channel, str) else None)
    return PatronKey(
        channel=_fit(ChannelIdentity, "channel", key.channel) or "",
        external_id=_fit(ChannelIdentity, "external_id", key.external_id) or "",
    )


def ingest_events(*, session: Session, events: Sequence[BrokerEvent], state: IngestState) -> int:
    """Write the interactions these events describe; return how many new rows were written.

    User and bot events become interactions; a session_started event begins a new conversation;
    action events tell who produced the next bot message; feedback and suggestions written during
    these turns are linked to their conversation. Runs inside the caller's transaction, so a
    batch lands whole or not at all. An event that is not a dict is ignored; a field of the wrong type
    or out of range is left out or given a default, and a string is cut to its column's length.
    """
    events = [event for event in events if isinstance(event.data, dict)]
    erasure_lock(session=session, exclusive=False)  # no erasure commits between this check and the writes
    erased = erased_at(session=session, senders={event.sender_id for event in events})
    if erased:
        # Late events of an erased patron (from before the erasure) are not written as a new patron.
        events = [
            event
            for event in events
            if event.sender_id not in erased or _timestamp(event.data) > erased[event.sender_id]
        ]
    relevant = [
        e
        for e in events
        if e.data.get("event") in ("user", "bot", "session_started", "action") and not _triggered(e.data)
    ]
    keys = patron_keys(relevant)
    written = _ingest_messages(session=session, events=relevant, keys=keys, state=state)
    if relevant:
        # Feedback and suggestions the actions wrote during these turns get the conversations above.
        link_to_conversations(session=session)
    erasures = requested_in(relevant)
    if erasures:
        session.flush()
        note_requests(session=session, keys={keys[sender]: at for sender, at in erasures.items()})
    return written


def patron_keys(events: Sequence[BrokerEvent]) -> dict[str, PatronKey]:
    """Each conversation's patron, as the CRM knows them: the channel and the channel's own id, from the
    conversation id and the channel of its latest user event. The one derivation of a patron from
    events: their messages and their erasure requests are keyed alike."""
    keys: dict[str, PatronKey] = {}
    for event in events:
        if event.sender_id not in keys or event.data.get("event") == "user":
            input_channel = event.data.get("input_channel") if event.data.get("event") == "user" else None
            keys[event.sender_id] = _patron_key(event.sender_id, input_channel)
    return keys


def _what_patrons_showed(
    messages: Sequence[BrokerEvent], keys: dict[str, PatronKey]
) -> tuple[dict[PatronKey, dt.datetime], dict[PatronKey, str], dict[PatronKey, str]]:
    """Per patron in a batch: when they were last seen, their language, and how they arrived."""
    last_seen: dict[PatronKey, dt.datetime] = {}
    languages: dict[PatronKey, str] = {}
    sources: dict[PatronKey, str] = {}
    for event in messages:
        if event.data.get("event") == "user":
            key = keys[event.sender_id]
            last_seen[key] = max(_timestamp(event.data), last_seen.get(key, _timestamp(event.data)))
            language = _fit(Patron, "language", _user_language(event.data))
            if language:
                languages[key] = language
            # How the patron arrived (a deep link's payload, a QR code's scene): the first one is kept.
            raw = _mapping(event.data.get("metadata")).get("source")
            source = _fit(ChannelIdentity, "source", raw.strip()) if isinstance(raw, str) else None
            if source and key not in sources:
                sources[key] = source
    return last_seen, languages, sources


def _ingest_messages(
    *,
    session: Session,
    events: Sequence[BrokerEvent],
    keys: dict[str, PatronKey],
    state: IngestState,
) -> int:
    relevant = events
    messages = [e for e in relevant if e.data.get("event") in ("user", "bot")]
    if not messages and not any(e.data.get("event") == "session_started" for e in relevant):
        _remember_actions(relevant, state)
        return 0
    last_seen, languages, sources = _what_patrons_showed(messages, keys)
    patron_ids = touch_patrons(
        session=session, keys=set(keys.values()), last_seen=last_seen, languages=languages, sources=sources
    )

    # Rasa's conversation id as the conversation table holds it (cut to its column, like every string).
    conversation_ids = {sender: _fit(Conversation, "rasa_sender_id", sender) or "" for sender in keys}
    starts = {
        (conversation_ids[event.sender_id], _timestamp(event.data))
        for event in relevant
        if event.data.get("event") == "session_started"
    }
    book = ConversationBook(
        session=session, rasa_sender_ids=set(conversation_ids.values()), session_starts=starts
    )
    last_language: dict[str, str | None] = {}
    known_languages: dict[int, str | None] | None = None  # the patrons' languages, read when needed
    rows: list[dict[str, Any]] = []
    for event in relevant:
        data, sender = event.data, event.sender_id
        kind = data.get("event")
        key = keys[sender]
        at = _timestamp(data)
        if kind == "action":
            state.remember_action(sender, str(data.get("name") or ""))
            continue
        if kind == "bot" and is_quiet(data.get("data")):  # the bot stayed silent on purpose: nothing said
            continue
        conversation_id = conversation_ids[sender]
        channel = _fit(Conversation, "channel", key.channel) or ""
        if kind == "session_started":
            book.start(patron_id=patron_ids[key], channel=channel, rasa_sender_id=conversation_id, at=at)
            continue
        conversation = book.for_message(
            patron_id=patron_ids[key], channel=channel, rasa_sender_id=conversation_id, at=at
        )
        text = _patron_text(data) if kind == "user" else _text(data.get("text"))
        row: dict[str, Any] = {
            "patron_id": patron_ids[key],
            "conversation": conversation,
            "channel": _fit(Interaction, "channel", key.channel),
            "text": text,
            "event_key": event_key(event),
            "occurred_at": at,
        }
        if kind == "user":
            intent = _mapping(_mapping(data.get("parse_data")).get("intent"))
            language = _user_language(data)
            if language is None:  # a tap, or no letters: the conversation's language so far
                if sender not in last_language and known_languages is None:
                    known_languages = _languages(session, set(patron_ids.values()))
                language = last_language.get(sender) or (known_languages or {}).get(patron_ids[key])
            last_language[sender] = language
            row |= {
                "direction": "in",
                "intent": _fit(Interaction, "intent", intent.get("name")),
                "confidence": _number(intent.get("confidence")),
                "language": _fit(Interaction, "language", language),
                "produced_by": None,
            }
        else:
            produced_by = _mapping(data.get("metadata")).get("utter_action") or state.last_action(sender)
            row |= {
                "direction": "out",
                "intent": None,
                "confidence": None,
                "language": _fit(
                    Interaction, "language", detect_language(text or "") or last_language.get(sender)
                ),
                "produced_by": _fit(Interaction, "produced_by", produced_by),
            }
        rows.append(row)
    session.flush()  # gives the new conversations their ids
    for row in rows:
        owner: Conversation = row.pop("conversation")
        row["conversation_id"] = owner.id
    return _insert_new(session=session, rows=rows) if rows else 0


def _languages(session: Session, patron_ids: set[int]) -> dict[int, str | None]:
    rows = session.execute(select(Patron.id, Patron.language).where(Patron.id.in_(sorted(patron_ids))))
    return {int(patron_id): language for patron_id, language in rows}


def _remember_actions(events: Sequence[BrokerEvent], state: IngestState) -> None:
    for event in events:
        if event.data.get("event") == "action":
            state.remember_action(event.sender_id, str(event.data.get("name") or ""))


def _insert_new(*, session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose event_key is not stored yet (safe against a concurrent ingester too)."""
    unique: dict[str, dict[str, Any]] = {row["event_key"]: row for row in rows}
    dialect = session.get_bind().dialect.name
    table: Any = Interaction.__table__
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=["event_key"])
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing(index_elements=["event_key"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported CRM database dialect: {dialect}")
    result: Any = session.execute(statement, list(unique.values()))
    return int(result.rowcount or 0)


def database_failed(error: BaseException) -> bool:
    """Whether `error` is the database's (unreachable, read-only, full, locked, schema or rights missing),
    so the whole batch is retried later, rather than one event's (a value the database refuses, or a
    bug meeting an unexpected event), which is set aside so that the events after it still flow."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "pgcode", None)  # PostgreSQL's; SQLite's errors have none
        # Classes 22 (data exception) and 23 (integrity constraint violation) are the row's fault.
        return isinstance(sqlstate, str) and not sqlstate.startswith(("22", "23"))
    return False


def event_kind(event: BrokerEvent) -> str:
    """The event's type, for a log line (Rasa's names; anything else is shown as "?")."""
    kind = event.data.get("event") if isinstance(event.data, dict) else None
    return kind if isinstance(kind, str) and kind.isidentifier() and len(kind) <= 40 else "?"
