"""Triggered follow-ups: deliveries N days after a first conversation, a low rating, a resolved
escalation or an answered suggestion; once each, not early, not for history, within the segment."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    Conversation,
    Delivery,
    Escalation,
    Feedback,
    Patron,
    Segment,
    SegmentMembership,
    Suggestion,
    utcnow,
)
from bot.outreach import triggers
from bot.outreach.triggers import fill_triggered

DAYS = 3.0
NOW = utcnow()


def ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def patron(session: Session) -> int:
    row = Patron(display_name="p", language="en")
    session.add(row)
    session.flush()
    return int(row.id)


def campaign(
    session: Session,
    event: str,
    *,
    created_days_ago: float = 10.0,
    status: str = "scheduled",
    segment_id: int | None = None,
    days: float = DAYS,
) -> int:
    row = Campaign(
        name=f"after-{event}-{status}-{created_days_ago}-{segment_id}",
        message={"en": "How did it go?"},
        schedule={"after": {"event": event, "days": days}},
        trigger_event=event,
        trigger_days=days,
        status=status,
        segment_id=segment_id,
        created_at=ago(created_days_ago),
    )
    session.add(row)
    session.flush()
    return int(row.id)


# Each event type: make one for a patron at a time; returns the occasion it must be delivered under.
def first_conversation(session: Session, patron_id: int, at: dt.datetime) -> str:
    session.add(
        Conversation(
            patron_id=patron_id, channel="telegram", rasa_sender_id=f"telegram:{patron_id}", started_at=at
        )
    )
    session.flush()
    return "first_conversation"


def low_rating(session: Session, patron_id: int, at: dt.datetime) -> str:
    row = Feedback(patron_id=patron_id, csat=1, created_at=at)
    session.add(row)
    session.flush()
    return f"low_rating:{row.id}"


def escalation_resolved(session: Session, patron_id: int, at: dt.datetime) -> str:
    row = Escalation(
        patron_id=patron_id,
        reason="complaint",
        status="resolved",
        created_at=at - dt.timedelta(hours=2),
        due_at=at,
        resolved_at=at,
    )
    session.add(row)
    session.flush()
    return f"escalation_resolved:{row.id}"


def suggestion_answered(session: Session, patron_id: int, at: dt.datetime) -> str:
    row = Suggestion(
        patron_id=patron_id,
        kind="purchase",
        text="buy more chemistry books",
        status="accepted",
        library_answer="ordered",
        answered_at=at,
        created_at=at - dt.timedelta(days=1),
    )
    session.add(row)
    session.flush()
    return f"suggestion_answered:{row.id}"


MAKERS: dict[str, Callable[[Session, int, dt.datetime], str]] = {
    "first_conversation": first_conversation,
    "low_rating": low_rating,
    "escalation_resolved": escalation_resolved,
    "suggestion_answered": suggestion_answered,
}


def deliveries(engine: Engine) -> list[tuple[int, int | None, str, dt.datetime, str]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                Delivery.campaign_id,
                Delivery.patron_id,
                Delivery.occasion,
                Delivery.scheduled_at,
                Delivery.state,
            ).order_by(Delivery.id)
        ).all()
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("event", sorted(MAKERS))
def test_each_event_brings_its_follow_up_once_after_its_days(crm: Engine, event: str) -> None:
    make = MAKERS[event]
    with session_scope(crm) as session:
        campaign_id = campaign(session, event)
        due, early, historic = patron(session), patron(session), patron(session)
        due_occasion = make(session, due, ago(4))  # 4 days ago: due a day ago
        early_occasion = make(session, early, ago(1))  # a day ago: due in two days
        make(session, historic, ago(12))  # before the campaign was created: never

    assert fill_triggered(engine=crm, now=NOW) == 1
    assert fill_triggered(engine=crm, now=NOW) == 0  # again: no duplicate
    rows = deliveries(crm)
    assert [(c, p, o, s) for c, p, o, _, s in rows] == [(campaign_id, due, due_occasion, "pending")]
    assert rows[0][3] == ago(4) + dt.timedelta(days=DAYS)  # scheduled for the event time plus its days

    # Two and a half days on, the later event is due too; the first is not made again.
    later = NOW + dt.timedelta(days=2.5)
    assert fill_triggered(engine=crm, now=later) == 1
    assert [(p, o) for _, p, o, _, _ in deliveries(crm)] == [(due, due_occasion), (early, early_occasion)]


def test_only_the_first_conversation_counts(crm: Engine) -> None:
    with session_scope(crm) as session:
        campaign(session, "first_conversation")
        newcomer, regular = patron(session), patron(session)
        first_conversation(session, newcomer, ago(5))
        first_conversation(session, newcomer, ago(4))  # a second conversation: not a new event
        first_conversation(session, regular, ago(30))  # a patron since before the campaign
        first_conversation(session, regular, ago(5))

    assert fill_triggered(engine=crm, now=NOW) == 1
    rows = deliveries(crm)
    assert [(p, o) for _, p, o, _, _ in rows] == [(newcomer, "first_conversation")]
    assert rows[0][3] == ago(5) + dt.timedelta(days=DAYS)


def test_ratings_that_are_not_low_bring_nothing(crm: Engine) -> None:
    with session_scope(crm) as session:
        campaign(session, "low_rating")
        happy, detractor, unhappy = patron(session), patron(session), patron(session)
        session.add_all(
            [
                Feedback(patron_id=happy, csat=4, nps=9, created_at=ago(4)),
                Feedback(patron_id=happy, helpful=False, created_at=ago(4)),
                Feedback(patron_id=detractor, nps=6, created_at=ago(4)),
                Feedback(patron_id=unhappy, csat=2, created_at=ago(4)),
                Feedback(patron_id=None, csat=1, created_at=ago(4)),  # an erased patron's rating
            ]
        )

    assert fill_triggered(engine=crm, now=NOW) == 2
    assert sorted(p or 0 for _, p, _, _, _ in deliveries(crm)) == [detractor, unhappy]


def test_open_escalations_and_unanswered_suggestions_bring_nothing(crm: Engine) -> None:
    with session_scope(crm) as session:
        campaign(session, "escalation_resolved")
        campaign(session, "suggestion_answered")
        waiting = patron(session)
        session.add_all(
            [
                Escalation(
                    patron_id=waiting, reason="complaint", status="open", created_at=ago(5), due_at=ago(4)
                ),
                # Cancelled, not resolved: nothing to follow up.
                Escalation(
                    patron_id=waiting,
                    reason="other",
                    status="cancelled",
                    created_at=ago(5),
                    due_at=ago(4),
                    resolved_at=ago(4),
                ),
                Suggestion(patron_id=waiting, kind="service", text="open earlier", created_at=ago(5)),
            ]
        )

    assert fill_triggered(engine=crm, now=NOW) == 0
    assert deliveries(crm) == []


def test_events_older_than_the_lookback_are_left_alone(crm: Engine) -> None:
    with session_scope(crm) as session:
        campaign(session, "low_rating", created_days_ago=60)
        recent, old = patron(session), patron(session)
        low_rating(session, recent, ago(9))  # due 6 days ago: within the 7-day lookback
        low_rating(session, old, ago(20))  # due 17 days ago: the campaign does not dig that far

    assert fill_triggered(engine=crm, now=NOW, lookback_days=7) == 1
    assert [p for _, p, _, _, _ in deliveries(crm)] == [recent]


def test_the_segment_filter_is_respected(crm: Engine) -> None:
    with session_scope(crm) as session:
        member, outsider = patron(session), patron(session)
        segment = Segment(name="members", definition=None)  # made by hand: used as it is
        session.add(segment)
        session.flush()
        session.add(SegmentMembership(segment_id=segment.id, patron_id=member))
        campaign(session, "low_rating", segment_id=int(segment.id))
        low_rating(session, member, ago(4))
        low_rating(session, outsider, ago(4))

    assert fill_triggered(engine=crm, now=NOW) == 1
    assert [p for _, p, _, _, _ in deliveries(crm)] == [member]


def test_a_stale_rule_segment_is_refreshed_first(crm: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(crm) as session:
        joined = patron(session)
        segment = Segment(
            name="rule", definition={"rules": {}}, refreshed_at=utcnow() - dt.timedelta(hours=1)
        )
        session.add(segment)
        session.flush()
        segment_id = int(segment.id)
        campaign(session, "low_rating", segment_id=segment_id)
        low_rating(session, joined, ago(4))
    refreshed: list[int] = []

    def refresh_membership(*, engine: Engine, segment_id: int) -> int:
        # What the segment's rules say now: the patron has joined it since it was last computed.
        refreshed.append(segment_id)
        with session_scope(engine) as session:
            session.add(SegmentMembership(segment_id=segment_id, patron_id=joined))
            session.get(Segment, segment_id).refreshed_at = utcnow()  # type: ignore[union-attr]
        return 1

    import bot.outreach.segments

    monkeypatch.setattr(bot.outreach.segments, "refresh_membership", refresh_membership)
    assert fill_triggered(engine=crm, now=NOW) == 1
    assert fill_triggered(engine=crm, now=NOW) == 0
    assert refreshed == [segment_id]  # fresh the second time: not computed again
    assert [p for _, p, _, _, _ in deliveries(crm)] == [joined]


@pytest.mark.parametrize("status", ["draft", "paused", "cancelled", "done"])
def test_inactive_campaigns_make_no_follow_ups(crm: Engine, status: str) -> None:
    with session_scope(crm) as session:
        campaign(session, "low_rating", status=status)
        low_rating(session, patron(session), ago(4))

    assert fill_triggered(engine=crm, now=NOW) == 0
    assert deliveries(crm) == []


def test_every_trigger_event_of_the_schema_has_a_query() -> None:
    from bot.crm.models import TRIGGER_EVENTS

    assert sorted(triggers.EVENTS) == sorted(TRIGGER_EVENTS)
