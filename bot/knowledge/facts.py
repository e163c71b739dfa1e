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
ZH_WEEKDAYS = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
EN_WEEKDAYS = tuple(day.capitalize() for day in WEEKDAYS)
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
    return (ZH_WEEKDAYS if language == "zh" else EN_WEEKDAYS)[day.weekday()]


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
