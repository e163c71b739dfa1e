"""The knowledge base as the actions share it: one service per action server, warmed up at start."""

from __future__ import annotations

import functools
import logging
import os

from bot.knowledge.entries import Entry, KnowledgeError
from bot.knowledge.service import KnowledgeService
from bot.settings import get_settings

log = logging.getLogger(__name__)


# A question per language that `warm_up` asks, so the first patron's does not wait for the models.
WARM_UP_QUESTIONS = {"en": "when does the library open", "zh": "图书馆几点开门"}


@functools.cache
def knowledge_service() -> KnowledgeService:
    return KnowledgeService.from_settings(get_settings())


def faq_entry(entry_id: str | None, language: str) -> Entry | None:
    """The knowledge-base entry with this id, in this language (else any), if it still exists."""
    if not entry_id:
        return None
    try:
        entries = knowledge_service().entries()
    except KnowledgeError:
        return None
    matches = [entry for entry in entries if entry.id == entry_id]
    return next((entry for entry in matches if entry.lang == language), matches[0] if matches else None)


def faq_topic(entry_id: str | None) -> str | None:
    """The topic of the last answer, which feedback on it is about."""
    entry = faq_entry(entry_id, "en")
    return entry.topic if entry is not None else None


def warm_up() -> None:
    """Index the knowledge base and load the models before the first patron asks (seconds when the
    vectors are on disk from an earlier run; the first run encodes every text)."""
    try:
        retriever = knowledge_service().retriever()
    except KnowledgeError as error:
        log.error("cannot index the knowledge base: %s", error)
        return
    for lang, probe in WARM_UP_QUESTIONS.items():  # loads each model that encodes queries
        if lang in retriever.indexes:
            retriever.decide(probe, lang=lang)


# `patronbot run` sets this for the action server, which then answers /health only once warm.
if os.environ.get("PATRONBOT_WARM_UP") == "1":
    warm_up()
