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
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from actions.language import patron_language
from bot.crm.database import describe_error, make_engine, session_scope
from bot.crm.patrons import PatronKey, get_or_create_patron, patron_key
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


def with_crm(work: Callable[[Session], T], *, doing: str) -> T | None:
    """Run `work` in one CRM transaction; None (logged, without patron data) if the CRM failed."""
    try:
        with crm_session() as session:
            return work(session)
    except SQLAlchemyError as error:
        log.error("cannot %s: %s", doing, describe_error(error, get_settings().crm_database_url))
        return None
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
