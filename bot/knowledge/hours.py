"""Answers about opening hours: the week, one day or date the patron names, and special hours coming up."""

from __future__ import annotations

import datetime as dt
import re

from bot.knowledge.dates import find_days
from bot.knowledge.facts import EN_WEEKDAYS, WEEKDAYS, ZH_WEEKDAYS, LibraryFacts, SpecialHours, weekday_name
from bot.language import Language


def _day_text(day: dt.date, language: Language, *, past: bool = False) -> str:
    """A day as the replies name it: 周六（12月12日）, Saturday (12 December); 周一（11月30日，已过去）."""
    if language == "zh":
        return f"{weekday_name(day, 'zh')}（{day.month}月{day.day}日{'，已过去' if past else ''}）"
    return f"{weekday_name(day, 'en')} ({day:%-d %B})"


def day_hours_reply(*, facts: LibraryFacts, day: dt.date, language: Language, today: dt.date) -> str:
    """One sentence: the library's hours on `day`, in the patron's language; a day already past (这周一
    asked on a Friday) is said to be past, so the patron sees which day the bot took."""
    opening = facts.opening_on(day)
    name = facts.name[language]
    note = opening.note.get(language, "")
    past = day < today
    if language == "zh":
        when = _day_text(day, "zh", past=past)
        if opening.closed:
            return f"{name}{when}闭馆" + (f"：{note}。" if note else "。")
        return f"{name}{when}的开放时间是 {opening.span()}" + (f"（{note}）。" if note else "。")
    when, verb = _day_text(day, "en"), "was" if past else "is"
    if opening.closed:
        return f"{name} {verb} closed on {when}" + (f": {note}." if note else ".")
    return f"{name} {verb} open {opening.span()} on {when}" + (f" ({note})." if note else ".")


def days_hours_reply(
    *, facts: LibraryFacts, days: tuple[dt.date, ...], language: Language, today: dt.date
) -> str:
    """The library's hours on each of `days` (a weekend), in one sentence in the patron's language."""
    if len(days) == 1:
        return day_hours_reply(facts=facts, day=days[0], language=language, today=today)
    parts = []
    for day in days:
        opening = facts.opening_on(day)
        hours = opening.span() or ("闭馆" if language == "zh" else "closed")
        note = opening.note.get(language, "")
        if language == "zh":
            parts.append(f"{_day_text(day, 'zh')}{hours}" + (f"（{note}）" if note else ""))
        else:
            parts.append(f"{_day_text(day, 'en')} {hours}" + (f" ({note})" if note else ""))
    if language == "zh":
        return f"{facts.name['zh']}的开放时间：" + "；".join(parts) + "。"
    return f"{facts.name['en']} opening hours: " + "; ".join(parts) + "."


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
    today_line = day_hours_reply(facts=facts, day=today, language=language, today=today)
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


# Questions about special hours rather than the usual week.
_SPECIAL = re.compile(
    r"\b(exams?|finals?|exam period|revision|holidays?|vacation|break|festival|christmas|new year|"
    r"special hours|reading week)\b|考试|考试周|期末|期中|假期|节假日|放假|寒假|暑假|国庆|春节|元旦|"
    r"中秋|端午|清明|劳动节|五一|十一(?![点时月号日])|特殊",
    re.IGNORECASE,
)


def asks_special_hours(text: str) -> bool:
    """Whether an hours question is about holidays, exams or other special hours."""
    return bool(_SPECIAL.search(text))


def hours_reply(*, facts: LibraryFacts, text: str, language: Language, today: dt.date | None = None) -> str:
    """The answer to an opening-hours question: the day (or the weekend's days) it asks about; the
    special hours coming up, for a question about holidays or exams; or the whole week."""
    today = today or facts.today()
    days = find_days(text, today=today)
    if not days and asks_special_hours(text):
        return special_hours_reply(facts=facts, language=language, today=today)
    if not days:
        return weekly_hours_reply(facts=facts, language=language, today=today)
    return days_hours_reply(facts=facts, days=days, language=language, today=today)
