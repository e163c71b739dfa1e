"""What day a patron's question is about: weekdays, relative days and calendar dates."""

from __future__ import annotations

import datetime as dt
import re

_DAY_WORDS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), index)
    for index, pattern in enumerate(
        (
            r"\bmon(day)?\b|周一|星期一|礼拜一",
            r"\btue(s|sday)?\b|周二|星期二|礼拜二",
            r"\bwed(nesday)?\b|周三|星期三|礼拜三",
            r"\bthu(rs|rsday)?\b|周四|星期四|礼拜四",
            r"\bfri(day)?\b|周五|星期五|礼拜五",
            r"\bsat(urday)?\b|周六|星期六|礼拜六",
            r"\bsun(day)?\b|周日|周天|星期日|星期天|礼拜日|礼拜天",
        )
    )
)
_RELATIVE = (
    (re.compile(r"\bday after tomorrow\b|后天"), 2),
    (re.compile(r"\btomorrow\b|明天|明日", re.IGNORECASE), 1),
    (re.compile(r"\btoday\b|\btonight\b|\bnow\b|今天|今日|今晚|现在", re.IGNORECASE), 0),
)


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


def find_day(text: str, *, today: dt.date) -> dt.date | None:
    """The date a patron's question is about ("on Saturday", "明天", "10月1日"), or None if it names none."""
    if (date := find_date(text, today=today)) is not None:
        return date
    for pattern, offset in _RELATIVE:
        if pattern.search(text):
            return today + dt.timedelta(days=offset)
    for pattern, weekday in _DAY_WORDS:
        if pattern.search(text):
            return today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    return None
