"""A message read as the answer to a campaign's follow-up question the bot asked just before it.

The question was asked by action_ask_followup (actions/outreach.py), which set the followup_delivery
and followup_asks slots. The patron's next message answers it when it gives what was asked (a rating
1-5 for csat, 0-10 for nps, yes or no for helpful) or, as their first message after the question,
when it tells rather than asks ("not really, the book never came"): it then gets the intent
answer_followup, which records it against the question. A question ("what time do you open?"), a
command that acts wherever it is said ("stop", "pause", a librarian, privacy requests), a greeting or
thanks are read as they are, and the question stays open for the patron's next LATER messages, then
only a plain rating or yes/no still answers it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.engagement.feedback import is_cancel, parse_csat, parse_nps
from bot.language import is_acknowledgement, is_question
from bot.outreach.questions import yes_or_no
from bot.thread import session_events

ANSWER_FOLLOWUP = "answer_followup"
ASK_ACTION = "action_ask_followup"
DELIVERY_SLOT = "followup_delivery"
ASKS_SLOT = "followup_asks"
# The patron's messages after the question during which a plain rating or yes/no still answers it.
LATER = 3
# Intents that act or are said in passing rather than answer, when the classifier is this sure of
# them: the patron's "stop", "暂停推送", "转人工" act, "hi" and "thanks" are not a rating.
NOT_ANSWERS = frozenset(
    {
        "unsubscribe",
        "pause_messages",
        "resume_messages",
        "subscribe",
        "human_handoff",
        "privacy_delete",
        "privacy_what_we_know",
        "switch_language",
        "greet",
        "goodbye",
        "thanks",
        "bot_challenge",
        "cancel",
    }
)
SURE = 0.6


@dataclass(frozen=True)
class OpenQuestion:
    """The follow-up question waiting for an answer in this session."""

    delivery: str
    asks: str  # csat, nps, helpful, open
    messages_since: int  # the patron's messages since it was asked


def open_question(events: Sequence[Mapping[str, Any]]) -> OpenQuestion | None:
    """The follow-up question asked in this session and not yet answered, if there is one: set by
    action_ask_followup (slots carried over into a new session do not count), cleared by its answer;
    none while a form runs (the form's question is the one being answered)."""
    delivery: str | None = None
    asks = "open"
    since = 0
    last_action = ""
    in_form = False
    for event in session_events(events):
        kind = event.get("event")
        if kind == "action":
            last_action = str(event.get("name") or "")
        elif kind == "active_loop":
            in_form = bool(event.get("name"))
        elif kind == "slot" and event.get("name") == DELIVERY_SLOT:
            value = event.get("value")
            if not value:
                delivery = None
            elif last_action == ASK_ACTION:
                delivery, since = str(value), 0
        elif kind == "slot" and event.get("name") == ASKS_SLOT and event.get("value"):
            asks = str(event.get("value"))
        elif kind == "user" and not (event.get("metadata") or {}).get("is_external"):
            since += 1
    if delivery is None or in_form or since > LATER:
        return None
    return OpenQuestion(delivery=delivery, asks=asks, messages_since=since)


def gives_what_was_asked(text: str, asks: str) -> bool:
    """Whether a message is the rating or yes/no the question asked for."""
    if asks == "csat":
        return parse_csat(text) is not None
    if asks == "nps":
        return parse_nps(text) is not None
    if asks == "helpful":
        return yes_or_no(text) is not None
    return False


def answers(text: str, intent: str | None, confidence: float, question: OpenQuestion) -> bool:
    """Whether the patron's message answers the open follow-up question (see the module's docstring)."""
    cleaned = text.strip()
    if not cleaned or cleaned.startswith("/") or is_question(cleaned, keywords_ask=False):
        return False
    if question.asks != "helpful" and is_acknowledgement(cleaned):
        return False  # "ok", "好的" acknowledge the question, they rate nothing ("yes" answers helpful)
    if intent in NOT_ANSWERS and confidence >= SURE and not gives_what_was_asked(cleaned, question.asks):
        return False
    if gives_what_was_asked(cleaned, question.asks):
        return True
    if question.messages_since > 0:
        return False  # later on, only a plain rating or yes/no still answers it
    return not (is_acknowledgement(cleaned) or is_cancel(cleaned))
