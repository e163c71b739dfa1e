"""The library's facts (name, address, contact, opening and staffed hours) from its editable facts file."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from bot.language import LANGUAGES, Language

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ZH_WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
_EN_WEEKDAYS = tuple(day.capitalize() for day in WEEKDAYS)
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
DEFAULT_STAFF_RESPONSE_MINUTES = 60


class FactsError(Exception):
    """The facts file is missing or malformed; the message says where, in one line."""


@dataclass(frozen=True)
class Opening:
    """Hours on one day: closed, or open from `opens` to `closes`."""

    opens: dt.time | None
    closes: dt.time | None
    note: dict[str, str] = field(default_factory=dict)

    @property
    def closed(self) -> bool:
        return self.opens is None

    def span(self) -> str:
        if self.opens is None or self.closes is None:
            return ""
        return f"{self.opens:%H:%M}–{self.closes:%H:%M}"


@dataclass(frozen=True)
class LibraryFacts:
    """What the bot may say about the library, in both languages."""

    name: dict[str, str]
    address: dict[str, str]
    phone: str
    email: str
    website: str
    privacy_notice: str
    timezone: ZoneInfo
    weekly: dict[str, Opening]
    exceptions: dict[dt.date, Opening]
    # When librarians answer escalated conversations; defaults to the opening hours.
    staffed_weekly: dict[str, Opening] = field(default_factory=dict)
    staffed_exceptions: dict[dt.date, Opening] = field(default_factory=dict)
    # How soon, within staffed hours, a librarian answers an escalation (its due time).
    staff_response: dt.timedelta = dt.timedelta(minutes=DEFAULT_STAFF_RESPONSE_MINUTES)
    # Whether the feedback form also asks the Net Promoter question (0-10).
    feedback_nps: bool = False

    def opening_on(self, day: dt.date) -> Opening:
        return self.exceptions.get(day) or self.weekly[WEEKDAYS[day.weekday()]]

    def staffed_on(self, day: dt.date) -> Opening:
        """When librarians are on duty on `day`: a dated exception, else the weekday's staffed hours."""
        if day in self.staffed_exceptions:
            return self.staffed_exceptions[day]
        if self.staffed_weekly:
            return self.staffed_weekly[WEEKDAYS[day.weekday()]]
        return self.opening_on(day)

    def today(self) -> dt.date:
        return dt.datetime.now(self.timezone).date()

    def special_periods(self, *, start: dt.date, days: int) -> list[SpecialHours]:
        """The periods of special hours that touch the `days` days from `start`, whole (an exam
        period that began last week is listed from its first day), in date order. Consecutive days
        with the same hours and note are one period."""
        periods: list[SpecialHours] = []
        for day in sorted(self.exceptions):
            opening = self.exceptions[day]
            previous = periods[-1] if periods else None
            if previous and previous.last + dt.timedelta(days=1) == day and previous.opening == opening:
                periods[-1] = SpecialHours(previous.first, day, opening)
            else:
                periods.append(SpecialHours(day, day, opening))
        end = start + dt.timedelta(days=days)
        return [period for period in periods if period.last >= start and period.first < end]


@dataclass(frozen=True)
class SpecialHours:
    """Hours that differ from the week's, from `first` to `last` (one day or a period)."""

    first: dt.date
    last: dt.date
    opening: Opening


_cache: dict[Path, tuple[int, LibraryFacts]] = {}


def load_facts(path: Path) -> LibraryFacts:
    """The facts in `path`, re-read whenever the file changes (so librarians' edits apply at once)."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as error:
        raise FactsError(f"{path}: cannot read the library facts file ({error.strerror})") from None
    cached = _cache.get(path)
    if cached and cached[0] == mtime:
        return cached[1]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise FactsError(f"{path}: not valid YAML ({error})") from None
    facts = parse_facts(raw, source=str(path))
    _cache[path] = (mtime, facts)
    return facts


def parse_facts(raw: Any, *, source: str = "facts") -> LibraryFacts:
    """Check and convert the facts file's content; raise FactsError naming the bad key."""
    if not isinstance(raw, dict):
        raise FactsError(f"{source}: expected a mapping of facts")

    def text(key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise FactsError(f"{source}: '{key}' must be a non-empty text")
        return value.strip()

    def bilingual(key: str, value: Any = None) -> dict[str, str]:
        value = raw.get(key) if value is None else value
        if not isinstance(value, dict) or any(not isinstance(value.get(lang), str) for lang in LANGUAGES):
            raise FactsError(f"{source}: '{key}' needs a text for each of {', '.join(LANGUAGES)}")
        return {lang: str(value[lang]).strip() for lang in LANGUAGES}

    try:
        zone = ZoneInfo(text("timezone"))
    except (ZoneInfoNotFoundError, ValueError):
        raise FactsError(f"{source}: 'timezone' is not a known time zone") from None
    hours = raw.get("hours")
    if not isinstance(hours, dict) or set(hours) != set(WEEKDAYS):
        raise FactsError(f"{source}: 'hours' must give hours for each of {', '.join(WEEKDAYS)}")
    weekly = {day: _opening(hours[day], where=f"{source}: hours.{day}") for day in WEEKDAYS}
    staffed = raw.get("staffed_hours")
    staffed_weekly: dict[str, Opening] = {}
    if staffed is not None:
        if not isinstance(staffed, dict) or set(staffed) != set(WEEKDAYS):
            raise FactsError(f"{source}: 'staffed_hours' must give hours for each of {', '.join(WEEKDAYS)}")
        staffed_weekly = {
            day: _opening(staffed[day], where=f"{source}: staffed_hours.{day}") for day in WEEKDAYS
        }
    exceptions: dict[dt.date, Opening] = {}
    staffed_exceptions: dict[dt.date, Opening] = {}
    entries = raw.get("hours_exceptions") or []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise FactsError(f"{source}: 'hours_exceptions' must be a list of mappings with date, hours and note")
    spans = [(index, entry, *_period(entry, where=f"{source}: hours_exceptions[{index}]"))
             for index, entry in enumerate(entries)]  # fmt: skip
    # The longest periods first, so that a day inside one (a holiday in the exam period) has its own hours.
    for index, entry, first, last in sorted(spans, key=lambda span: -(span[3] - span[2]).days):
        where = f"{source}: hours_exceptions[{index}]"
        note = bilingual(f"hours_exceptions[{index}].note", entry.get("note") or {"zh": "", "en": ""})
        opening = _opening(entry.get("hours"), where=f"{where}.hours", note=note)
        # Librarians are off when the library is closed, unless the entry says when they are on.
        staffed_opening = (
            _opening(entry["staffed"], where=f"{where}.staffed")
            if "staffed" in entry
            else (opening if opening.closed else None)
        )
        for offset in range((last - first).days + 1):
            day = first + dt.timedelta(days=offset)
            exceptions[day] = opening
            if staffed_opening is not None:
                staffed_exceptions[day] = staffed_opening
    response = raw.get("staff_response_minutes", DEFAULT_STAFF_RESPONSE_MINUTES)
    if not isinstance(response, int) or isinstance(response, bool) or not 1 <= response <= 7 * 24 * 60:
        raise FactsError(
            f"{source}: 'staff_response_minutes' must be a whole number of minutes from 1 to 10080,"
            f" got {response!r}"
        )
    feedback_nps = raw.get("feedback_nps", False)
    if not isinstance(feedback_nps, bool):
        raise FactsError(f"{source}: 'feedback_nps' must be true or false, got {feedback_nps!r}")
    return LibraryFacts(
        name=bilingual("name"),
        address=bilingual("address"),
        phone=text("phone"),
        email=text("email"),
        website=text("website"),
        privacy_notice=str(raw.get("privacy_notice") or "").strip() or text("website"),
        timezone=zone,
        weekly=weekly,
        exceptions=exceptions,
        staffed_weekly=staffed_weekly,
        staffed_exceptions=staffed_exceptions,
        staff_response=dt.timedelta(minutes=response),
        feedback_nps=feedback_nps,
    )


# A period of special hours (an exam period, a vacation) spans at most this many days.
MAX_PERIOD_DAYS = 366


def _period(entry: dict[str, Any], *, where: str) -> tuple[dt.date, dt.date]:
    """The first and last day of an exception: `date`, through `until` for a period."""
    try:
        first = dt.date.fromisoformat(str(entry.get("date")))
    except ValueError:
        raise FactsError(f"{where}.date must be a date like 2026-10-01") from None
    if entry.get("until") is None:
        return first, first
    try:
        last = dt.date.fromisoformat(str(entry["until"]))
    except ValueError:
        raise FactsError(f"{where}.until must be a date like 2027-01-17") from None
    if not 0 <= (last - first).days < MAX_PERIOD_DAYS:
        raise FactsError(f"{where}.until must be on or after date, and within {MAX_PERIOD_DAYS} days of it")
    return first, last


def _opening(value: Any, *, where: str, note: dict[str, str] | None = None) -> Opening:
    if isinstance(value, str) and value.strip().lower() == "closed":
        return Opening(None, None, note or {})
    match = _HOURS.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise FactsError(f"{where} must be 'HH:MM-HH:MM' or 'closed', got {value!r}")
    h1, m1, h2, m2 = (int(part) for part in match.groups())
    try:
        opens, closes = dt.time(h1, m1), dt.time(h2, m2)
    except ValueError:
        raise FactsError(f"{where} has an impossible time: {value!r}") from None
    if closes <= opens:
        raise FactsError(f"{where} closes before it opens: {value!r}")
    return Opening(opens, closes, note or {})


def weekday_name(day: dt.date, language: Language) -> str:
    return (_ZH_WEEKDAYS if language == "zh" else _EN_WEEKDAYS)[day.weekday()]


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
    names = _ZH_WEEKDAYS if language == "zh" else _EN_WEEKDAYS
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


def _local(facts: LibraryFacts, at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime given for staffed hours; pass a timezone-aware one")
    return at.astimezone(facts.timezone)


def staffed_now(*, facts: LibraryFacts, at: dt.datetime) -> bool:
    """Whether a librarian is on duty at `at` (in the library's time zone)."""
    local = _local(facts, at)
    duty = facts.staffed_on(local.date())
    return duty.opens is not None and duty.closes is not None and duty.opens <= local.time() < duty.closes


def next_staffed(*, facts: LibraryFacts, at: dt.datetime) -> dt.datetime | None:
    """The first moment at or after `at` when a librarian is on duty, in the library's time zone.

    `at` itself when staffed now; None when no librarian is on duty in the coming year.
    """
    local = _local(facts, at)
    if staffed_now(facts=facts, at=local):
        return local
    for offset in range(367):
        day = local.date() + dt.timedelta(days=offset)
        duty = facts.staffed_on(day)
        if duty.opens is None:
            continue
        start = dt.datetime.combine(day, duty.opens, tzinfo=facts.timezone)
        if start > local:
            return start
    return None


def _when(start: dt.datetime, *, today: dt.date, language: Language) -> str:
    """'today 14:00', 'tomorrow 09:00', 'Monday 09:00', or with the date when over a week away."""
    days = (start.date() - today).days
    clock = f"{start:%H:%M}"
    if language == "zh":
        if days in (0, 1):
            return f"{'今天' if days == 0 else '明天'} {clock}"
        name = weekday_name(start.date(), "zh")
        return f"{name} {clock}" if days < 7 else f"{start.month}月{start.day}日（{name}）{clock}"
    if days in (0, 1):
        return f"{'today' if days == 0 else 'tomorrow'} {clock}"
    name = weekday_name(start.date(), "en")
    return f"{name} {clock}" if days < 7 else f"{name} {start:%-d %B} {clock}"


def handoff_reply(*, facts: LibraryFacts, language: Language, at: dt.datetime) -> str:
    """What the patron is told when handed to a librarian: soon, or from when a librarian is on duty."""
    if staffed_now(facts=facts, at=at):
        return "馆员会尽快在这里回复您。" if language == "zh" else "A librarian will reply here shortly."
    start = next_staffed(facts=facts, at=at)
    if start is None:
        if language == "zh":
            return "馆员现在不在岗，会尽快在这里回复您。"
        return "Librarians are not on duty now; one will answer here as soon as possible."
    when = _when(start, today=_local(facts, at).date(), language=language)
    if language == "zh":
        return f"馆员现在不在岗，{when} 起会在这里回复您。"
    return f"Librarians are not on duty now; one will answer here from {when}."


def contact_reply(*, facts: LibraryFacts, language: Language) -> str:
    """Where the library is and how to reach it."""
    if language == "zh":
        return (
            f"{facts.name['zh']}地址：{facts.address['zh']}。电话：{facts.phone}；"
            f"邮箱：{facts.email}；网站：{facts.website}"
        )
    return (
        f"{facts.name['en']} is at {facts.address['en']}. Phone: {facts.phone}; "
        f"email: {facts.email}; website: {facts.website}"
    )
