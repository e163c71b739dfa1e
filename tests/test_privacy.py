"""Privacy rights: export reaches every table and Rasa store, erasure leaves nothing, retention purges."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.consent import record_consent
from bot.crm.database import make_engine, session_scope
from bot.crm.models import (
    AuditLog,
    Base,
    Campaign,
    Delivery,
    ErasedSender,
    Escalation,
    Feedback,
    Interaction,
    InteractionStat,
    KnowledgeProposal,
    OutboxMessage,
    Patron,
    PatronInterest,
    Segment,
    SegmentMembership,
    StaffUser,
    Suggestion,
)
from bot.crm.patrons import PatronKey, PatronNotFoundError, find_patron_ids
from bot.crm.rasa_events import RasaEventStore
from bot.engagement.escalations import EscalationError, resolve_escalation, staff_reply
from bot.engagement.feedback import record_report
from bot.ingest.events import IngestState, ingest_events
from bot.knowledge.facts import LibraryFacts
from bot.privacy.erasure import ERASED_NOTE, erase_patron, sender_digest
from bot.privacy.export import export_patron
from bot.privacy.records import patron_tables
from bot.privacy.retention import purge_expired
from tests.factories import bot_event, broker_table, publish, user_event

T0 = 1_795_000_000.0


@pytest.fixture
def tracker(tmp_path: Path) -> RasaEventStore:
    """A SQL store in Rasa's event-table layout holding two patrons' events."""
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    engine = make_engine(url)
    table = broker_table(engine)
    publish(
        engine, table, [user_event("rest:alice", "my card number is 12345"), user_event("rest:bob", "hi")]
    )
    engine.dispose()
    return RasaEventStore(name="tracker_store", url=url)


def populate(crm: Engine) -> int:
    """Alice, with a row in every table that can hold a patron, and Bob, who must be untouched."""
    events = [
        user_event("rest:alice", "我想推荐买一本书", intent="suggestion", language="zh", timestamp=T0),
        bot_event("rest:alice", "谢谢您的建议", timestamp=T0 + 1),
        user_event("telegram:77", "hello", timestamp=T0 + 2, channel="telegram"),
        user_event("rest:bob", "hi", timestamp=T0 + 3),
    ]
    with session_scope(crm) as session:
        ingest_events(session=session, events=events, state=IngestState())
    with session_scope(crm) as session:
        ids = find_patron_ids(session=session, keys=[PatronKey("rest", "alice"), PatronKey("telegram", "77")])
        alice = ids[PatronKey("rest", "alice")]
        # The telegram identity is Alice's too (she linked her accounts).
        session.execute(
            text("UPDATE channel_identity SET patron_id = :a WHERE channel = 'telegram'"), {"a": alice}
        )
        session.execute(
            text("UPDATE interaction SET patron_id = :a WHERE channel = 'telegram'"), {"a": alice}
        )
        session.execute(
            text("UPDATE conversation SET patron_id = :a WHERE channel = 'telegram'"), {"a": alice}
        )
        session.execute(text("DELETE FROM patron WHERE id = :t"), {"t": ids[PatronKey("telegram", "77")]})
        conversation_id = (
            session.execute(text("SELECT id FROM conversation WHERE patron_id = :a"), {"a": alice})
            .scalars()
            .first()
        )
        staff = StaffUser(username="li.wei", role="librarian")
        segment = Segment(name="postgraduates", definition={"patron_type": "postgraduate"})
        session.add_all([staff, segment])
        session.flush()
        campaign = Campaign(
            name="new database",
            segment_id=segment.id,
            purpose="follow_up",
            message={"zh": "新库", "en": "New"},
        )
        session.add(campaign)
        session.flush()
        record_consent(session=session, patron_id=alice, purpose="follow_up", granted=True, channel="rest")
        session.add_all(
            [
                Feedback(
                    patron_id=alice,
                    conversation_id=conversation_id,
                    rasa_sender_id="rest:alice",
                    csat=2,
                    comment="太吵了 my phone 138",
                    topic="spaces",
                ),
                Suggestion(
                    patron_id=alice,
                    conversation_id=conversation_id,
                    rasa_sender_id="rest:alice",
                    kind="purchase",
                    text="买《三体》英文版",
                ),
                Escalation(
                    patron_id=alice,
                    conversation_id=conversation_id,
                    channel="rest",
                    rasa_sender_id="rest:alice",
                    reason="low_rating",
                    due_at=dt.datetime(2026, 11, 26, tzinfo=dt.UTC),
                    resolution_note="called her back",
                ),
                SegmentMembership(segment_id=segment.id, patron_id=alice),
                PatronInterest(patron_id=alice, vector=b"\x00\x00\x80\x3f", dims=1, model="test", messages=1),
                Delivery(campaign_id=campaign.id, patron_id=alice, channel="rest"),
                AuditLog(actor="li.wei", action="read", patron_id=alice, reason="answering her escalation"),
                KnowledgeProposal(
                    kind="alternative", entry_id="lost-card", lang="zh", question="卡丢了", patron_id=alice
                ),
                OutboxMessage(
                    channel="rest",
                    recipient="rest:alice",
                    patron_id=alice,
                    text="您的卡已续期",
                    produced_by="staff:li",
                ),
                # Queued for her telegram conversation without the patron key: found by the sender id.
                OutboxMessage(
                    channel="telegram", recipient="telegram:77", text="see you", produced_by="staff:li"
                ),
                OutboxMessage(channel="rest", recipient="rest:bob", text="hello bob", produced_by="staff:li"),
            ]
        )
    return alice


def rows_referencing(crm: Engine, patron_id: int) -> dict[str, int]:
    found = {}
    with crm.connect() as connection:
        for table in patron_tables():
            count = connection.execute(
                select(func.count()).select_from(table).where(table.c.patron_id == patron_id)
            ).scalar_one()
            if count:
                found[table.name] = count
    return found


def test_export_holds_every_table_with_a_patron_key_and_the_tracker(
    crm: Engine, tracker: RasaEventStore
) -> None:
    alice = populate(crm)
    with session_scope(crm) as session:
        document = export_patron(
            session=session,
            patron_ref="rest:alice",
            actor="cli:test",
            reason="her request",
            rasa_stores=[tracker],
        )
    json.dumps(document, ensure_ascii=False)  # machine-readable as it is
    # Walk the schema: every table that can hold a patron key must be in the export.
    holding = {table.name for table in Base.metadata.sorted_tables if "patron_id" in table.c}
    assert holding <= set(document["tables"])
    assert holding == {table.name for table in patron_tables()}
    assert document["patron"]["id"] == alice
    for name in holding:
        assert document["tables"][name], f"export of {name} is empty although Alice has a row there"
    channels = {(i["channel"], i["external_id"]) for i in document["tables"]["channel_identity"]}
    assert channels == {("rest", "alice"), ("telegram", "77")}
    assert [e["text"] for e in document["rasa"]["tracker_store"]] == ["my card number is 12345"]
    assert [(m["recipient"], m["text"]) for m in document["tables"]["outbox"]] == [
        ("rest:alice", "您的卡已续期"),
        ("telegram:77", "see you"),
    ]
    assert all(
        row["patron_id"] == alice or (name == "outbox" and row["recipient"] == "telegram:77")
        for name, rows in document["tables"].items()
        for row in rows
    )


def test_export_is_audited(crm: Engine, tracker: RasaEventStore) -> None:
    alice = populate(crm)
    with session_scope(crm) as session:
        export_patron(
            session=session, patron_ref=str(alice), actor="cli:test", reason="her request", rasa_stores=[]
        )
    with Session(crm, future=True) as session:
        entry = session.execute(select(AuditLog).where(AuditLog.action == "export")).scalar_one()
        assert (entry.patron_id, entry.actor, entry.reason) == (alice, "cli:test", "her request")


def test_erasure_leaves_no_row_or_tracker_event_and_keeps_counts(
    crm: Engine, tracker: RasaEventStore
) -> None:
    alice = populate(crm)
    with session_scope(crm) as session:
        report = erase_patron(
            session=session,
            patron_ref="telegram:77",
            actor="cli:test",
            reason="her request",
            rasa_stores=[tracker],
        )
    assert report.patron_id == alice
    assert rows_referencing(crm, alice) == {}
    assert tracker.events_for({"rest:alice", "telegram:77"}) == []
    assert [e["text"] for e in tracker.events_for({"rest:bob"})] == ["hi"]
    with Session(crm, future=True) as session:
        assert session.get(Patron, alice) is None
        # Anonymous rows survive for the statistics, without the patron or their words.
        feedback = session.execute(select(Feedback)).scalar_one()
        assert (feedback.patron_id, feedback.csat, feedback.comment, feedback.conversation_id) == (
            None,
            2,
            None,
            None,
        )
        suggestion = session.execute(select(Suggestion)).scalar_one()
        assert (suggestion.patron_id, suggestion.text) == (None, None)
        assert (feedback.rasa_sender_id, suggestion.rasa_sender_id) == (None, None)
        escalation = session.execute(select(Escalation)).scalar_one()
        # Her open escalation is closed: no one is left to answer, and the note says why (not who).
        assert (escalation.patron_id, escalation.reason, escalation.status) == (
            None,
            "low_rating",
            "cancelled",
        )
        assert escalation.resolution_note == ERASED_NOTE
        assert (escalation.rasa_sender_id, escalation.channel) == (None, "rest")
        # Her outbox messages are gone, by patron key and by sender id; Bob's is not.
        assert [m.recipient for m in session.execute(select(OutboxMessage)).scalars()] == ["rest:bob"]
        delivery = session.execute(select(Delivery)).scalar_one()
        assert delivery.patron_id is None
        stats = session.execute(select(func.sum(InteractionStat.count))).scalar_one()
        assert stats == 3  # Alice's two rest messages and her telegram one
        # Bob is untouched.
        assert session.execute(select(func.count()).select_from(Interaction)).scalar_one() == 1
        erasure = session.execute(select(AuditLog).where(AuditLog.action == "erase")).scalar_one()
        assert erasure.patron_id is None
        assert "alice" not in json.dumps(erasure.detail)


def test_erasure_closes_the_patrons_open_escalations_and_a_reply_says_why(
    crm: Engine, facts: LibraryFacts
) -> None:
    from tests.test_escalations import add_patron, escalate

    alice, bob = add_patron(crm, "alice"), add_patron(crm, "bob")
    with session_scope(crm) as session:
        number = record_report(
            session=session,
            patron_id=alice,
            kind="complaint",
            text="I'm Alice, 138…",
            topic=None,
            rasa_sender_id="rest:alice",
        ).id
    answered = escalate(crm, facts, alice, reason="requested")
    with session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=answered, staff="li.wei", note="called Alice back")
    complaint = escalate(crm, facts, alice, reason="complaint", priority="high")
    waiting = escalate(crm, facts, bob, rasa_sender_id="rest:bob")
    with session_scope(crm) as session:
        report = erase_patron(
            session=session, patron_ref="rest:alice", actor="patron", reason="asked", rasa_stores=[]
        )
    assert report.escalations_closed == (complaint,)
    with Session(crm, future=True) as session:
        closed = session.get(Escalation, complaint)
        assert closed is not None
        assert (closed.status, closed.resolution_note, closed.patron_id) == ("cancelled", ERASED_NOTE, None)
        assert closed.resolved_at is not None
        # Her earlier escalation stays resolved, its note (which named her) blanked; Bob's is untouched.
        assert session.get(Escalation, answered).resolution_note is None  # type: ignore[union-attr]
        assert session.get(Escalation, waiting).status == "open"  # type: ignore[union-attr]
        # Her report is kept anonymously, still joined to its escalation.
        kept = session.get(Suggestion, number)
        assert (kept.text, kept.escalation_id) == (None, complaint)  # type: ignore[union-attr]
        erasure = session.execute(select(AuditLog).where(AuditLog.action == "erase")).scalar_one()
        assert erasure.detail["escalations_closed"] == [complaint]
    with pytest.raises(EscalationError) as refused, session_scope(crm) as session:
        staff_reply(session=session, escalation_id=complaint, staff="li.wei", text="Sorry, Alice")
    assert str(refused.value) == (
        f"escalation {complaint} cannot take a reply: the patron's data was erased at their request,"
        " so there is no one to send it to"
    )
    cancelled = "already cancelled: the patron's data was erased"
    with pytest.raises(EscalationError, match=cancelled), session_scope(crm) as session:
        resolve_escalation(session=session, escalation_id=complaint, staff="li.wei")
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one() == 0


def test_erasing_an_unknown_patron_is_a_clear_error_and_changes_nothing(crm: Engine) -> None:
    populate(crm)
    with pytest.raises(PatronNotFoundError, match="no patron 'rest:nobody'"), session_scope(crm) as session:
        erase_patron(session=session, patron_ref="rest:nobody", actor="t", reason="r", rasa_stores=[])
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(Patron)).scalar_one() == 2


def test_a_failing_erasure_writes_nothing_to_the_crm(crm: Engine) -> None:
    alice = populate(crm)
    before = rows_referencing(crm, alice)

    def erase_then_fail() -> None:
        with session_scope(crm) as session:
            erase_patron(session=session, patron_ref="rest:alice", actor="t", reason="r", rasa_stores=[])
            raise RuntimeError("the database went away before commit")

    with pytest.raises(RuntimeError):
        erase_then_fail()
    assert rows_referencing(crm, alice) == before


def test_an_erased_patrons_id_is_never_given_to_anyone_else(crm: Engine) -> None:
    populate(crm)
    zed = PatronKey("rest", "zed")
    with session_scope(crm) as session:  # the newest patron: the id a reusing database would hand out
        ingest_events(
            session=session, events=[user_event("rest:zed", "hi", timestamp=T0 + 50)], state=IngestState()
        )
    with Session(crm, future=True) as session:
        old_id = find_patron_ids(session=session, keys=[zed])[zed]
    with session_scope(crm) as session:
        erase_patron(session=session, patron_ref="rest:zed", actor="t", reason="r", rasa_stores=[])
    with session_scope(crm) as session:  # zed writes again after the erasure
        ingest_events(
            session=session,
            events=[user_event("rest:zed", "still there?", timestamp=time.time() + 1)],
            state=IngestState(),
        )
    with Session(crm, future=True) as session:
        new_id = find_patron_ids(session=session, keys=[zed])[zed]
        assert new_id > old_id
        assert (
            session.execute(
                select(func.count()).select_from(Interaction).where(Interaction.patron_id == new_id)
            ).scalar_one()
            == 1
        )


def test_late_events_of_an_erased_patron_do_not_bring_them_back(crm: Engine) -> None:
    """Events published before the erasure but ingested after it (a RabbitMQ queue cannot be searched
    and deleted from) are dropped; what the patron writes afterwards starts a new record."""
    with session_scope(crm) as session:
        ingest_events(
            session=session,
            events=[user_event("rest:yan", "my card number is 42", timestamp=T0)],
            state=IngestState(),
        )
    with session_scope(crm) as session:
        erase_patron(session=session, patron_ref="rest:yan", actor="t", reason="r", rasa_stores=[])
    late = [
        user_event("rest:yan", "and my phone is 555", timestamp=T0 + 5),
        bot_event("rest:yan", "noted", timestamp=T0 + 6),
    ]
    with session_scope(crm) as session:
        assert ingest_events(session=session, events=late, state=IngestState()) == 0
    with Session(crm, future=True) as session:
        assert find_patron_ids(session=session, keys=[PatronKey("rest", "yan")]) == {}
        assert session.execute(select(func.count()).select_from(Interaction)).scalar_one() == 0
        [marker] = session.execute(select(ErasedSender)).scalars()
        assert "yan" not in marker.sender_digest  # a digest, not the id
        assert marker.sender_digest != hashlib.sha256(b"rest:yan").hexdigest()  # nor one anyone can make
    with session_scope(crm) as session:
        written = ingest_events(
            session=session,
            events=[user_event("rest:yan", "hello again", timestamp=time.time() + 1)],
            state=IngestState(),
        )
    assert written == 1
    # Retention forgets the marker once no event that old can be left.
    with session_scope(crm) as session:
        purge_expired(
            session=session,
            retention_days=1,
            rasa_stores=[],
            now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2),
        )
    with Session(crm, future=True) as session:
        assert session.execute(select(func.count()).select_from(ErasedSender)).scalar_one() == 0


def test_erased_sender_digests_are_keyed_by_the_installation_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10-digit Telegram id or a REST name cannot be found again by hashing every candidate."""
    from bot.settings import get_settings

    sender = "telegram:123456789"
    monkeypatch.setenv("PATRONBOT_SECRET_KEY", "a" * 40)
    get_settings.cache_clear()
    first = sender_digest(sender)
    assert first == sender_digest(sender)
    assert len(first) == 64
    assert first != hashlib.sha256(sender.encode()).hexdigest()
    monkeypatch.setenv("PATRONBOT_SECRET_KEY", "b" * 40)
    get_settings.cache_clear()
    assert sender_digest(sender) != first


@pytest.mark.parametrize("ref", ["999999", "rest:ghost", "not a ref"])
def test_export_of_an_unknown_patron_is_a_clear_error(crm: Engine, ref: str) -> None:
    with pytest.raises((PatronNotFoundError, ValueError)), session_scope(crm) as session:
        export_patron(session=session, patron_ref=ref, actor="t", reason="r", rasa_stores=[])


def test_retention_purges_old_texts_and_keeps_the_rows(crm: Engine, tmp_path: Path) -> None:
    old, recent = T0, T0 + 300 * 86400
    with session_scope(crm) as session:
        ingest_events(
            session=session,
            events=[
                user_event("rest:carol", "old question", timestamp=old),
                user_event("rest:carol", "new question", timestamp=recent),
            ],
            state=IngestState(),
        )
    with session_scope(crm) as session:
        # A staff reply's text is kept in the outbox as well as in the interaction.
        for at, text in ((old, "Ms Carol, your loan of X is ready"), (recent, "see you tomorrow")):
            session.add(
                OutboxMessage(
                    channel="rest",
                    recipient="rest:carol",
                    text=text,
                    produced_by="staff:li.wei",
                    created_at=dt.datetime.fromtimestamp(at, dt.UTC),
                    delivered_at=dt.datetime.fromtimestamp(at, dt.UTC),
                )
            )
    now = dt.datetime.fromtimestamp(recent, dt.UTC) + dt.timedelta(days=1)
    with session_scope(crm) as session:
        report = purge_expired(session=session, retention_days=100, rasa_stores=[], now=now)
    assert report.interaction_texts_purged == 1
    assert report.outbox_messages_purged == 1
    with Session(crm, future=True) as session:
        texts = [
            row.text
            for row in session.execute(select(Interaction).order_by(Interaction.occurred_at)).scalars()
        ]
        outbox = [row.text for row in session.execute(select(OutboxMessage)).scalars()]
    assert texts == [None, "new question"]
    assert outbox == ["see you tomorrow"]
