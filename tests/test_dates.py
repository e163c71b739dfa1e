"""What day a question is about: relative days, weekdays in this, next and the following week, the
weekend, in both languages, asked on a Monday, a Tuesday, a Friday and a Sunday."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import yaml

from bot.knowledge import facts as facts_module
from bot.knowledge.dates import find_day, find_days
from bot.knowledge.facts import parse_facts
from bot.knowledge.hours import hours_reply
from bot.settings import PROJECT_ROOT

MONDAY = dt.date(2026, 11, 30)
TUESDAY = dt.date(2026, 12, 1)
FRIDAY = dt.date(2026, 12, 4)
SUNDAY = dt.date(2026, 12, 6)


def december(day: int) -> dt.date:
    return dt.date(2026, 12, day)


@pytest.mark.parametrize(
    ("question", "today", "expected"),
    [
        # Days relative to today.
        ("今天开门吗", FRIDAY, FRIDAY),
        ("今日开放时间", SUNDAY, SUNDAY),
        ("明天开门吗", SUNDAY, december(7)),
        ("明日几点开", FRIDAY, december(5)),
        ("后天开吗", FRIDAY, december(6)),
        ("大后天开吗", FRIDAY, december(7)),
        # A bare weekday: the coming one, today included.
        ("周一开门吗", FRIDAY, december(7)),
        ("星期五开吗", FRIDAY, FRIDAY),
        ("礼拜天开吗", MONDAY, december(6)),
        ("周日开吗", SUNDAY, SUNDAY),
        ("星期3开门吗", MONDAY, december(2)),
        ("周7开吗", FRIDAY, december(6)),
        ("请问一下周五开门吗", MONDAY, FRIDAY),  # 一下 softens 问: not 下周五
        # This calendar week (Monday to Sunday), even a day already past.
        ("这周六开吗", MONDAY, december(5)),
        ("本周日开吗", FRIDAY, december(6)),
        ("这周一开了吗", FRIDAY, MONDAY),
        ("这个星期三开吗", SUNDAY, december(2)),
        # Next calendar week, and the week after.
        ("下周五开门吗", FRIDAY, december(11)),
        ("下周日", FRIDAY, december(13)),
        ("下周六", FRIDAY, december(12)),
        ("下周一开吗", MONDAY, december(7)),
        ("下周一开吗", SUNDAY, december(7)),
        ("下个星期三开吗", MONDAY, december(9)),
        ("下星期天开吗", SUNDAY, december(13)),
        ("下礼拜二开吗", FRIDAY, december(8)),
        ("请问一下下周五开门吗", MONDAY, december(11)),
        ("下周一下午开吗", MONDAY, december(7)),  # 周一下午 holds 一下 too
        ("周一下午开吗", MONDAY, MONDAY),
        ("下下周五开吗", FRIDAY, december(18)),
        ("下下个星期一开吗", SUNDAY, december(14)),
        # The weekend (its first day still to come).
        ("周末开吗", FRIDAY, december(5)),
        ("周末开吗", SUNDAY, SUNDAY),
        ("这周末开吗", MONDAY, december(5)),
        ("下周末开门吗", FRIDAY, december(12)),
        ("下个周末开吗", SUNDAY, december(12)),
        # English, the same rules.
        ("are you open today", SUNDAY, SUNDAY),
        ("open tonight?", FRIDAY, FRIDAY),
        ("hours tomorrow", SUNDAY, december(7)),
        ("open the day after tomorrow?", FRIDAY, december(6)),
        ("are you open on Monday", FRIDAY, december(7)),
        ("Friday hours", FRIDAY, FRIDAY),
        ("open sunday?", SUNDAY, SUNDAY),
        ("is it open this Friday", MONDAY, FRIDAY),
        ("this Wednesday's hours", FRIDAY, december(2)),
        ("open this Saturday?", SUNDAY, december(5)),
        ("next Friday hours", FRIDAY, december(11)),
        ("next Friday hours", TUESDAY, december(11)),
        ("open next Monday?", MONDAY, december(7)),
        ("open next Monday?", SUNDAY, december(7)),
        ("is the library open on Friday next week", MONDAY, december(11)),
        ("hours on Tuesday the week after next", FRIDAY, december(15)),
        ("open this weekend?", FRIDAY, december(5)),
        ("open this weekend?", SUNDAY, SUNDAY),
        ("open at the weekend?", MONDAY, december(5)),
        ("next weekend hours", FRIDAY, december(12)),
        ("open this morning?", FRIDAY, None),  # "this mon…" is no Monday
    ],
)
def test_the_day_a_question_is_about(question: str, today: dt.date, expected: dt.date | None) -> None:
    assert find_day(question, today=today) == expected


@pytest.mark.parametrize(
    ("question", "today", "expected"),
    [
        ("周末开吗", FRIDAY, (december(5), december(6))),
        ("这周末开吗", SUNDAY, (SUNDAY,)),  # Saturday is past
        ("下周末开门吗", SUNDAY, (december(12), december(13))),
        ("open this weekend?", MONDAY, (december(5), december(6))),
        ("next weekend hours", FRIDAY, (december(12), december(13))),
        ("下周五开门吗", FRIDAY, (december(11),)),
        ("opening hours", FRIDAY, ()),
    ],
)
def test_the_weekend_is_its_days_still_to_come(
    question: str, today: dt.date, expected: tuple[dt.date, ...]
) -> None:
    assert find_days(question, today=today) == expected


def shipped_facts(*exceptions: dict[str, object]):  # type: ignore[no-untyped-def]
    data = yaml.safe_load((PROJECT_ROOT / "knowledge" / "library.yml").read_text(encoding="utf-8"))
    data["hours_exceptions"] = list(exceptions)
    return parse_facts(data)


def test_next_friday_asked_on_a_friday_is_answered_for_the_friday_a_week_later() -> None:
    facts = shipped_facts()
    chinese = hours_reply(facts=facts, text="下周五开门吗", language="zh", today=FRIDAY)
    assert "周五（12月11日）" in chinese
    assert "12月4日" not in chinese
    english = hours_reply(facts=facts, text="next Friday hours", language="en", today=FRIDAY)
    assert "Friday (11 December)" in english
    assert "4 December" not in english


def test_a_question_about_the_weekend_is_answered_for_both_its_days() -> None:
    stocktaking = {"date": "2026-12-13", "hours": "closed", "note": {"zh": "盘点闭馆", "en": "stocktaking"}}
    facts = shipped_facts(stocktaking)
    chinese = hours_reply(facts=facts, text="下周末开门吗", language="zh", today=FRIDAY)
    assert chinese == (
        "河畔大学图书馆的开放时间：周六（12月12日）09:00–21:00；周日（12月13日）闭馆（盘点闭馆）。"
    )
    english = hours_reply(facts=facts, text="open this weekend?", language="en", today=FRIDAY)
    assert english == (
        "Riverside University Library opening hours: Saturday (5 December) 09:00–21:00;"
        " Sunday (6 December) 09:00–21:00."
    )
    # On the Sunday only the Sunday is left.
    sunday = hours_reply(facts=facts, text="open this weekend?", language="en", today=SUNDAY)
    assert sunday == "Riverside University Library is open 09:00–21:00 on Sunday (6 December)."


@pytest.mark.parametrize(
    ("question", "language", "today", "expected"),
    [
        ("这周一开了吗", "zh", FRIDAY, "河畔大学图书馆周一（11月30日，已过去）的开放时间是 08:00–22:00。"),
        (
            "this Monday's hours",
            "en",
            FRIDAY,
            "Riverside University Library was open 08:00–22:00 on Monday (30 November).",
        ),
        (
            "open on November 20?",
            "en",
            MONDAY,
            "Riverside University Library was open 08:00–22:00 on Friday (20 November).",
        ),
        ("本周五开吗", "zh", FRIDAY, "河畔大学图书馆周五（12月4日）的开放时间是 08:00–22:00。"),
    ],
)
def test_a_day_already_past_is_said_to_be_past(
    question: str, language: str, today: dt.date, expected: str
) -> None:
    reply = hours_reply(facts=shipped_facts(), text=question, language=language, today=today)  # type: ignore[arg-type]
    assert reply == expected


def test_today_is_the_librarys_not_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 20:00 UTC on Friday 4 December it is already Saturday 04:00 in Shanghai, the facts' time zone."""
    facts = shipped_facts()

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return dt.datetime(2026, 12, 4, 20, 0, tzinfo=dt.UTC).astimezone(tz)

    monkeypatch.setattr(facts_module, "dt", SimpleNamespace(datetime=Clock))
    assert "12月6日" in hours_reply(facts=facts, text="明天开门吗", language="zh")
    assert "Saturday (12 December)" in hours_reply(facts=facts, text="next Saturday?", language="en")
