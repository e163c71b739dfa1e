"""What day a patron's question is about: weekdays, relative days and calendar dates."""

from __future__ import annotations

import datetime as dt
import re

# How a question names a day, in this order: a calendar date; a day relative to today (今天, tomorrow,
# 大后天); a weekday, in the week a phrase names (这周五, 下周五, this Friday, next Friday, Friday next
# week) or else the coming one, today included (周五, on Friday); the weekend, likewise. Weeks run Monday
# to Sunday: "next Friday" and 下周五 are the Friday of next week, whatever day today is.
_EN_WEEKDAYS = ("mon(?:day)?", "tue(?:s|sday)?", "wed(?:nesday)?", "thu(?:rs|rsday)?", "fri(?:day)?",
                "sat(?:urday)?", "sun(?:day)?")  # fmt: skip
_ZH_WEEKDAYS = ("[一1]", "[二2]", "[三3]", "[四4]", "[五5]", "[六6]", "[日天7]")
_WEEKDAY_WORDS = tuple(
    re.compile(rf"\b{english}\b|(?:周|星期|礼拜){chinese}(?!\d)", re.IGNORECASE)
    for english, chinese in zip(_EN_WEEKDAYS, _ZH_WEEKDAYS, strict=True)
)
_WEEKEND = re.compile(r"\bweekends?\b|周末", re.IGNORECASE)
_RELATIVE = (
    (re.compile(r"大后天"), 3),
    (re.compile(r"\bday after tomorrow\b|后天", re.IGNORECASE), 2),
    (re.compile(r"\btomorrow\b|明天|明日|明晚", re.IGNORECASE), 1),
    (re.compile(r"\btoday\b|\btonight\b|\bnow\b|今天|今日|今晚|现在", re.IGNORECASE), 0),
)
# The week a phrase names, counted from this one (下下周 / the week after next: 2); the first that matches.
_EN_WEEK_OR_DAY = "(?:week|weekend|" + "|".join(_EN_WEEKDAYS) + r")\b"
_WEEKS = (
    (re.compile(r"下下个?(?:周|星期|礼拜)|\bweek(?:end)?\s+after\s+next\b", re.IGNORECASE), 2),
    (re.compile(rf"下一?个?(?:周|星期|礼拜)|\bnext\s+{_EN_WEEK_OR_DAY}", re.IGNORECASE), 1),
    (re.compile(rf"[这本]一?个?(?:周|星期|礼拜)|\bthis\s+{_EN_WEEK_OR_DAY}", re.IGNORECASE), 0),
)
# "一下" softens a verb (问一下, 看一下): "请问一下周五开门吗" asks about Friday, not 下周五.
_SOFTENER = "一下"

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_ISO_DATE = re.compile(r"\b(20\d{2})-(\d{1,2})-(\d{1,2})\b")
_CHINESE_DATE = re.compile(r"(?:(20\d{2})\s*年\s*)?(\d{1,2})\s*月\s*(\d{1,2})\s*[日号]")
_DAY_MONTH = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:\s+(20\d{{2}}))?", re.IGNORECASE
)
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(20\d{{2}}))?", re.IGNORECASE)
# A date named without its year is the next one: this year's, unless it was more than a month ago.
_PAST_GRACE = dt.timedelta(days=31)


def _date(year: int | None, month: int, day: int, *, today: dt.date) -> dt.date | None:
    try:
        found = dt.date(year or today.year, month, day)
    except ValueError:
        return None
    if year is None and found < today - _PAST_GRACE:
        found = found.replace(year=today.year + 1) if not (month == 2 and day == 29) else found
    return found


def find_date(text: str, *, today: dt.date) -> dt.date | None:
    """A calendar date in the question ("2026-10-01", "10月1日", "1 October", "Oct 1"), or None."""
    if match := _ISO_DATE.search(text):
        return _date(int(match[1]), int(match[2]), int(match[3]), today=today)
    if match := _CHINESE_DATE.search(text):
        return _date(int(match[1]) if match[1] else None, int(match[2]), int(match[3]), today=today)
    if match := _DAY_MONTH.search(text):
        month = _MONTHS.index(match[2].lower()[:3]) + 1
        return _date(int(match[3]) if match[3] else None, month, int(match[1]), today=today)
    if match := _MONTH_DAY.search(text):
        month = _MONTHS.index(match[1].lower()[:3]) + 1
        return _date(int(match[3]) if match[3] else None, month, int(match[2]), today=today)
    return None


def _week(text: str) -> int | None:
    """The week a phrase in the question names (0 this week, 1 next week, 2 the week after), or None."""
    text = text.replace(_SOFTENER, "")
    return next((weeks for pattern, weeks in _WEEKS if pattern.search(text)), None)


def _weekday(text: str) -> int | None:
    """The weekday named first in the question (0 Monday … 6 Sunday), or None."""
    found = [
        (match.start(), day) for day, pattern in enumerate(_WEEKDAY_WORDS) if (match := pattern.search(text))
    ]
    return min(found)[1] if found else None


def find_days(text: str, *, today: dt.date) -> tuple[dt.date, ...]:
    """The days a patron's question is about, in order: one day ("下周五", "tomorrow", "10月1日"), the
    weekend's days still to come ("周末", "next weekend"), or none."""
    if (date := find_date(text, today=today)) is not None:
        return (date,)
    for pattern, offset in _RELATIVE:
        if pattern.search(text):
            return (today + dt.timedelta(days=offset),)
    week = _week(text)
    monday = today - dt.timedelta(days=today.weekday()) + dt.timedelta(weeks=week or 0)
    if (weekday := _weekday(text)) is not None:
        if week is None:  # a bare weekday: the coming one, today included
            return (today + dt.timedelta(days=(weekday - today.weekday()) % 7),)
        return (monday + dt.timedelta(days=weekday),)
    if _WEEKEND.search(text):
        weekend = (monday + dt.timedelta(days=5), monday + dt.timedelta(days=6))
        return tuple(day for day in weekend if day >= today)
    return ()


def find_day(text: str, *, today: dt.date) -> dt.date | None:
    """The (first) day a patron's question is about ("on Saturday", "下周五", "10月1日"), or None."""
    days = find_days(text, today=today)
    return days[0] if days else None
