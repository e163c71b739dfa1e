"""The library's facts file and the opening-hours and contact answers built from it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot.knowledge.dates import find_day
from bot.knowledge.facts import WEEKDAYS, FactsError, load_facts, parse_facts
from bot.knowledge.hours import hours_reply
from bot.knowledge.staffed_hours import handoff_reply, next_staffed, staffed_now
from bot.settings import PROJECT_ROOT

FACTS_FILE = PROJECT_ROOT / "knowledge" / "library.yml"
WEDNESDAY = dt.date(2026, 11, 25)


def raw_facts() -> dict:
    return yaml.safe_load(FACTS_FILE.read_text(encoding="utf-8"))


def test_the_shipped_facts_file_is_valid() -> None:
    facts = load_facts(FACTS_FILE)
    assert facts.name["zh"]
    assert facts.name["en"]
    assert set(facts.weekly) == {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("When do you open on Saturday?", dt.date(2026, 11, 28)),
        ("周六几点开门", dt.date(2026, 11, 28)),
        ("星期天开吗", dt.date(2026, 11, 29)),
        ("are you open today", WEDNESDAY),
        ("明天开门吗", dt.date(2026, 11, 26)),
        ("is the library open on wednesday", WEDNESDAY),
        ("what are your hours", None),
    ],
)
def test_find_day(text: str, expected: dt.date | None) -> None:
    assert find_day(text, today=WEDNESDAY) == expected


def test_hours_for_a_named_day_in_each_language() -> None:
    data = raw_facts()
    data["hours"]["saturday"] = "10:30-17:45"
    facts = parse_facts(data)
    english = hours_reply(facts=facts, text="When do you open on Saturday?", language="en", today=WEDNESDAY)
    chinese = hours_reply(facts=facts, text="周六几点开门？", language="zh", today=WEDNESDAY)
    assert "10:30–17:45" in english
    assert "Saturday" in english
    assert "10:30–17:45" in chinese
    assert "周六" in chinese
    assert "Saturday" not in chinese


def test_week_summary_groups_days_and_says_today() -> None:
    facts = parse_facts(raw_facts())
    reply = hours_reply(facts=facts, text="opening hours", language="en", today=WEDNESDAY)
    assert "Monday–Friday 08:00–22:00" in reply
    assert "Saturday–Sunday 09:00–21:00" in reply
    assert "Today: " in reply
    assert "Wednesday" in reply


def test_exception_day_overrides_the_weekday() -> None:
    data = raw_facts()
    data["hours_exceptions"] = [
        {"date": "2026-11-28", "hours": "closed", "note": {"zh": "盘点闭馆", "en": "stocktaking"}}
    ]
    facts = parse_facts(data)
    reply = hours_reply(facts=facts, text="周六开吗", language="zh", today=WEDNESDAY)
    assert "闭馆" in reply
    assert "盘点闭馆" in reply


EXAMS = {"date": "2026-12-28", "until": "2027-01-10", "hours": "07:30-23:30",
         "note": {"zh": "期末考试周延长开放", "en": "longer hours for exams"}}  # fmt: skip
NEW_YEAR = {"date": "2027-01-01", "hours": "closed", "note": {"zh": "元旦闭馆", "en": "New Year's Day"}}


def facts_with(*exceptions: dict) -> Any:
    data = raw_facts()
    data["hours_exceptions"] = list(exceptions)
    return parse_facts(data)


def test_a_period_of_special_hours_covers_every_day_from_date_until() -> None:
    facts = facts_with(EXAMS)
    assert facts.opening_on(dt.date(2026, 12, 28)).span() == "07:30–23:30"
    assert facts.opening_on(dt.date(2027, 1, 10)).span() == "07:30–23:30"
    assert facts.opening_on(dt.date(2027, 1, 11)).span() == "08:00–22:00"  # a Monday again
    assert facts.opening_on(dt.date(2026, 12, 27)).span() == "09:00–21:00"  # a Sunday before it


@pytest.mark.parametrize(
    ("until", "message"),
    [("2026-12-01", "on or after date"), ("2028-06-01", "within 366 days"), ("soon", "a date like")],
)
def test_a_bad_period_names_its_key(until: str, message: str) -> None:
    with pytest.raises(FactsError, match=rf"hours_exceptions\[0\]\.until .*{message}"):
        facts_with(EXAMS | {"until": until})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("are you open on 2027-01-01?", dt.date(2027, 1, 1)),
        ("1月1日开馆吗", dt.date(2027, 1, 1)),  # no year, already past this year: next year's
        ("2026年12月31号开门吗", dt.date(2026, 12, 31)),
        ("open on 1 January?", dt.date(2027, 1, 1)),
        ("hours on the 3rd of January", dt.date(2027, 1, 3)),
        ("is the library open Dec 24", dt.date(2026, 12, 24)),
        ("open on November 20?", dt.date(2026, 11, 20)),  # last week: still this year's
        ("2月30日开吗", None),
        ("may I come in on saturday", dt.date(2026, 11, 28)),
    ],
)
def test_find_day_reads_calendar_dates(text: str, expected: dt.date | None) -> None:
    assert find_day(text, today=WEDNESDAY) == expected


def test_a_question_about_exams_or_holidays_lists_the_special_hours_coming_up() -> None:
    christmas = {"date": "2026-12-24", "hours": "closed", "note": {"zh": "圣诞节", "en": "Christmas Eve"}}
    facts = facts_with(EXAMS, christmas)
    english = hours_reply(facts=facts, text="when are you open during exams?", language="en", today=WEDNESDAY)
    assert english.endswith(
        "special hours coming up: 24 December: closed (Christmas Eve); 28 December 2026 – 10 January"
        " 2027: 07:30–23:30 (longer hours for exams). On other days the regular hours apply."
    )
    chinese = hours_reply(facts=facts, text="寒假和考试周怎么开放", language="zh", today=WEDNESDAY)
    assert "2026年12月28日至2027年1月10日 07:30–23:30（期末考试周延长开放）" in chinese
    # In the middle of the period it is still listed whole.
    during = hours_reply(facts=facts, text="exam hours", language="en", today=dt.date(2027, 1, 5))
    assert "28 December 2026 – 10 January 2027" in during
    assert "Christmas" not in during  # over by then


def test_a_holiday_inside_a_period_keeps_its_own_hours_whatever_the_order() -> None:
    for facts in (facts_with(NEW_YEAR, EXAMS), facts_with(EXAMS, NEW_YEAR)):
        assert facts.opening_on(dt.date(2027, 1, 1)).closed
        assert facts.opening_on(dt.date(2027, 1, 2)).span() == "07:30–23:30"
        reply = hours_reply(facts=facts, text="exam period hours", language="en", today=WEDNESDAY)
        assert "28–31 December: 07:30–23:30" in reply
        assert "1 January 2027: closed (New Year's Day); 2–10 January 2027: 07:30–23:30" in reply


def test_no_special_hours_announced_says_so_and_gives_the_week() -> None:
    facts = facts_with()
    reply = hours_reply(facts=facts, text="holiday opening hours", language="en", today=WEDNESDAY)
    assert reply.startswith("No special hours are announced")
    assert "Monday–Friday 08:00–22:00" in reply
    chinese = hours_reply(facts=facts, text="晚上十一点还开吗", language="zh", today=WEDNESDAY)
    assert chinese.startswith(f"{facts.name['zh']}的开放时间")  # 十一点 is eleven o'clock, not 十一


def test_the_week_mentions_special_hours_in_the_next_two_weeks_only() -> None:
    later_holiday = {"date": "2027-01-20", "hours": "closed", "note": {"zh": "闭馆", "en": "closed"}}
    facts = facts_with(EXAMS, later_holiday)
    soon = hours_reply(facts=facts, text="opening hours", language="en", today=dt.date(2026, 12, 20))
    coming = "Coming up: 28 December 2026 – 10 January 2027: 07:30–23:30 (longer hours for exams)."
    assert soon.endswith(coming)
    assert "20 January" not in soon  # more than two weeks ahead
    later = hours_reply(facts=facts, text="opening hours", language="en", today=WEDNESDAY)
    assert "Coming up" not in later


def test_edits_to_the_facts_file_apply_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "library.yml"
    data = raw_facts()
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_facts(path).weekly["monday"].span() == "08:00–22:00"
    data["hours"]["monday"] = "07:00-23:00"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_facts(path).weekly["monday"].span() == "07:00–23:00"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["hours"].pop("sunday"), "'hours' must give hours for each of"),
        (
            lambda d: d["hours"].__setitem__("monday", "8am-10pm"),
            "hours.monday must be 'HH:MM-HH:MM' or 'closed'",
        ),
        (lambda d: d["hours"].__setitem__("monday", "22:00-08:00"), "hours.monday closes before it opens"),
        (lambda d: d.__setitem__("timezone", "Mars/Olympus"), "'timezone' is not a known time zone"),
        (lambda d: d["name"].pop("zh"), "'name' needs a text for each of zh, en"),
    ],
)
def test_malformed_facts_are_reported_by_key(change, message: str) -> None:  # type: ignore[no-untyped-def]
    data = raw_facts()
    change(data)
    with pytest.raises(FactsError, match=message.replace("(", r"\(")):
        parse_facts(data)


def test_missing_facts_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FactsError, match="cannot read the library facts file"):
        load_facts(tmp_path / "nope.yml")


def staffed_facts(**changes: object):  # type: ignore[no-untyped-def]
    data = raw_facts()
    data["staffed_hours"] = {
        **dict.fromkeys(("monday", "tuesday", "wednesday", "thursday", "friday"), "09:00-17:00"),
        "saturday": "closed",
        "sunday": "closed",
    }
    data.update(changes)
    return parse_facts(data)


SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (dt.datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI), True),
        (dt.datetime(2026, 11, 25, 16, 59, tzinfo=SHANGHAI), True),
        (dt.datetime(2026, 11, 25, 17, 0, tzinfo=SHANGHAI), False),
        (dt.datetime(2026, 11, 25, 8, 59, tzinfo=SHANGHAI), False),
        (dt.datetime(2026, 11, 28, 11, 0, tzinfo=SHANGHAI), False),  # Saturday
        # 02:00 UTC is 10:00 in Shanghai, the facts file's time zone.
        (dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC), True),
        (dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC), False),
    ],
)
def test_staffed_now_follows_the_staffed_hours_in_the_librarys_time_zone(
    at: dt.datetime, expected: bool
) -> None:
    assert staffed_now(facts=staffed_facts(), at=at) is expected


def test_next_staffed_is_now_or_the_next_opening() -> None:
    facts = staffed_facts()
    wednesday_10 = dt.datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)
    assert next_staffed(facts=facts, at=wednesday_10) == wednesday_10
    early = next_staffed(facts=facts, at=dt.datetime(2026, 11, 25, 7, 30, tzinfo=SHANGHAI))
    assert early == dt.datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI)
    weekend = next_staffed(facts=facts, at=dt.datetime(2026, 11, 27, 18, 0, tzinfo=SHANGHAI))
    assert weekend == dt.datetime(2026, 11, 30, 9, 0, tzinfo=SHANGHAI)
    assert weekend is not None
    assert weekend.utcoffset() == dt.timedelta(hours=8)


def test_a_closed_holiday_has_no_librarians_unless_the_exception_says_so() -> None:
    holiday = {"date": "2026-11-26", "hours": "closed", "note": {"zh": "闭馆", "en": "closed"}}
    thursday_10 = dt.datetime(2026, 11, 26, 10, 0, tzinfo=SHANGHAI)
    facts = staffed_facts(hours_exceptions=[holiday])
    assert staffed_now(facts=facts, at=thursday_10) is False
    assert next_staffed(facts=facts, at=thursday_10) == dt.datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI)
    on_call = staffed_facts(hours_exceptions=[holiday | {"staffed": "10:00-12:00"}])
    assert staffed_now(facts=on_call, at=thursday_10) is True


def test_without_staffed_hours_librarians_are_on_duty_in_opening_hours() -> None:
    data = raw_facts()
    data.pop("staffed_hours", None)
    facts = parse_facts(data)
    assert staffed_now(facts=facts, at=dt.datetime(2026, 11, 28, 20, 0, tzinfo=SHANGHAI)) is True  # Sat 09-21
    assert staffed_now(facts=facts, at=dt.datetime(2026, 11, 28, 21, 30, tzinfo=SHANGHAI)) is False


def test_never_staffed_has_no_next_time() -> None:
    facts = staffed_facts(staffed_hours=dict.fromkeys(WEEKDAYS, "closed"))
    at = dt.datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI)
    assert next_staffed(facts=facts, at=at) is None
    assert "as soon as possible" in handoff_reply(facts=facts, language="en", at=at)


@pytest.mark.parametrize(
    ("at", "language", "expected"),
    [
        (dt.datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI), "en", "A librarian will reply here shortly."),
        (dt.datetime(2026, 11, 25, 10, 0, tzinfo=SHANGHAI), "zh", "馆员会尽快在这里回复您。"),
        (
            dt.datetime(2026, 11, 27, 18, 0, tzinfo=SHANGHAI),
            "en",
            "Librarians are not on duty now; one will answer here from Monday 09:00.",
        ),
        (
            dt.datetime(2026, 11, 27, 18, 0, tzinfo=SHANGHAI),
            "zh",
            "馆员现在不在岗，周一 09:00 起会在这里回复您。",
        ),
        (
            dt.datetime(2026, 11, 25, 18, 0, tzinfo=SHANGHAI),
            "en",
            "Librarians are not on duty now; one will answer here from tomorrow 09:00.",
        ),
        (
            dt.datetime(2026, 11, 25, 7, 0, tzinfo=SHANGHAI),
            "zh",
            "馆员现在不在岗，今天 09:00 起会在这里回复您。",
        ),
    ],
)
def test_handoff_reply_says_when_a_librarian_answers(at: dt.datetime, language: str, expected: str) -> None:
    assert handoff_reply(facts=staffed_facts(), language=language, at=at) == expected  # type: ignore[arg-type]


def test_staff_response_time_comes_from_the_facts_file() -> None:
    assert staffed_facts(staff_response_minutes=20).staff_response == dt.timedelta(minutes=20)
    assert load_facts(FACTS_FILE).staff_response == dt.timedelta(minutes=60)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"staffed_hours": {"monday": "09:00-17:00"}}, "'staffed_hours' must give hours for each of"),
        (
            {"staffed_hours": {**dict.fromkeys(WEEKDAYS, "closed"), "friday": "9-5"}},
            "staffed_hours.friday must be 'HH:MM-HH:MM' or 'closed'",
        ),
        ({"staff_response_minutes": 0}, "'staff_response_minutes' must be a whole number of minutes"),
        ({"staff_response_minutes": "soon"}, "'staff_response_minutes' must be a whole number of minutes"),
        (
            {"hours_exceptions": [{"date": "2026-11-26", "hours": "closed", "staffed": "late"}]},
            r"hours_exceptions\[0\].staffed must be 'HH:MM-HH:MM'",
        ),
    ],
)
def test_malformed_staffed_hours_are_reported_by_key(changes: dict[str, object], message: str) -> None:
    with pytest.raises(FactsError, match=message):
        staffed_facts(**changes)


def test_staffed_hours_refuse_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        staffed_now(facts=staffed_facts(), at=dt.datetime(2026, 11, 25, 10, 0))
