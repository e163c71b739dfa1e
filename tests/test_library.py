"""The library's facts file and the opening-hours and contact answers built from it."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import yaml

from bot.library import FactsError, find_day, hours_reply, load_facts, parse_facts
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
