"""What every CRM-writing action shares: the engine, the patron behind a conversation, the facts."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from rasa_sdk import Tracker
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from actions.language import patron_language
from bot.crm.database import describe_error, make_engine, session_scope
from bot.crm.patrons import PatronKey, get_or_create_patron, patron_key
from bot.crm.turn_effects import once_per_message
from bot.knowledge.facts import FactsError, LibraryFacts, load_facts
from bot.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@functools.cache
def crm_engine() -> Engine:
    return make_engine(get_settings().crm_database_url)


def tracker_key(tracker: Tracker) -> PatronKey:
    return patron_key(tracker.sender_id, tracker.get_latest_input_channel())


def patron_id_for(session: Session, tracker: Tracker) -> int:
    """The CRM patron behind this conversation, created on first contact in the language they wrote
    (the ingester may not have copied the conversation yet when staff answer it)."""
    return get_or_create_patron(session=session, key=tracker_key(tracker), language=patron_language(tracker))


@contextmanager
def crm_session() -> Iterator[Session]:
    with session_scope(crm_engine()) as session:
        yield session


def with_crm(work: Callable[[Session], T], *, doing: str, retry_conflict: bool = False) -> T | None:
    """Run `work` in one CRM transaction; None (logged, without patron data) if the CRM failed.
    `retry_conflict`: a key another transaction wrote first is read in a second transaction."""
    for attempt in (1, 2) if retry_conflict else (2,):
        try:
            with crm_session() as session:
                return work(session)
        except SQLAlchemyError as error:
            if attempt == 1 and isinstance(error, IntegrityError):
                continue
            log.error("cannot %s: %s", doing, describe_error(error, get_settings().crm_database_url))
        except Exception as error:  # the patron gets a polite reply, never a 500
            # Where it failed, not the error's message: that may quote what the patron wrote.
            frame = traceback.extract_tb(error.__traceback__)[-1]
            log.error(
                "cannot %s: %s at %s:%s (%s)",
                doing,
                type(error).__name__,
                Path(frame.filename).name,
                frame.lineno,
                frame.name,
            )
        return None
    return None


def with_crm_once(work: Callable[[Session], int], *, tracker: Tracker, action: str, doing: str) -> int | None:
    """`with_crm`, once per patron message: a turn run again after a kill (the same message id, as a
    taken-over Telegram or WeChat update has) gets what the first run recorded instead of a second row."""
    message_id = (tracker.latest_message or {}).get("message_id")
    if not isinstance(message_id, str) or not message_id:
        return with_crm(work, doing=doing)

    def once(session: Session) -> int:
        return once_per_message(
            session=session, sender=tracker.sender_id, message_id=message_id, action=action, record=work
        )

    # The same message run twice at once: the second insert of its key fails, and reads the first's.
    return with_crm(once, doing=doing, retry_conflict=True)


def library_facts() -> LibraryFacts | None:
    settings = get_settings()
    try:
        return load_facts(settings.path(settings.library_facts))
    except FactsError as error:
        log.error("cannot read the library's facts: %s", error)
        return None


def privacy_url() -> str:
    facts = library_facts()
    return facts.privacy_notice if facts else "-"
