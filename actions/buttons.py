"""Buttons whose payloads carry entities ('/give_feedback{"csat": "4"}'), built here because Rasa
would try to fill the braces of a payload written in domain.yml as slot placeholders."""

from __future__ import annotations

import json
import re

from rasa_sdk import Tracker

from bot.language import Language

Button = dict[str, str]

PATRON_TYPE_TITLES: dict[str, tuple[str, str]] = {
    "undergraduate": ("本科生", "Undergraduate"),
    "postgraduate": ("研究生", "Postgraduate"),
    "faculty": ("教师", "Faculty"),
    "staff": ("职工", "Staff"),
    "public": ("校外读者", "Visitor / public"),
}
INTEREST_TITLES: dict[str, tuple[str, str]] = {
    "e_resources": ("数据库与电子资源", "Databases and e-resources"),
    "new_books": ("新书", "New books"),
    "events": ("讲座与培训", "Events and workshops"),
    "research_help": ("科研支持", "Research help"),
}
SKIP_TITLE = ("跳过", "Skip")
HELPFUL_TITLES = {"zh": ("👍 有帮助", "👎 没帮助"), "en": ("👍 Helpful", "👎 Not helpful")}
NONE_OF_THESE_TITLE = ("都不是，找馆员", "None of these: ask a librarian")


def payload(intent: str, **entities: str) -> str:
    """What a tap sends: the intent and its entities, in Rasa's shortcut syntax."""
    return f"/{intent}{json.dumps(entities, ensure_ascii=False)}" if entities else f"/{intent}"


_PAYLOAD = re.compile(r"/(?P<intent>[A-Za-z_]\w*)(?P<entities>\{.*\})?", re.DOTALL)


def is_tap(text: str, intent: str | None = None) -> bool:
    """Whether a message is a button's payload (`/subscribe`, `/give_feedback{"csat": "4"}`), of
    `intent` if named: typed text that merely begins with "/" ("/ please sign me up") is not a tap."""
    match = _PAYLOAD.fullmatch(text.strip())
    if match is None or (intent is not None and match["intent"] != intent):
        return False
    if match["entities"] is None:
        return True
    try:
        return isinstance(json.loads(match["entities"]), dict)
    except ValueError:
        return False


def _title(titles: tuple[str, str], language: Language) -> str:
    return titles[0] if language == "zh" else titles[1]


def csat_buttons(intent: str = "give_feedback", **entities: str) -> list[Button]:
    """One tap to rate 1-5 (a follow-up question's buttons send its own intent and delivery)."""
    return [{"title": str(n), "payload": payload(intent, csat=str(n), **entities)} for n in range(1, 6)]


def helpful_buttons(
    language: Language, faq: str | None = None, intent: str = "give_feedback", **entities: str
) -> list[Button]:
    """One tap to say whether an answer helped; the value names the answer ("no:renew-1"), so a tap on
    an earlier answer is recorded against that one, not the latest."""
    yes, no = HELPFUL_TITLES[language]
    suffix = f":{faq}" if faq else ""
    return [
        {"title": yes, "payload": payload(intent, helpful=f"yes{suffix}", **entities)},
        {"title": no, "payload": payload(intent, helpful=f"no{suffix}", **entities)},
    ]


def helpful_tap(value: str | None) -> tuple[bool, str | None]:
    """What a "did this help?" tap said, and the answer it was about (None for a bare "yes"/"no")."""
    answer, _, faq = (value or "").partition(":")
    return answer.strip().lower() in ("yes", "true", "1", "是"), (faq.strip() or None)


def patron_type_buttons(language: Language) -> list[Button]:
    choices = [*PATRON_TYPE_TITLES.items(), ("skip", SKIP_TITLE)]
    return [
        {"title": _title(titles, language), "payload": payload("inform_profile", patron_type=value)}
        for value, titles in choices
    ]


def interest_buttons(language: Language) -> list[Button]:
    choices = [*INTEREST_TITLES.items(), ("skip", SKIP_TITLE)]
    return [
        {"title": _title(titles, language), "payload": payload("inform_profile", interest=value)}
        for value, titles in choices
    ]


def tapped(tracker: Tracker, name: str) -> str | None:
    """The value of entity `name` in the latest message (what a button's payload carried), if any."""
    for entity in (tracker.latest_message or {}).get("entities") or []:
        if entity.get("entity") == name and entity.get("value") is not None:
            return str(entity["value"])
    return None


def candidate_buttons(questions: list[str], language: Language) -> list[Button]:
    """ "Did you mean": one tap per candidate question (it is asked again as typed), and a way out to a
    librarian when none of them is what the patron meant."""
    buttons = [{"title": question, "payload": question} for question in questions]
    return [*buttons, {"title": _title(NONE_OF_THESE_TITLE, language), "payload": payload("human_handoff")}]
