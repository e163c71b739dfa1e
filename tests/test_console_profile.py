"""The patron profile in the console: every part of it (sources, consent history, persona, segments,
conversations, feedback, suggestions, follow-ups), each read audited, patron text shown as text, long
histories capped; export and erase for admins (confirmed, audited, reaching Rasa's tracker store)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterator
from pathlib import Path

import pytest
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.consent import record_consent
from bot.crm.database import make_engine, session_scope
from bot.crm.models import (
    AuditLog,
    Campaign,
    ChannelIdentity,
    Conversation,
    Delivery,
    Escalation,
    Feedback,
    Interaction,
    OutboxMessage,
    Patron,
    Persona,
    Segment,
    SegmentMembership,
    Suggestion,
    utcnow,
)
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.records import patron_tables
from bot.settings import Settings
from console.app import create_app
from console.profile import SHOWN
from tests.console_helpers import signed_in, staff
from tests.factories import broker_table, publish, user_event

XSS_NAME = '<script>alert("name")</script>Amy'
XSS_COMMENT = '<img src=x onerror="alert(1)">too loud'
XSS_SUGGESTION = "<b>buy</b> <script>steal()</script> The Three-Body Problem"


def a_patron(crm: Engine) -> int:
    """A patron with something in every part of the profile, built with the ORM."""
    now = utcnow()
    with session_scope(crm) as session:
        persona = Persona(
            key="p1", name_en="Night-time researchers", name_zh="夜间科研读者", topics=[], words={}
        )
        session.add(persona)
        session.flush()
        patron = Patron(
            display_name=XSS_NAME,
            language="zh",
            patron_type="postgraduate",
            interests=["e_resources"],
            persona_id=persona.id,
        )
        session.add(patron)
        session.flush()
        session.add_all(
            [
                ChannelIdentity(
                    patron_id=patron.id, channel="telegram", external_id="4242", source="poster-2026-east"
                ),
                ChannelIdentity(patron_id=patron.id, channel="wechat", external_id="oAbc"),
            ]
        )
        record_consent(
            session=session,
            patron_id=patron.id,
            purpose="follow_up",
            granted=True,
            channel="telegram",
            wording_version="privacy-v2",
            at=now - dt.timedelta(days=10),
        )
        record_consent(
            session=session,
            patron_id=patron.id,
            purpose="follow_up",
            granted=False,
            channel="wechat",
            at=now - dt.timedelta(days=2),
        )
        segment = Segment(name="Postgraduates on Telegram", definition=None)
        session.add(segment)
        session.flush()
        session.add(SegmentMembership(segment_id=segment.id, patron_id=patron.id))
        conversation = Conversation(
            patron_id=patron.id, channel="telegram", rasa_sender_id="telegram:4242", status="resolved"
        )
        session.add(conversation)
        session.flush()
        session.add(
            Interaction(
                patron_id=patron.id,
                conversation_id=conversation.id,
                channel="telegram",
                direction="in",
                text="where can I print?",
                intent="ask_printing",
                event_key="profile-test-1",
                occurred_at=now - dt.timedelta(days=3),
            )
        )
        escalation = Escalation(
            patron_id=patron.id,
            conversation_id=conversation.id,
            channel="telegram",
            rasa_sender_id="telegram:4242",
            reason="low_rating",
            status="resolved",
            due_at=now,
        )
        session.add(escalation)
        session.add(Feedback(patron_id=patron.id, csat=2, comment=XSS_COMMENT, topic="spaces"))
        session.add(
            Suggestion(
                patron_id=patron.id,
                kind="purchase",
                text=XSS_SUGGESTION,
                status="accepted",
                library_answer="Ordered: on the shelf next month",
                answered_at=now,
            )
        )
        campaign = Campaign(name="Exam-week hours", message={"zh": "考试周", "en": "Exam week"})
        session.add(campaign)
        session.flush()
        outbox = OutboxMessage(
            channel="telegram",
            recipient="telegram:4242",
            patron_id=patron.id,
            text="Exam week",
            produced_by="campaign",
            status="delivered",
            delivered_at=now - dt.timedelta(days=5),
        )
        session.add(outbox)
        session.flush()
        session.add(
            Delivery(
                campaign_id=campaign.id,
                patron_id=patron.id,
                channel="telegram",
                state="queued",
                outbox_id=outbox.id,
                queued_at=now - dt.timedelta(days=5),
            )
        )
        session.flush()
        return int(patron.id)


def audit_of(crm: Engine, patron: int | None = None, action: str | None = None) -> list[tuple[str, str, str]]:
    query = select(AuditLog.actor, AuditLog.action, AuditLog.reason).order_by(AuditLog.id)
    if patron is not None:
        query = query.where(AuditLog.patron_id == patron)
    if action is not None:
        query = query.where(AuditLog.action == action)
    with Session(crm, future=True) as session:
        return [(str(a), str(b), str(c)) for a, b, c in session.execute(query)]


def test_the_profile_page_shows_every_part_and_the_read_is_audited(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron = a_patron(crm)
    signed_in(console, "lin")
    page = console.get(f"/patrons/{patron}", params={"lang": "en"}, headers={"Accept-Language": "en"})
    assert page.status_code == 200
    text = html.unescape(page.text)
    for part in (
        "poster-2026-east",  # the source they first came through
        "wechat",
        "Night-time researchers",  # persona
        "Postgraduates on Telegram",  # segment
        "privacy-v2",  # the first consent decision, with how it was given
        "Exam-week hours",  # the follow-up received, and what came of it
        "delivered",
        "Ordered: on the shelf next month",
        "CSAT 2/5",
        "where can I print?",
    ):
        assert part in text, part
    # Both consent decisions, newest first, not only the one in force.
    consents = page.text.split('id="h-consents"')[1].split("</section>")[0]
    assert consents.index("<td>wechat</td>") < consents.index("<td>telegram, privacy-v2</td>")
    with Session(crm, future=True) as session:
        escalation = session.execute(select(Escalation.id)).scalar_one()
    assert f'href="/escalations/{escalation}"' in page.text
    assert audit_of(crm, patron) == [("staff:lin", "read", "console: patron profile")]


def test_patron_text_on_the_profile_is_shown_as_text(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron = a_patron(crm)
    signed_in(console, "lin")
    page = console.get(f"/patrons/{patron}").text
    for written in (XSS_NAME, XSS_COMMENT, XSS_SUGGESTION):
        assert written not in page
        assert str(escape(written)) in page
    assert "<script>" not in page.split("</head>", 1)[1].replace('<script src="/static/', "")


def test_the_profile_api_holds_every_part_and_each_read_is_audited(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron = a_patron(crm)
    signed_in(console, "lin")
    profile = console.get(f"/api/patrons/{patron}").json()
    assert [(i["channel"], i["source"]) for i in profile["identities"]] == [
        ("telegram", "poster-2026-east"),
        ("wechat", None),
    ]
    assert [(c["purpose"], c["granted"], c["channel"]) for c in profile["consent_history"]] == [
        ("follow_up", False, "wechat"),
        ("follow_up", True, "telegram"),
    ]
    assert profile["consents"]["follow_up"] is False
    assert profile["persona"]["key"] == "p1"
    assert [s["name"] for s in profile["segments"]] == ["Postgraduates on Telegram"]
    [conversation] = profile["conversations"]
    [escalation] = profile["escalations"]
    assert conversation["escalations"] == [escalation["id"]]
    assert [f["comment"] for f in profile["feedback"]] == [XSS_COMMENT]
    assert [(s["text"], s["status"]) for s in profile["suggestions"]] == [(XSS_SUGGESTION, "accepted")]
    assert [(d["campaign"], d["outcome"]) for d in profile["follow_ups"]] == [
        ("Exam-week hours", "delivered")
    ]
    console.get(f"/api/patrons/{patron}")
    assert audit_of(crm, patron) == [("staff:lin", "read", "console: patron profile")] * 2


def test_a_long_history_is_capped_and_the_page_says_so(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron = a_patron(crm)
    with session_scope(crm) as session:
        session.add_all(Feedback(patron_id=patron, csat=5, topic="hours") for _ in range(SHOWN + 5))
    signed_in(console, "lin")
    profile = console.get(f"/api/patrons/{patron}").json()
    assert (len(profile["feedback"]), profile["more"]) == (SHOWN, ["feedback"])
    page = console.get(f"/patrons/{patron}", headers={"Accept-Language": "en"}).text
    assert f"Showing the latest {SHOWN}" in page


def test_an_unknown_patron_is_404_on_the_page_and_the_api(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    signed_in(console, "lin")
    assert console.get("/patrons/999").status_code == 404
    assert console.get("/api/patrons/999").json() == {"error": "no patron 999"}


def test_a_librarian_sees_no_privacy_buttons_and_is_refused_export_and_erase(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    patron = a_patron(crm)
    csrf = signed_in(console, "lin")
    assert f"/patrons/{patron}/erase" not in console.get(f"/patrons/{patron}").text
    headers = {"X-CSRF-Token": csrf}
    refused = [
        console.get(f"/api/patrons/{patron}/export"),
        console.post(f"/api/patrons/{patron}/erase", json={"confirm": patron}, headers=headers),
        console.get(f"/patrons/{patron}/export"),
        console.get(f"/patrons/{patron}/erase"),
        console.post(f"/patrons/{patron}/erase", data={"confirm": str(patron), "csrf_token": csrf}),
    ]
    assert [answer.status_code for answer in refused] == [403] * 5
    with Session(crm, future=True) as session:
        assert session.get(Patron, patron) is not None


def test_an_admin_exports_the_patrons_data_and_the_export_is_audited(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    patron = a_patron(crm)
    signed_in(console, "ada")
    assert f'href="/patrons/{patron}/export"' in console.get(f"/patrons/{patron}").text
    document = console.get(f"/api/patrons/{patron}/export").json()
    assert document["patron"]["id"] == patron
    assert [row["comment"] for row in document["tables"]["feedback"]] == [XSS_COMMENT]
    assert len(document["tables"]["consent"]) == 2
    download = console.get(f"/patrons/{patron}/export")
    assert download.headers["content-disposition"] == f'attachment; filename="patron-{patron}-export.json"'
    assert download.json()["patron"]["display_name"] == XSS_NAME
    exports = audit_of(crm, patron, "export")
    assert exports == [("staff:ada", "export", "console: patron data export")] * 2


@pytest.fixture
def tracker_url(tmp_path: Path) -> str:
    """A Rasa SQL tracker store holding the patron's events and another patron's."""
    url = f"sqlite:///{tmp_path / 'tracker.db'}"
    engine = make_engine(url)
    publish(
        engine,
        broker_table(engine),
        [user_event("telegram:4242", "my card number is 12345"), user_event("rest:bob", "hi")],
    )
    engine.dispose()
    return url


@pytest.fixture
def console_with_tracker(crm: Engine, crm_url: str, tracker_url: str) -> Iterator[TestClient]:
    """The console whose settings name that tracker store, as `patronbot patron erase` reads them."""
    settings = Settings(_env_file=None, database_url=crm_url, tracker_store_url=tracker_url)  # type: ignore[call-arg]
    with TestClient(create_app(settings=settings, engine=crm), base_url="http://console.test") as client:
        yield client


def rows_of(crm: Engine, patron: int) -> dict[str, int]:
    found = {}
    with crm.connect() as connection:
        for table in patron_tables():
            count = connection.execute(
                select(func.count()).select_from(table).where(table.c.patron_id == patron)
            ).scalar_one()
            if count:
                found[table.name] = count
    return found


def test_erasing_by_the_api_needs_the_id_then_reaches_the_crm_and_the_tracker_store(
    console_with_tracker: TestClient, crm: Engine, tracker_url: str
) -> None:
    console = console_with_tracker
    staff(crm, "ada", "admin")
    patron = a_patron(crm)
    csrf = signed_in(console, "ada")
    headers = {"X-CSRF-Token": csrf}
    wrong = console.post(f"/api/patrons/{patron}/erase", json={"confirm": patron + 1}, headers=headers)
    assert wrong.status_code == 400
    assert console.post(f"/api/patrons/{patron}/erase", json={}, headers=headers).status_code == 400
    assert rows_of(crm, patron) != {}
    answer = console.post(f"/api/patrons/{patron}/erase", json={"confirm": patron}, headers=headers)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["patron_id"], report["rasa_events_deleted"]["tracker_store"]) == (patron, 1)
    assert rows_of(crm, patron) == {}
    tracker = RasaEventStore(name="tracker_store", url=tracker_url)
    assert tracker.events_for({"telegram:4242"}) == []
    assert [event["text"] for event in tracker.events_for({"rest:bob"})] == ["hi"]
    tracker.dispose()
    assert console.get(f"/api/patrons/{patron}").status_code == 404
    assert audit_of(crm, action="erase") == [("staff:ada", "erase", "console: patron erasure")]
    again = console.post(f"/api/patrons/{patron}/erase", json={"confirm": patron}, headers=headers)
    assert again.status_code == 404


def test_erasing_by_the_page_explains_asks_for_the_id_and_then_the_profile_is_gone(
    console_with_tracker: TestClient, crm: Engine, tracker_url: str
) -> None:
    console = console_with_tracker
    staff(crm, "ada", "admin")
    patron = a_patron(crm)
    csrf = signed_in(console, "ada")
    confirm = console.get(f"/patrons/{patron}/erase", headers={"Accept-Language": "en"})
    assert confirm.status_code == 200
    assert "cannot be undone" in confirm.text
    assert "telegram:4242" in confirm.text
    assert str(escape(XSS_NAME)) in confirm.text
    assert XSS_NAME not in confirm.text
    assert audit_of(crm, patron)[-1] == ("staff:ada", "read", "console: confirming an erasure")
    mismatch = console.post(f"/patrons/{patron}/erase", data={"confirm": str(patron + 1), "csrf_token": csrf})
    assert mismatch.status_code == 400
    assert rows_of(crm, patron) != {}
    without_csrf = console.post(f"/patrons/{patron}/erase", data={"confirm": str(patron)})
    assert without_csrf.status_code == 403
    done = console.post(
        f"/patrons/{patron}/erase",
        data={"confirm": str(patron), "csrf_token": csrf},
        headers={"Accept-Language": "en"},
    )
    assert done.status_code == 200
    assert f"Patron {patron} erased" in done.text
    assert rows_of(crm, patron) == {}
    tracker = RasaEventStore(name="tracker_store", url=tracker_url)
    assert tracker.events_for({"telegram:4242"}) == []
    tracker.dispose()
    assert console.get(f"/patrons/{patron}").status_code == 404
    assert audit_of(crm, action="erase") == [("staff:ada", "erase", "console: patron erasure")]
