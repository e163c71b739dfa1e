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
    for index, entry in enumerate(raw.get("hours_exceptions") or []):
        where = f"{source}: hours_exceptions[{index}]"
        if not isinstance(entry, dict):
            raise FactsError(f"{where} must be a mapping with date, hours and note")
        try:
            day = dt.date.fromisoformat(str(entry.get("date")))
        except ValueError:
            raise FactsError(f"{where}.date must be a date like 2026-10-01") from None
        note = bilingual(f"hours_exceptions[{index}].note", entry.get("note") or {"zh": "", "en": ""})
        exceptions[day] = _opening(entry.get("hours"), where=f"{where}.hours", note=note)
        # Librarians are off when the library is closed, unless the entry says when they are on.
        if "staffed" in entry:
            staffed_exceptions[day] = _opening(entry["staffed"], where=f"{where}.staffed")
        elif exceptions[day].closed:
            staffed_exceptions[day] = exceptions[day]
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
    if language == "zh":
        return f"{facts.name['zh']}的开放时间：" + "；".join(parts) + "。今天：" + today_line
    return f"{facts.name['en']} opening hours: " + "; ".join(parts) + ". Today: " + today_line


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


def find_day(text: str, *, today: dt.date) -> dt.date | None:
    """The date a patron's question is about ("on Saturday", "明天"), or None if it names none."""
    for pattern, offset in _RELATIVE:
        if pattern.search(text):
            return today + dt.timedelta(days=offset)
    for pattern, weekday in _DAY_WORDS:
        if pattern.search(text):
            return today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    return None


def hours_reply(*, facts: LibraryFacts, text: str, language: Language, today: dt.date | None = None) -> str:
    """The answer to an opening-hours question: the day it asks about, or the whole week."""
    today = today or facts.today()
    day = find_day(text, today=today)
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
