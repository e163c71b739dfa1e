"""Staffed hours: is a librarian on duty, when is one next, and what a patron handed over is told."""

from __future__ import annotations

import datetime as dt

from bot.knowledge.facts import LibraryFacts, weekday_name
from bot.language import Language


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
