"""Patron feedback: ratings typed or tapped, "did this help?", complaints and suggestions, into the CRM."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.conversations import sender_key
from bot.crm.models import Feedback, Suggestion, utcnow

# CSAT at or below this opens an escalation: a librarian follows the patron up.
LOW_CSAT = 2
# The kinds of `suggestion` rows: a complaint, a suggestion about a service, or a purchase request.
REPORT_KINDS = ("complaint", "service", "purchase")
_PURCHASE = re.compile(
    r"buy|purchase|acquire|order (a|the|this|more)|subscribe to (a|the|this)|荐购|采购|购买|订购|买"
)

_CHINESE_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
                   "九": 9, "十": 10}  # fmt: skip
_STARS = re.compile(r"[⭐★]")
# A number given against its scale ("4/5", "4 out of 5", "8 of 10"), or with a unit ("4分", "4 stars").
_ON_SCALE = re.compile(r"(?<![\d.\-])(\d{1,2})\s*(?:/|out of|of)\s*(\d{1,2})(?![\d.])")
_WITH_UNIT = re.compile(r"(?<![\d.\-])(\d{1,2})\s*(?:分|星|颗星|stars?|points?)(?![a-z])")
_CHINESE_WITH_UNIT = re.compile(r"([零一二两三四五六七八九十])\s*(?:颗星|分|星)")
# What is not a rating: a range ("1-5", "of 1 to 5"), the scale alone ("out of 5", "满分5分").
_NOT_A_RATING = re.compile(
    r"(?:(?:out of|of)\s*)?\d{1,2}\s*(?:-|~|–|to|到|至)\s*\d{1,2}"
    r"|(?:out of|of|/)\s*\d{1,2}|满分\s*\d{1,2}\s*分?"
)
_NUMBER = re.compile(r"(?<![\d.])(-?\d{1,3})(?![\d.])")
_SKIP = {"skip", "no", "nope", "no thanks", "no comment", "nothing", "none", "n/a", "-", "pass",
         "跳过", "不用", "不用了", "没有", "无", "没了", "算了", "不了", "略"}  # fmt: skip
# Words that rate without a number, mapped to the CSAT they mean: English ones as the whole answer,
# Chinese ones anywhere in it ("我觉得一般", "十分满意"), the longest first ("不满意" before "满意").
_RATING_WORDS = {
    "very satisfied": 5, "excellent": 5, "great": 5, "satisfied": 4, "good": 4, "okay": 3, "ok": 3,
    "average": 3, "dissatisfied": 2, "not satisfied": 2, "rather dissatisfied": 2, "poor": 2, "bad": 2,
    "terrible": 1, "very dissatisfied": 1, "awful": 1,
}  # fmt: skip
_CHINESE_RATING_WORDS = {
    "非常满意": 5, "十分满意": 5, "很满意": 5, "特别满意": 5, "满分": 5, "一百分": 5, "一级棒": 5, "很好": 5,
    "满意": 4, "不错": 4, "挺好": 4, "还行": 3, "还可以": 3, "一般": 3, "马马虎虎": 3, "不太满意": 2,
    "不满意": 2, "不好": 2, "很不满意": 1, "非常不满意": 1, "十分不满意": 1, "很差": 1, "太差": 1,
}  # fmt: skip
_LONGEST_FIRST = sorted(_CHINESE_RATING_WORDS, key=len, reverse=True)

# Negations and hedges, read as patrons mean them: "不是很满意" and "not very satisfied" are a low rating
# (the words "很满意" and "satisfied" in them are not), "不差" and "not bad" a middling one. They are
# looked for before the rating words.
_NEGATOR_ZH = r"(?:不是|并不|并没有|没有|没|不怎么|不太|不算|不够|不大|不)"
_DEGREE_ZH = r"(?:很|太|特别|非常|十分|那么|多|怎么|算|够|是很|是特别|是太)?"
_NEGATED_ZH = [
    (re.compile(_NEGATOR_ZH + _DEGREE_ZH + r"(?:满意|好|棒|行|理想|舒服|方便)"), 2),
    (re.compile(_NEGATOR_ZH + _DEGREE_ZH + r"(?:差|糟|烂|坏)"), 3),
]
_NEGATED_EN = [
    (
        re.compile(
            r"(?:\bnot|n't|\bnever|\bhardly)\s+"
            r"(?:very|so|that|really|too|quite|particularly|all that|entirely)?"
            r"\s*(?:satisfied|happy|pleased|good|great|helpful|impressed|nice)\b"
        ),
        2,
    ),
    (re.compile(r"(?:\bnot|n't)\s+(?:so|that|too|really)?\s*(?:bad|terrible|awful|poor)\b"), 3),
]


def _negated_rating(text: str) -> int | None:
    """The rating a negated or hedged word gives ("不是很满意" 2, "not bad" 3), if the text has one."""
    for pattern, rating in (*_NEGATED_ZH, *_NEGATED_EN):
        if pattern.search(text):
            return rating
    return None


def _one(found: list[str]) -> int | None:
    """The number when exactly one was found: two numbers are a question to ask again, not a guess."""
    return int(found[0]) if len(found) == 1 else None


def _chinese_rating(text: str) -> int | None:
    words = next((words for words in _LONGEST_FIRST if words in text), None)
    return None if words is None else _CHINESE_RATING_WORDS[words]


def _number_in(text: str, *, scale: int) -> int | None:
    """The rating a short answer gives on a scale up to ``scale``, or None when it gives none or more
    than one: "4", "4/5", "给5分", "四分", "⭐⭐⭐", "我觉得一般" (on a scale of 5); not "1-5", "-1",
    or "5/10" on a scale of 5."""
    cleaned = text.strip().lower()
    stars = len(_STARS.findall(cleaned))
    if stars:
        return stars
    on_scale = _ON_SCALE.findall(cleaned)
    if len(on_scale) == 1:
        value, of = (int(part) for part in on_scale[0])
        return value if of == scale else None
    rest = _NOT_A_RATING.sub(" ", cleaned)
    chinese = _CHINESE_WITH_UNIT.findall(rest)
    for found in (
        _one(_WITH_UNIT.findall(rest)),
        _chinese_rating(rest) if scale == 5 else None,
        _CHINESE_DIGITS[chinese[0]] if len(chinese) == 1 else None,
        _one(_NUMBER.findall(rest)),
    ):
        if found is not None:
            return found
    return _CHINESE_DIGITS.get(cleaned)


def parse_csat(text: str) -> int | None:
    """A CSAT rating 1-5 from what the patron typed or tapped, or None if it is not one."""
    cleaned = text.strip().lower().rstrip("!.。！")
    if cleaned in _RATING_WORDS:
        return _RATING_WORDS[cleaned]
    if len(cleaned) > 40:
        return None
    if not any(character.isdigit() for character in cleaned) and not _STARS.search(cleaned):
        negated = _negated_rating(cleaned)
        word = _chinese_rating(cleaned)
        # "很不满意" keeps its 1: a negation only lowers a word that rates well ("不是很满意").
        if negated is not None and (word is None or word > negated):
            return negated
    number = _number_in(cleaned, scale=5)
    return number if number is not None and 1 <= number <= 5 else None


# A comment that only changes the rating: "actually 3", "3 out of 5", "改成2分", "sorry, 4 stars".
_CORRECTION = re.compile(
    r"^(?:(?:actually|sorry|no|change(?: it)? to|make (?:it|that)|i meant|correction"
    r"|其实|改成|改为|更正|不对)[\s,，:：]*)*"
    r"(?:\d|[一二两三四五])\s*(?:分|星|颗星|stars?|points?|/\s*5|out of 5)?[\s.!。！]*$",
    re.IGNORECASE,
)


def rating_correction(text: str) -> int | None:
    """The new rating when a comment is only a rating, perhaps after "actually" or "改成", else None:
    a comment such as "no printer on level 1" keeps its number."""
    if len(text) > 30 or not _CORRECTION.match(text.strip()):
        return None
    return parse_csat(text)


def rating_in_request(text: str) -> int | None:
    """The rating the message that starts the feedback form already gives, if it gives one plainly:
    with a unit or against its scale anywhere ("I'd like to give feedback: 5 stars", "我要给图书馆打5分",
    "4/5"), as stars, or as the whole message ("5", "很满意"); else None, and the form asks."""
    cleaned = text.strip().lower()
    stars = len(_STARS.findall(cleaned))
    if stars:
        return stars if 1 <= stars <= 5 else None
    on_scale = [(int(value), int(of)) for value, of in _ON_SCALE.findall(cleaned)]
    with_unit = [int(value) for value in _WITH_UNIT.findall(cleaned)]
    chinese = [_CHINESE_DIGITS[digit] for digit in _CHINESE_WITH_UNIT.findall(cleaned)]
    found = {value for value, of in on_scale if of == 5} | set(with_unit) | set(chinese)
    others = _WITH_UNIT.sub(" ", _ON_SCALE.sub(" ", cleaned))  # another number: two ratings, not one
    if len(found) == 1 and not _NUMBER.search(others) and 1 <= (value := next(iter(found))) <= 5:
        return value
    return parse_csat(cleaned) if len(cleaned) <= 20 and not found else None


_AFFIRMATIONS = {"yes", "y", "yeah", "yep", "sure", "ok", "okay", "是", "是的", "对", "对的", "好", "好的",
                 "嗯", "可以", "确定", "没错"}  # fmt: skip


def is_affirmation(text: str) -> bool:
    """A bare yes ("yes", "好的"), which confirms nothing that needs its own words."""
    return text.strip().lower().rstrip("!.。！") in _AFFIRMATIONS


def parse_nps(text: str) -> int | None:
    """A recommendation score 0-10, or None."""
    cleaned = text.strip()
    if len(cleaned) > 40:
        return None
    number = _number_in(cleaned, scale=10)
    return number if number is not None and 0 <= number <= 10 else None


def is_skip(text: str) -> bool:
    """True when the patron declines an optional question ("skip", "跳过", "no")."""
    return text.strip().lower().rstrip("!.。！") in _SKIP


_CANCEL = {"cancel", "never mind", "nevermind", "forget it", "quit", "exit", "stop rating", "not now",
           "取消", "不评了", "不想评", "不填了", "不说了", "以后再说", "退出"}  # fmt: skip


# Said anywhere in a short message, these leave what the bot asked ("nah, never mind then", "算了算了").
_LEAVING = re.compile(
    r"never ?mind|forget (?:it|about it)|算了|不用了|不评了|不说了|不填了|不想说了", re.IGNORECASE
)


def is_cancel(text: str) -> bool:
    """True when the patron leaves a form instead of answering ("never mind", "算了", "取消"): every
    way of declining counts, since a question the patron cannot leave is worse than a lost answer."""
    cleaned = text.strip().lower().rstrip("!.。！")
    short = len(cleaned.split()) <= 5 and len(cleaned) <= 24
    return cleaned in _CANCEL or cleaned in _SKIP or (short and bool(_LEAVING.search(cleaned)))


def record_feedback(
    *,
    session: Session,
    patron_id: int | None,
    csat: int | None = None,
    nps: int | None = None,
    comment: str | None = None,
    helpful: bool | None = None,
    topic: str | None = None,
    rasa_sender_id: str | None = None,
) -> Feedback:
    """One feedback row; the values are checked here as well as by the database's constraints.

    `rasa_sender_id` is the Rasa conversation it was given in: the ingester links the row to that
    conversation once it has ingested the turn (bot.crm.conversations.link_to_conversations).
    """
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
        rasa_sender_id=sender_key(rasa_sender_id),
    )
    session.add(row)
    session.flush()
    return row


# Taps on "did this help?" about one topic within this long count as one answer (the last one).
HELPFUL_WINDOW = dt.timedelta(minutes=10)


def record_helpful(
    *,
    session: Session,
    patron_id: int | None,
    helpful: bool,
    topic: str | None,
    now: dt.datetime | None = None,
    same_answer: bool = True,
    rasa_sender_id: str | None = None,
) -> Feedback:
    """A "did this help?" tap. A second tap under the same answer soon after (a double tap, or 👍
    changed to 👎) changes the answer already recorded instead of counting the patron twice; a tap under
    another answer (`same_answer` False), even of the same topic, is a row of its own."""
    now = now or utcnow()
    earlier: Feedback | None = None
    if patron_id is not None and same_answer:
        earlier = session.execute(
            select(Feedback)
            .where(
                Feedback.patron_id == patron_id,
                Feedback.helpful.is_not(None),
                Feedback.csat.is_(None),
                Feedback.topic.is_(None) if topic is None else Feedback.topic == topic,
                Feedback.created_at >= now - HELPFUL_WINDOW,
            )
            .order_by(Feedback.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    if earlier is None:
        return record_feedback(
            session=session, patron_id=patron_id, helpful=helpful, topic=topic, rasa_sender_id=rasa_sender_id
        )
    earlier.helpful = helpful
    if earlier.rasa_sender_id is None:
        earlier.rasa_sender_id = sender_key(rasa_sender_id)
    session.flush()
    return earlier


# A rating corrected or tapped again this soon after it was given changes it instead of adding another.
RATING_WINDOW = dt.timedelta(minutes=30)


def latest_rating(*, session: Session, patron_id: int, now: dt.datetime | None = None) -> Feedback | None:
    """The patron's rating given within RATING_WINDOW, which a correction or a repeated tap changes."""
    now = now or utcnow()
    found: Feedback | None = session.execute(
        select(Feedback)
        .where(
            Feedback.patron_id == patron_id,
            Feedback.csat.is_not(None),
            Feedback.created_at >= now - RATING_WINDOW,
        )
        .order_by(Feedback.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return found


def record_report(
    *,
    session: Session,
    patron_id: int | None,
    kind: str,
    text: str,
    topic: str | None,
    rasa_sender_id: str | None = None,
) -> Suggestion:
    """A complaint or a suggestion, as the patron wrote it, waiting for a librarian's answer. Its id is
    the number the patron is told, by which staff find it (and a complaint's escalation).

    `rasa_sender_id` is the Rasa conversation it was given in: the escalation opened for a complaint
    takes it up (bot.engagement.escalations.open_escalation), and the ingester links the conversation.
    """
    if kind not in REPORT_KINDS:
        raise ValueError(f"kind must be one of {REPORT_KINDS}, not {kind!r}")
    row = Suggestion(
        patron_id=patron_id,
        kind=kind,
        text=text,
        topic=topic,
        status="new",
        rasa_sender_id=sender_key(rasa_sender_id),
    )
    session.add(row)
    session.flush()
    return row


# How a detail sent after the report is kept in its text, for the librarian who reads it, and the
# most a report's text grows to with its details (the patron's own message is at most 4,000).
DETAIL_PREFIX = "\n+ "
MAX_REPORT_TEXT = 8000


def add_report_detail(*, session: Session, patron_id: int, report_id: int, text: str) -> Suggestion | None:
    """Adds what the patron sent after their complaint or suggestion was recorded ("三楼东边") to its
    text, which staff read with it (and its escalation); None if it is not this patron's report."""
    row = session.get(Suggestion, report_id)
    if row is None or row.patron_id != patron_id:
        return None
    row.text = f"{row.text or ''}{DETAIL_PREFIX}{text.strip()}"[:MAX_REPORT_TEXT]
    session.flush()
    return row


_GENERIC = re.compile(
    r"\b(i|i'd|i'm|i want|would|like|to|make|file|a|an|the|have|got|some|want|please|about|how|do|can|"
    r"complain|complaint|complaints|suggest|suggestion|suggestions|idea|ideas|feedback|report|one|"
    r"something|actually|rather|just|instead|give|leave|rate|rating|hello|hi|hey|thanks|thank|you|bye|"
    r"ok|okay)\b|我要|我想|想|要|投诉|建议|意见|反映|一下|一个|个|提|有|吐槽|给你们|请问|怎么|谢谢|再见|你好|"
    r"好的|算了|[\s\W]",
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
