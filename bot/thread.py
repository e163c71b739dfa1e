"""The thread of a conversation: the question a follow-up continues, the report just recorded, and
what the patron said about themselves, read from the conversation's events (Rasa's, as dictionaries)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.engagement.profile import described_patron_type
from bot.language import is_acknowledgement

# The intents answered from the knowledge base (the rule "library service questions are answered from
# the knowledge base" in data/rules.yml; tests/test_topics_and_eval_data.py checks that they agree).
KNOWLEDGE_INTENTS = frozenset(
    {
        "card_account",
        "borrowing_rules",
        "renewal",
        "holds",
        "returns",
        "fines_lost",
        "interlibrary_loan",
        "study_spaces",
        "tech_services",
        "e_resources",
        "events",
        "research_help",
    }
)
# Questions the bot answers, whose topic a follow-up can continue: those and the library's facts.
TOPIC_INTENTS = KNOWLEDGE_INTENTS | {"ask_hours", "ask_contact"}
# The key in a message's parse data that says how the conversation's thread was used to read it.
PARSE_KEY = "thread"
# The slot that holds the number of the complaint or suggestion recorded in the latest turn.
REPORT_SLOT = "last_report"
# Where a follow-up read alone and read with the thread's question find different answers (or none),
# each entry scores this share of its score with the thread and the rest of its own
# (Retriever.decide_in_context); chosen on tests/followups/dev/.
FOLLOW_UP_WEIGHT = 0.8
# How much of the thread goes into a follow-up's combined text (the classifier reads 256 characters).
MAX_QUERY = 200


@dataclass(frozen=True)
class Thread:
    """The question a follow-up may continue: its topic intent and the text it was answered from."""

    intent: str
    query: str


def _is_tap(text: str) -> bool:
    return text.startswith("/") and re.match(r"^/\w+", text) is not None


def session_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The events since the conversation's session started (all of them if none says so)."""
    found: list[Mapping[str, Any]] = []
    for event in reversed(list(events)):
        if event.get("event") in ("session_started", "restart"):
            break
        found.append(event)
    found.reverse()
    return found


def _intent(event: Mapping[str, Any]) -> str | None:
    parse = event.get("parse_data") or {}
    name = (parse.get("intent") or {}).get("name")
    return str(name) if name else None


def previous_question(events: Sequence[Mapping[str, Any]]) -> Thread | None:
    """The patron's latest message before this one, if it was a question the bot answered (taps in
    between do not count): nothing after "never mind", an out-of-scope question or a misunderstanding,
    and nothing from an earlier session. A follow-up resolved from the thread carries its combined
    text, so a third message continues the same thread."""
    for event in reversed(session_events(events)):
        if event.get("event") != "user":
            continue
        text = str(event.get("text") or "")
        if _is_tap(text) or is_acknowledgement(text):  # "ok" between question and follow-up
            continue
        intent = _intent(event)
        if intent not in TOPIC_INTENTS:
            return None
        resolved = (event.get("parse_data") or {}).get(PARSE_KEY) or {}
        query = str(resolved.get("query") or text)
        return Thread(intent=str(intent), query=query[-MAX_QUERY:])
    return None


def awaiting_answer(events: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the patron's next message answers the bot rather than asks: a form is running (its
    slot takes the message), or the bot's last words asked something (utter_ask_*, the rating after
    goodbye, "did you mean")."""
    for event in reversed(session_events(events)):
        kind = event.get("event")
        if kind == "active_loop":
            return bool(event.get("name"))
        if kind == "bot":
            said = str((event.get("metadata") or {}).get("utter_action") or "")
            if said.startswith("utter_ask_") or said in _ASKING:
                return True
        if kind == "user":
            return False
    return False


# Responses that ask the patron something without being named utter_ask_*.
_ASKING = frozenset({"utter_goodbye_rate", "utter_faq_did_you_mean"})


def report_just_recorded(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The number of the complaint or suggestion recorded (or added to) in the bot's latest turn."""
    number = None
    for event in reversed(session_events(events)):
        if event.get("event") == "user":
            return number
        if event.get("event") == "slot" and event.get("name") == REPORT_SLOT and number is None:
            value = event.get("value")
            number = str(value) if value else None
    return None


def told_patron_type(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The patron type the patron said was theirs earlier in this conversation ("我是研究生，…", "I'm
    faculty"), the latest if they said more than one; never one named for someone else."""
    for event in reversed(session_events(events)):
        if event.get("event") != "user":
            continue
        text = str(event.get("text") or "")
        if _is_tap(text):
            continue
        found = described_patron_type(text, asked=False)
        if found is not None:
            return found
    return None


# A message that leans on what came before: it opens with "and", "what about", "那", ends with 呢,
# points back ("it", "there", "它", "那里"), or is a fragment too short to be a question of its own.
_LEANS_EN = re.compile(
    r"^(?:and|but|so|also|then|what about|how about|what if|same for|and for|and what about|ok and|"
    r"okay and)\b|\b(?:it|its|it's|that|those|them|they|this one|that one|one)\b"
    r"|(?<!is )(?<!are )\bthere\b(?! is| are)",
    re.IGNORECASE,
)
_LEANS_ZH = re.compile(
    r"^(?:那|那么|还有|另外|那如果|如果是|要是|换成)|呢[?？。!！~～]*$|它|这个|那个|那里|那边|这里|该"
)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_WORD = re.compile(r"[A-Za-z0-9'-]+")


def points_back(text: str) -> bool:
    """Whether a message reads as a follow-up of the one before ("what about e-books?", "那续借呢",
    "要多久", "where is it") rather than a question that stands on its own: it opens with "and" or
    "what about", ends with 呢, points back ("it", "there", "它", "那里"), or, in Chinese, is a
    fragment of five characters or fewer."""
    cleaned = text.strip()
    if not cleaned or _is_tap(cleaned):
        return False
    chinese = len(_CJK.findall(cleaned))
    if chinese:
        return bool(_LEANS_ZH.search(cleaned)) or chinese <= 5
    return bool(_LEANS_EN.search(cleaned)) and len(_WORD.findall(cleaned)) <= 8


def is_fragment(text: str) -> bool:
    """Whether a message is too short to be a question of its own: four words, or five Chinese
    characters, at most ("which floor", "在几楼")."""
    cleaned = text.strip()
    chinese = len(_CJK.findall(cleaned))
    return chinese <= 5 if chinese else len(_WORD.findall(cleaned)) <= 4


def combined_query(thread: Thread, text: str) -> str:
    """The text a follow-up is read as: the thread's question, then the follow-up."""
    return f"{thread.query} {text.strip()}"[-MAX_QUERY:]
