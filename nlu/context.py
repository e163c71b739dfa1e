"""A message read with the conversation before it: a follow-up question takes the topic of the one it
follows, a detail sent after a complaint is recorded is read as part of it, and an answer to a
campaign's follow-up question is read as that (nlu/answers.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message

from bot.knowledge import query_vectors
from bot.language import is_acknowledgement, is_question
from bot.thread import (
    PARSE_KEY,
    TOPIC_INTENTS,
    awaiting_answer,
    combined_query,
    is_fragment,
    points_back,
    previous_question,
    report_just_recorded,
    session_events,
)
from nlu.answers import ANSWER_FOLLOWUP, answers, open_question

# The intent a message gets when it adds to the complaint or suggestion just recorded.
ADD_DETAIL = "add_detail"
# A message after a report that the classifier reads as one of these, this sure, does that instead of
# adding to the report: a new complaint, thanks, goodbye, a librarian, stop, privacy requests.
_ACTS_INSTEAD = frozenset(
    {
        "greet",
        "goodbye",
        "thanks",
        "cancel",
        "bot_challenge",
        "human_handoff",
        "subscribe",
        "unsubscribe",
        "pause_messages",
        "resume_messages",
        "privacy_delete",
        "privacy_what_we_know",
        "give_feedback",
        "switch_language",
        "complaint",
        "suggestion",
        "inform_profile",
    }
)
ACTS_INSTEAD_CONFIDENCE = 0.6
# Below this, a question's own reading is a guess that the thread's topic may settle, when the topic
# scores at least MIN_TOPIC with the thread (FallbackClassifier's threshold: below it, not understood).
WEAK = 0.5
MIN_TOPIC = 0.15
# Below this, a question's own reading is a guess that the thread's topic may settle, when the topic
# scores at least MIN_TOPIC with the thread (FallbackClassifier's threshold: below it, not understood).
WEAK = 0.5
MIN_TOPIC = 0.15
# The conversation's events read, at most (the session's, newest last).
MAX_EVENTS = 60

# Ranks the intents of a text: [(intent, confidence), ...] best first, and the text's packed vector.
Rank = Callable[[str], tuple[list[dict[str, Any]], dict[str, str] | None]]


def recent_events(tracker: Any) -> list[Mapping[str, Any]]:
    """The tracker's latest events of this session, as dictionaries (the newest MAX_EVENTS)."""
    if tracker is None:
        return []
    tail = list(tracker.events)[-MAX_EVENTS:]
    return session_events(event.as_dict() for event in tail)


def read_in_context(message: Message, events: Sequence[Mapping[str, Any]], rank: Rank) -> None:
    """Reads `message` (already classified on its own) with the conversation's `events`: a detail
    after a recorded report becomes add_detail; a follow-up that leans on the question before it is
    classified together with that question when that makes the classifier surer, and the knowledge
    base reads it with that question (PARSE_KEY). A message that stands on its own is left as it is."""
    text = str(message.get(TEXT) or "").strip()
    if not text or text.startswith("/") or not events:
        return
    intent = message.get(INTENT) or {}
    name = intent.get(INTENT_NAME_KEY)
    confidence = float(intent.get(PREDICTED_CONFIDENCE_KEY) or 0.0)
    question = open_question(events)
    if question is not None and answers(text, name, confidence, question):
        _set_intent(message, ANSWER_FOLLOWUP)
        return
    report = report_just_recorded(events)
    if report is not None:
        if adds_detail(text, name, confidence):
            _set_intent(message, ADD_DETAIL)
            message.set(PARSE_KEY, {"report": report}, add_to_output=True)
        return
    thread = previous_question(events)
    if thread is None or is_acknowledgement(text) or awaiting_answer(events):
        return
    if name in _ACTS_INSTEAD and confidence >= ACTS_INSTEAD_CONFIDENCE and not _asks_about_thread(text, name):
        return
    query = combined_query(thread, text)
    chosen, threaded, vector = None, False, None
    # Only a message that may lean on the thread is classified with it (a second encoding, about
    # 15 ms): one that points back, a fragment, or a question the classifier cannot place.
    if points_back(text) or is_fragment(text) or (confidence < WEAK and asks(text)):
        ranking, vector = rank(query)
        chosen, threaded = _read_with_thread(
            text, name, confidence, thread_intent=thread.intent, ranking=ranking
        )
    if chosen is not None:
        message.set(INTENT, dict(chosen), add_to_output=True)
        message.set(INTENT_RANKING_KEY, _first(chosen, ranking), add_to_output=True)
        name = chosen[INTENT_NAME_KEY]
    if name in TOPIC_INTENTS:
        # The knowledge base reads it with the thread when it leans on it (`threaded`); otherwise only
        # when the message alone finds no answer (actions/knowledge.py).
        resolved: dict[str, Any] = {"follows": thread.intent, "query": query, "threaded": threaded}
        if vector is not None:
            resolved[query_vectors.PARSE_KEY] = vector
        message.set(PARSE_KEY, resolved, add_to_output=True)


def _set_intent(message: Message, name: str) -> None:
    """Give the message an intent the conversation decides (certain, first in the ranking)."""
    chosen = {INTENT_NAME_KEY: name, PREDICTED_CONFIDENCE_KEY: 1.0}
    ranking = [r for r in message.get(INTENT_RANKING_KEY) or [] if r.get(INTENT_NAME_KEY) != name]
    message.set(INTENT, chosen, add_to_output=True)
    message.set(INTENT_RANKING_KEY, [dict(chosen), *ranking], add_to_output=True)


# Requests a follow-up question can be mistaken for: "快到期了会提醒我吗" after a question about loans
# asks about due-date reminders, not for the library's messages; "多少分算过" about the quiz's pass mark.
_MISTAKEN_IN_A_THREAD = frozenset(
    {"subscribe", "unsubscribe", "pause_messages", "resume_messages", "give_feedback", "cancel"}
)


def _asks_about_thread(text: str, intent: str | None) -> bool:
    """Whether a message read as such a request is a question, which the thread may explain."""
    return intent in _MISTAKEN_IN_A_THREAD and is_question(text, keywords_ask=False)


def _read_with_thread(
    text: str, name: str | None, confidence: float, *, thread_intent: str, ranking: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, bool]:
    """The intent of a message read with the thread (`ranking`: the intents of the thread's question
    and the message together), or None where the message's own reading stands; and whether the
    message leans on the thread, so that the knowledge base reads it with the thread too."""
    topical = [r for r in ranking if r[INTENT_NAME_KEY] in TOPIC_INTENTS]
    services = [r for r in topical if r[INTENT_NAME_KEY] not in _FACTS]
    pointing = points_back(text)
    if (
        name == "ask_contact"
        and thread_intent not in _FACTS
        and (pointing or is_fragment(text))
        and not _NAMES_LIBRARY.search(text)
        and services
    ):
        # "where is it", "which floor", "在几楼" after a service question: where that service is, not
        # the library's address.
        return services[0], True
    if not topical:
        return None, False
    best = ranking[0]
    # Read with the thread when the message points back ("where is it", "那续借呢", "what about
    # e-books?"), or is a fragment the thread makes the classifier surer of ("which floor"); a
    # question with words of its own ("存包的柜子在哪", "what's the weather") keeps its own reading.
    surer = float(best[PREDICTED_CONFIDENCE_KEY]) > confidence
    if best is topical[0] and (pointing or (is_fragment(text) and surer)):
        return best, True
    # A question the classifier cannot place, right after an answer ("快到期了会提醒我吗" after a
    # question about loans), is a question about the thread's likeliest topic, if that is at all
    # likely; the knowledge base reads the message alone first.
    if confidence < WEAK and asks(text) and float(topical[0][PREDICTED_CONFIDENCE_KEY]) >= MIN_TOPIC:
        return topical[0], False
    return None, False


def _first(chosen: dict[str, Any], ranking: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ranking with `chosen` first and none listed above it, as the classifier ranks (FallbackClassifier
    reads a second intent above the first as ambiguity)."""
    top = float(chosen[PREDICTED_CONFIDENCE_KEY])
    rest = [
        {**r, PREDICTED_CONFIDENCE_KEY: min(float(r[PREDICTED_CONFIDENCE_KEY]), top)}
        for r in ranking
        if r is not chosen
    ]
    return [dict(chosen), *rest]


# Questions answered from the library's facts file rather than the knowledge base.
_FACTS = frozenset({"ask_contact", "ask_hours"})
# A "where" that names the library, its address or how to reach it is about the library itself.
_NAMES_LIBRARY = re.compile(
    r"图书馆|本馆|贵馆|地址|电话|邮箱|\b(?:library|address|phone|e-?mail|contact)\b", re.IGNORECASE
)

# Chinese words that ask anywhere in a short follow-up ("要几天出报告", "多少分算过", "咋办"), beyond the
# ones bot.language.is_question reads (which also decides what a form takes as an answer).
_ASKS_ZH = re.compile(r"多少|几|多久|多长|咋|啥|什么|哪|怎么|是不是|要不要|能否")


def asks(text: str) -> bool:
    """Whether a message asks something, as a follow-up would."""
    return is_question(text) or bool(_ASKS_ZH.search(text))


def adds_detail(text: str, intent: str | None, confidence: float) -> bool:
    """Whether a message right after a recorded complaint or suggestion adds to it ("三楼东边", "every
    evening after 8"): it tells rather than asks, and is not a sure request for something else."""
    if is_acknowledgement(text) or is_question(text, keywords_ask=False):
        return False
    return not (intent in _ACTS_INSTEAD and confidence >= ACTS_INSTEAD_CONFIDENCE)
