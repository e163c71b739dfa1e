"""Consent as history with immediate effect, and the audit trail of staff reads."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.audit import AuditReasonError, read_patron_record
from bot.crm.consent import current_consents, has_consent, record_consent
from bot.crm.database import session_scope
from bot.crm.models import (
    AuditLog,
    Campaign,
    Consent,
    Delivery,
    Patron,
    PatronInterest,
    Persona,
    Segment,
    SegmentMembership,
)
from bot.crm.patrons import PatronKey, PatronNotFoundError, get_or_create_patron


def new_patron(crm: Engine, external_id: str = "alice") -> int:
    with session_scope(crm) as session:
        return get_or_create_patron(session=session, key=PatronKey("rest", external_id))


def test_defaults_before_any_decision(crm: Engine) -> None:
    patron = new_patron(crm)
    with Session(crm, future=True) as session:
        assert current_consents(session=session, patron_id=patron) == {
            "service": True,
            "follow_up": False,
            "profiling": False,
            "cross_border": False,
        }


def test_withdrawing_cancels_pending_deliveries_at_once_and_keeps_history(crm: Engine) -> None:
    patron = new_patron(crm)
    with session_scope(crm) as session:
        record_consent(
            session=session, patron_id=patron, purpose="follow_up", granted=True, wording_version="v1"
        )
        follow_up = Campaign(name="new members", purpose="follow_up", message={"zh": "欢迎", "en": "Welcome"})
        service = Campaign(name="hold ready", purpose="service", message={"zh": "取书", "en": "Pick up"})
        session.add_all([follow_up, service])
        session.flush()
        session.add_all(
            [
                Delivery(campaign_id=follow_up.id, patron_id=patron),
                Delivery(campaign_id=service.id, patron_id=patron),
            ]
        )
    with session_scope(crm) as session:
        change = record_consent(
            session=session, patron_id=patron, purpose="follow_up", granted=False, channel="rest"
        )
    assert change.changed
    assert change.cancelled_deliveries == 1
    with Session(crm, future=True) as session:
        states = dict(session.execute(select(Campaign.purpose, Delivery.state).join(Campaign)).all())
        assert states == {"follow_up": "skipped", "service": "pending"}
        assert not has_consent(session=session, patron_id=patron, purpose="follow_up")
        history = session.execute(select(Consent.granted).order_by(Consent.id)).scalars().all()
        assert history == [True, False]


def test_withdrawing_twice_changes_nothing_the_second_time(crm: Engine) -> None:
    patron = new_patron(crm)
    with session_scope(crm) as session:
        record_consent(session=session, patron_id=patron, purpose="follow_up", granted=True)
        first = record_consent(session=session, patron_id=patron, purpose="follow_up", granted=False)
        second = record_consent(session=session, patron_id=patron, purpose="follow_up", granted=False)
    assert (first.changed, second.changed) == (True, False)
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(Consent)).scalar_one() == 2


def test_withdrawing_profiling_clears_what_was_built_on_it(crm: Engine) -> None:
    patron = new_patron(crm)
    with session_scope(crm) as session:
        record_consent(session=session, patron_id=patron, purpose="profiling", granted=True)
        session.get(Patron, patron).interests = ["history", "law"]
        persona = Persona(key="p1", name_en="law", name_zh="法律", topics=[], words={}, size=1)
        session.add(persona)
        session.flush()
        session.get(Patron, patron).persona_id = persona.id
        session.add(PatronInterest(patron_id=patron, vector=b"\0\0\x80?", dims=1, model="m", messages=1))
        by_rule = Segment(name="law readers", definition={"interest": "law"})
        by_hand = Segment(name="volunteers")
        session.add_all([by_rule, by_hand])
        session.flush()
        session.add_all(
            [
                SegmentMembership(segment_id=by_rule.id, patron_id=patron),
                SegmentMembership(segment_id=by_hand.id, patron_id=patron),
            ]
        )
    with session_scope(crm) as session:
        record_consent(session=session, patron_id=patron, purpose="profiling", granted=False)
    with Session(crm, future=True) as session:
        assert session.get(Patron, patron).interests == []
        assert session.get(Patron, patron).persona_id is None
        assert session.get(PatronInterest, patron) is None
        segments = session.execute(select(Segment.name).join(SegmentMembership)).scalars().all()
        assert segments == ["volunteers"]


def test_unknown_purpose_and_unknown_patron_are_refused(crm: Engine) -> None:
    patron = new_patron(crm)
    with pytest.raises(ValueError, match="unknown consent purpose 'spam'"), session_scope(crm) as session:
        record_consent(session=session, patron_id=patron, purpose="spam", granted=True)
    with pytest.raises(LookupError, match="no patron 424242"), session_scope(crm) as session:
        record_consent(session=session, patron_id=424242, purpose="follow_up", granted=True)


def test_every_staff_read_is_audited_with_a_reason(crm: Engine) -> None:
    patron = new_patron(crm, "bob")
    with session_scope(crm) as session:
        record = read_patron_record(
            session=session, actor="li.wei", patron_ref="rest:bob", reason="escalation 17"
        )
    assert record.patron_id == patron
    assert record.channels == ["rest:bob"]
    with Session(crm, future=True) as session:
        entry = session.execute(select(AuditLog)).scalar_one()
        assert (entry.actor, entry.action, entry.patron_id, entry.reason) == (
            "li.wei",
            "read",
            patron,
            "escalation 17",
        )


def test_a_read_without_a_reason_is_refused_and_not_performed(crm: Engine) -> None:
    new_patron(crm, "carol")
    with pytest.raises(AuditReasonError), session_scope(crm) as session:
        read_patron_record(session=session, actor="li.wei", patron_ref="rest:carol", reason="  ")
    with pytest.raises(PatronNotFoundError), session_scope(crm) as session:
        read_patron_record(session=session, actor="li.wei", patron_ref="rest:nobody", reason="why")
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(AuditLog)).scalar_one() == 0
