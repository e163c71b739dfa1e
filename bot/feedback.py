"""Patron feedback: ratings typed or tapped, "did this help?", complaints and suggestions, into the CRM."""

from __future__ import annotations

import re

from sqlalchemy.orm import Session

from bot.models import Feedback, Suggestion

# CSAT at or below this opens an escalation: a librarian follows the patron up.
LOW_CSAT = 2
# The kinds of `suggestion` rows: a complaint, a suggestion about a service, or a purchase request.
REPORT_KINDS = ("complaint", "service", "purchase")
_PURCHASE = re.compile(
    r"buy|purchase|acquire|order (a|the|this|more)|subscribe to (a|the|this)|荐购|采购|购买|订购|买"
)

_CHINESE_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
                   "九": 9, "十": 10}  # fmt: skip
_NUMBER = re.compile(r"(?<![\d.])(\d{1,2})(?![\d.])")
_STARS = re.compile(r"[⭐★]")
_SKIP = {"skip", "no", "nope", "no thanks", "no comment", "nothing", "none", "n/a", "-", "pass",
         "跳过", "不用", "不用了", "没有", "无", "没了", "算了", "不了", "略"}  # fmt: skip
# Words that rate without a number, mapped to the CSAT they mean.
_RATING_WORDS = {
    "非常满意": 5, "很满意": 5, "满意": 4, "一般": 3, "不太满意": 2, "不满意": 2,
    "很不满意": 1, "非常不满意": 1,
    "very satisfied": 5, "excellent": 5, "great": 5, "satisfied": 4, "good": 4, "okay": 3, "ok": 3,
    "average": 3, "dissatisfied": 2, "rather dissatisfied": 2, "poor": 2, "bad": 2, "terrible": 1,
    "very dissatisfied": 1, "awful": 1,
}  # fmt: skip


def _number_in(text: str) -> int | None:
    """The single number a short answer gives ("4", "4/5" gives 4, "给5分", "四分", "⭐⭐⭐"), else None."""
    cleaned = text.strip().lower()
    stars = len(_STARS.findall(cleaned))
    if stars:
        return stars
    numbers = _NUMBER.findall(cleaned)
    if numbers:
        return int(numbers[0])
    chinese = [value for char, value in _CHINESE_DIGITS.items() if char in cleaned]
    if len(chinese) == 1:
        return chinese[0]
    return None


def parse_csat(text: str) -> int | None:
    """A CSAT rating 1-5 from what the patron typed or tapped, or None if it is not one."""
    cleaned = text.strip().lower().rstrip("!.。！")
    if cleaned in _RATING_WORDS:
        return _RATING_WORDS[cleaned]
    if len(cleaned) > 40:
        return None
    number = _number_in(cleaned)
    return number if number is not None and 1 <= number <= 5 else None


_CORRECTION = re.compile(
    r"^(actually|sorry|no|change( it)?( to)?|make (it|that)|i meant|correction)\b|"
    r"^(其实|改成|改为|更正|不对)|\d\s*(/|out of)\s*5|^\s*\d\s*(分|星|stars?)?\s*$",
    re.IGNORECASE,
)


def rating_correction(text: str) -> int | None:
    """The new rating when a short answer changes it ("actually 3", "3 out of 5", "改成2分"), else None."""
    if len(text) > 30 or not _CORRECTION.search(text.strip()):
        return None
    return parse_csat(text)


def parse_nps(text: str) -> int | None:
    """A recommendation score 0-10, or None."""
    cleaned = text.strip()
    if len(cleaned) > 40:
        return None
    number = _number_in(cleaned)
    return number if number is not None and 0 <= number <= 10 else None


def is_skip(text: str) -> bool:
    """True when the patron declines an optional question ("skip", "跳过", "no")."""
    return text.strip().lower().rstrip("!.。！") in _SKIP


def record_feedback(
    *,
    session: Session,
    patron_id: int | None,
    csat: int | None = None,
    nps: int | None = None,
    comment: str | None = None,
    helpful: bool | None = None,
    topic: str | None = None,
) -> Feedback:
    """One feedback row; the values are checked here as well as by the database's constraints."""
    if csat is not None and not 1 <= csat <= 5:
        raise ValueError(f"CSAT must be 1-5, not {csat}")
    if nps is not None and not 0 <= nps <= 10:
        raise ValueError(f"NPS must be 0-10, not {nps}")
    row = Feedback(
        patron_id=patron_id,
        csat=csat,
        nps=nps,
        comment=(comment or None),
        helpful=helpful,
        topic=topic,
    )
    session.add(row)
    session.flush()
    return row


def record_report(
    *, session: Session, patron_id: int | None, kind: str, text: str, topic: str | None
) -> Suggestion:
    """A complaint or a suggestion, as the patron wrote it, waiting for a librarian's answer."""
    if kind not in REPORT_KINDS:
        raise ValueError(f"kind must be one of {REPORT_KINDS}, not {kind!r}")
    row = Suggestion(patron_id=patron_id, kind=kind, text=text, topic=topic, status="new")
    session.add(row)
    session.flush()
    return row


_GENERIC = re.compile(
    r"\b(i|i'd|i'm|i want|would|like|to|make|file|a|an|the|have|got|some|want|please|about|how|do|can|"
    r"complain|complaint|complaints|suggest|suggestion|suggestions|idea|ideas|feedback|report|one|"
    r"something)\b|我要|我想|想|要|投诉|建议|意见|反映|一下|一个|个|提|有|吐槽|给你们|请问|怎么|[\s\W]",
    re.IGNORECASE,
)


def report_kind(*, complaint: bool, text: str) -> str:
    """The `suggestion.kind` for what the patron said: complaint, purchase request, or service idea."""
    if complaint:
        return "complaint"
    return "purchase" if _PURCHASE.search(text.lower()) else "service"


def has_details(text: str) -> bool:
    """True when a complaint or suggestion says what it is about, not only that there is one."""
    rest = _GENERIC.sub("", text)
    cjk = sum(1 for char in rest if "\u4e00" <= char <= "\u9fff")
    return cjk >= 3 or len(rest) - cjk >= 8
