"""Answers about opening hours: the week, one day or date the patron names, and special hours coming up."""

from __future__ import annotations

import datetime as dt
import re

from bot.knowledge.facts import EN_WEEKDAYS, WEEKDAYS, ZH_WEEKDAYS, LibraryFacts, SpecialHours, weekday_name
from bot.language import Language


def day_hours_reply(*, facts: LibraryFacts, day: dt.date, language: Language) -> str:
    """One sentence: the library's hours on `day`, in the patron's language."""
    opening = facts.opening_on(day)
    name = facts.name[language]
    note = opening.note.get(language, "")
    if language == "zh":
        when = f"{weekday_name(day, 'zh')}（{day.month}月{day.day}日）"
        if opening.closed:
            return f"{name}{when}闭馆" + (f"：{note}。" if note else "。")
        return f"{name}{when}的开放时间是 {opening.span()}" + (f"（{note}）。" if note else "。")
    when = f"{weekday_name(day, 'en')} ({day:%-d %B})"
    if opening.closed:
        return f"{name} is closed on {when}" + (f": {note}." if note else ".")
    return f"{name} is open {opening.span()} on {when}" + (f" ({note})." if note else ".")


def _dates_text(first: dt.date, last: dt.date, *, language: Language, today: dt.date) -> str:
    """A day or a span of days: "1 January", "4–17 January 2027", "2027年1月4日至17日"."""
    year = first.year != today.year or last.year != today.year
    if language == "zh":
        start = (f"{first.year}年" if year else "") + f"{first.month}月{first.day}日"
        if first == last:
            return start
        end = (
            f"{last.day}日"
            if (last.year, last.month) == (first.year, first.month)
            else ((f"{last.year}年" if last.year != first.year else "") + f"{last.month}月{last.day}日")
        )
        return f"{start}至{end}"
    suffix = f" {last.year}" if year else ""
    if first == last:
        return f"{first.day} {first:%B}{suffix}"
    if (last.year, last.month) == (first.year, first.month):
        return f"{first.day}–{last.day} {last:%B}{suffix}"
    start = f"{first.day} {first:%B}" + (f" {first.year}" if first.year != last.year else "")
    return f"{start} – {last.day} {last:%B}{suffix}"


def special_hours_text(periods: list[SpecialHours], *, language: Language, today: dt.date) -> str:
    """The periods as one list: "1 January: closed (New Year's Day); 4–17 January: 07:30–23:30 (…)"."""
    parts = []
    for period in periods:
        when = _dates_text(period.first, period.last, language=language, today=today)
        opening = period.opening
        hours = opening.span() or ("闭馆" if language == "zh" else "closed")
        note = opening.note.get(language, "")
        if language == "zh":
            parts.append(f"{when} {hours}" + (f"（{note}）" if note else ""))
        else:
            parts.append(f"{when}: {hours}" + (f" ({note})" if note else ""))
    return "；".join(parts) if language == "zh" else "; ".join(parts)


# Special hours announced this far ahead are listed when a patron asks about holidays or exams; the
# week's hours mention those of the next UPCOMING_DAYS.
SPECIAL_HORIZON_DAYS = 180
UPCOMING_DAYS = 14


def special_hours_reply(*, facts: LibraryFacts, language: Language, today: dt.date) -> str:
    """The answer to "are you open during the exams / the holidays?": every period of special hours
    announced for the coming months, or that none is and the week's hours apply."""
    periods = facts.special_periods(start=today, days=SPECIAL_HORIZON_DAYS)
    if periods:
        listed = special_hours_text(periods, language=language, today=today)
        if language == "zh":
            return f"{facts.name['zh']}近期的特殊开放安排：{listed}。其余日子按常规时间开放。"
        return f"{facts.name['en']} special hours coming up: {listed}. On other days the regular hours apply."
    weekly = weekly_hours_reply(facts=facts, language=language, today=today)
    if language == "zh":
        return f"近期没有公布特殊开放安排（假期、考试周的安排会提前公布在 {facts.website}）。{weekly}"
    return (
        "No special hours are announced for the coming months (holiday and exam-period hours are posted"
        f" on {facts.website} in advance). {weekly}"
    )


def weekly_hours_reply(*, facts: LibraryFacts, language: Language, today: dt.date) -> str:
    """The regular weekly hours, consecutive days with the same hours grouped, then today's."""
    groups: list[tuple[int, int, str]] = []
    for index, day in enumerate(WEEKDAYS):
        span = facts.weekly[day].span() or ("闭馆" if language == "zh" else "closed")
        if groups and groups[-1][2] == span:
            groups[-1] = (groups[-1][0], index, span)
        else:
            groups.append((index, index, span))
    names = ZH_WEEKDAYS if language == "zh" else EN_WEEKDAYS
    joiner = "至" if language == "zh" else "–"
    parts = [
        f"{names[first]}{joiner}{names[last]} {span}" if first != last else f"{names[first]} {span}"
        for first, last, span in groups
    ]
    today_line = day_hours_reply(facts=facts, day=today, language=language)
    # Special hours in the next two weeks, from tomorrow (today's are in today's line), periods whole.
    soon = facts.special_periods(start=today + dt.timedelta(days=1), days=UPCOMING_DAYS)
    coming = special_hours_text(soon, language=language, today=today) if soon else ""
    if language == "zh":
        return (
            f"{facts.name['zh']}的开放时间："
            + "；".join(parts)
            + "。今天："
            + today_line
            + (f"近期特殊安排：{coming}。" if coming else "")
        )
    return (
        f"{facts.name['en']} opening hours: "
        + "; ".join(parts)
        + ". Today: "
        + today_line
        + (f" Coming up: {coming}." if coming else "")
    )


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
# Questions about special hours rather than the usual week.
_SPECIAL = re.compile(
    r"\b(exams?|finals?|exam period|revision|holidays?|vacation|break|festival|christmas|new year|"
    r"special hours|reading week)\b|考试|考试周|期末|期中|假期|节假日|放假|寒假|暑假|国庆|春节|元旦|"
    r"中秋|端午|清明|劳动节|五一|十一(?![点时月号日])|特殊",
    re.IGNORECASE,
)


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


def asks_special_hours(text: str) -> bool:
    """Whether an hours question is about holidays, exams or other special hours."""
    return bool(_SPECIAL.search(text))


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


def hours_reply(*, facts: LibraryFacts, text: str, language: Language, today: dt.date | None = None) -> str:
    """The answer to an opening-hours question: the day it asks about; the special hours coming up,
    for a question about holidays or exams; or the whole week."""
    today = today or facts.today()
    day = find_day(text, today=today)
    if day is None and asks_special_hours(text):
        return special_hours_reply(facts=facts, language=language, today=today)
    if day is None:
        return weekly_hours_reply(facts=facts, language=language, today=today)
    return day_hours_reply(facts=facts, day=day, language=language)
