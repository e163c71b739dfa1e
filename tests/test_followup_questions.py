"""Follow-up questions asked through the patron's Rasa conversation (a fake Rasa server speaking real
HTTP), their answers recorded against the delivery, the report's answers, and a patron's pause."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.consent import record_consent
from bot.crm.database import session_scope
from bot.crm.models import (
    AuditLog,
    Campaign,
    Conversation,
    Delivery,
    Feedback,
    Interaction,
    OutboxMessage,
    Patron,
    Segment,
)
from bot.outreach.pause import pause_messages, resume_date, resume_messages
from bot.outreach.questions import RasaApi, read_answer, record_answer
from bot.outreach.report import campaign_report
from bot.outreach.runs import add_deliveries
from bot.outreach.sender import SendRules, release_due
from bot.quiet_hours import QuietHours

UTC = dt.UTC
NOON = dt.datetime(2027, 3, 1, 4, 0, tzinfo=UTC)  # noon in Shanghai: outside quiet hours
QUESTION = {
    "en": "Hello {display_name}, how satisfied were you with the help you got on Monday?",
    "zh": "{display_name}您好，您对周一得到的帮助满意吗？",
}


@dataclass
class FakeRasa:
    """A Rasa server's HTTP API as the sender uses it: the tracker, and trigger_intent (which answers
    with the messages it is set to say, or an error status)."""

    port: int
    token: str = "sesame"
    said: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    active_loop: str | None = None
    triggered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def api(self) -> RasaApi:
        return RasaApi(url=f"http://127.0.0.1:{self.port}", token=self.token, timeout=5)


def _handler(fake: FakeRasa) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _authorised(self) -> bool:
            return parse_qs(urlsplit(self.path).query).get("token") == [fake.token]

        def do_GET(self) -> None:
            if not self._authorised():
                return self._reply(401, {"status": "failure"})
            loop = {"name": fake.active_loop} if fake.active_loop else {}
            self._reply(200, {"sender_id": "x", "slots": {"handoff_active": False}, "active_loop": loop})
            return None

        def do_POST(self) -> None:
            if not self._authorised():
                return self._reply(401, {"status": "failure"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            conversation = urlsplit(self.path).path.split("/")[2]  # as Rasa reads it: not decoded
            fake.triggered.append((conversation, body))
            if fake.status != 200:
                return self._reply(fake.status, {"status": "failure"})
            self._reply(200, {"tracker": {}, "messages": fake.said})
            return None

    return Handler


@pytest.fixture
def rasa() -> Iterator[FakeRasa]:
    fake = FakeRasa(port=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed when the probe is: nothing listens there


def _rules(api: RasaApi) -> SendRules:
    return SendRules(
        quiet_hours=QuietHours.parse("21:00-08:00"), cap=2, library_zone=ZoneInfo("Asia/Shanghai"), rasa=api
    )


def _question(crm: Engine, *, asks: str = "csat", name: str = "monday-help") -> int:
    with session_scope(crm) as session:
        segment = Segment(name=f"seg-{name}", definition={})
        session.add(segment)
        session.flush()
        campaign = Campaign(
            name=name, segment_id=segment.id, status="running", kind="question", asks=asks, message=QUESTION
        )
        session.add(campaign)
        session.flush()
        return int(campaign.id)


def _patron(
    crm: Engine, name: str, *, language: str = "en", channel: str = "rest", consent: bool = True
) -> int:
    with session_scope(crm) as session:
        patron = Patron(display_name=name, language=language)
        session.add(patron)
        session.flush()
        at = NOON - dt.timedelta(hours=1)
        session.add(
            Conversation(
                patron_id=patron.id,
                channel=channel,
                rasa_sender_id=f"{channel}:{name}",
                started_at=at,
                last_message_at=at,
            )
        )
        record_consent(session=session, patron_id=int(patron.id), purpose="follow_up", granted=consent)
        return int(patron.id)


def _deliveries(crm: Engine, campaign_id: int, patron_ids: list[int]) -> dict[int, int]:
    """Pending deliveries due at NOON: patron id -> delivery id."""
    with session_scope(crm) as session:
        add_deliveries(session=session, campaign_id=campaign_id, wanted=[(p, "", NOON) for p in patron_ids])
        rows = session.execute(
            select(Delivery.patron_id, Delivery.id).where(Delivery.campaign_id == campaign_id)
        )
        return {int(p): int(d) for p, d in rows}


def _delivery(crm: Engine, delivery_id: int) -> Delivery:
    with Session(crm, future=True, expire_on_commit=False) as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found


ASKED = {
    "recipient_id": "rest:amy",
    "text": "Hello Amy, how satisfied were you with the help you got on Monday?",
    "buttons": [{"title": "4", "payload": '/answer_followup{"csat": "4", "followup": "1"}'}],
}


def test_a_question_is_asked_through_rasa_and_what_the_bot_said_goes_to_the_outbox(
    crm: Engine, rasa: FakeRasa
) -> None:
    campaign = _question(crm)
    amy = _patron(crm, "amy", language="zh")
    delivery = _deliveries(crm, campaign, [amy])[amy]
    rasa.said = [ASKED]
    released = release_due(engine=crm, rules=_rules(rasa.api), now=NOON)
    assert released.queued == 1
    # Triggered in the patron's own conversation, with the delivery and the patron's language.
    assert rasa.triggered == [
        ("rest:amy", {"name": "followup_question", "entities": {"followup": str(delivery), "language": "zh"}})
    ]
    queued = _delivery(crm, delivery)
    assert (queued.state, queued.channel, queued.claimed_until) == ("queued", "rest", None)
    with Session(crm, future=True) as session:
        outbox = session.execute(select(OutboxMessage)).scalars().all()
        assert [(m.id, m.recipient, m.text, m.buttons, m.produced_by) for m in outbox] == [
            (queued.outbox_id, "rest:amy", ASKED["text"], ASKED["buttons"], f"campaign:{campaign}")
        ]
        # The conversation's record gets the question from Rasa's own events (the ingester), not twice.
        assert session.execute(select(Interaction).where(Interaction.direction == "out")).all() == []
    # Asked once: a second look finds nothing due.
    assert release_due(engine=crm, rules=_rules(rasa.api), now=NOON).queued == 0
    assert len(rasa.triggered) == 1


def test_rasa_down_leaves_the_question_pending_to_be_asked_again(crm: Engine) -> None:
    campaign = _question(crm)
    amy = _patron(crm, "amy")
    delivery = _deliveries(crm, campaign, [amy])[amy]
    down = RasaApi(url=f"http://127.0.0.1:{_closed_port()}", token="x", timeout=2)
    released = release_due(engine=crm, rules=_rules(down), now=NOON)
    assert (released.queued, released.waiting) == (0, 1)
    waiting = _delivery(crm, delivery)
    assert (waiting.state, waiting.outbox_id, waiting.claimed_until) == ("pending", None, None)
    assert waiting.scheduled_at is not None
    assert waiting.scheduled_at > NOON
    assert waiting.last_error == "the Rasa server did not answer"
    with Session(crm, future=True) as session:
        assert session.execute(select(OutboxMessage)).all() == []


def test_a_rasa_error_status_is_retried_too_and_a_later_look_asks_it(crm: Engine, rasa: FakeRasa) -> None:
    campaign = _question(crm)
    amy = _patron(crm, "amy")
    delivery = _deliveries(crm, campaign, [amy])[amy]
    rasa.status = 500
    assert release_due(engine=crm, rules=_rules(rasa.api), now=NOON).waiting == 1
    assert _delivery(crm, delivery).state == "pending"
    rasa.status, rasa.said = 200, [ASKED]
    later = NOON + dt.timedelta(minutes=2)
    assert release_due(engine=crm, rules=_rules(rasa.api), now=later).queued == 1
    assert _delivery(crm, delivery).state == "queued"


def test_a_patron_in_the_middle_of_a_form_is_asked_later(crm: Engine, rasa: FakeRasa) -> None:
    campaign = _question(crm)
    amy = _patron(crm, "amy")
    delivery = _deliveries(crm, campaign, [amy])[amy]
    rasa.active_loop, rasa.said = "feedback_form", [ASKED]
    released = release_due(engine=crm, rules=_rules(rasa.api), now=NOON)
    assert (released.queued, released.waiting) == (0, 1)
    assert rasa.triggered == []  # nothing was asked in the form
    waiting = _delivery(crm, delivery)
    assert (waiting.state, waiting.reason) == ("pending", "in_conversation")


def test_a_question_the_conversation_would_not_ask_is_skipped(crm: Engine, rasa: FakeRasa) -> None:
    campaign = _question(crm)
    amy = _patron(crm, "amy")
    delivery = _deliveries(crm, campaign, [amy])[amy]
    rasa.said = []  # the action found no question of this patron's to ask
    assert release_due(engine=crm, rules=_rules(rasa.api), now=NOON).skipped == {"not_asked": 1}
    assert (_delivery(crm, delivery).state, _delivery(crm, delivery).reason) == ("skipped", "not_asked")


def test_a_paused_or_unsubscribed_patron_is_not_asked(crm: Engine, rasa: FakeRasa) -> None:
    campaign = _question(crm)
    paused, gone = _patron(crm, "di"), _patron(crm, "ed", consent=False)
    with session_scope(crm) as session:
        pause_messages(session=session, patron_id=paused, now=NOON - dt.timedelta(days=1))
    ids = _deliveries(crm, campaign, [paused, gone])
    released = release_due(engine=crm, rules=_rules(rasa.api), now=NOON)
    assert dict(released.skipped) == {"paused": 1, "opted_out": 1}
    assert rasa.triggered == []
    assert _delivery(crm, ids[paused]).reason == "paused"


@pytest.mark.parametrize(
    ("asks", "text", "tapped", "expected"),
    [
        ("csat", "4", None, {"csat": 4, "comment": None}),
        ("csat", "", {"csat": "2"}, {"csat": 2, "comment": None}),
        (
            "csat",
            "not really, the book never came",
            None,
            {"csat": None, "comment": "not really, the book never came"},
        ),
        (
            "csat",
            "4, but the book came a week late",
            None,
            {"csat": 4, "comment": "4, but the book came a week late"},
        ),
        ("nps", "8", None, {"nps": 8, "comment": None}),
        ("helpful", "yes, a lot", None, {"helpful": True, "comment": None}),
        ("helpful", "没有帮助", None, {"helpful": False, "comment": None}),
        ("helpful", "", {"helpful": "no"}, {"helpful": False, "comment": None}),
        ("open", "more evening opening hours please", None, {"comment": "more evening opening hours please"}),
    ],
)
def test_an_answer_is_read_as_the_question_asked(
    asks: str, text: str, tapped: dict[str, str] | None, expected: dict[str, Any]
) -> None:
    assert read_answer(asks, text, tapped=tapped) == expected


def test_the_answer_is_recorded_against_its_delivery_and_counted_in_the_report(crm: Engine) -> None:
    campaign = _question(crm)
    amy, bo = _patron(crm, "amy"), _patron(crm, "bo")
    ids = _deliveries(crm, campaign, [amy, bo])
    with session_scope(crm) as session:
        session.execute(Delivery.__table__.update().values(state="queued", queued_at=NOON))
        first = record_answer(session=session, patron_id=amy, delivery_id=ids[amy], text="4")
        worded = record_answer(
            session=session, patron_id=bo, delivery_id=ids[bo], text="not really, the book never came"
        )
        # Not bo's question: nothing is recorded against amy's delivery.
        assert record_answer(session=session, patron_id=bo, delivery_id=ids[amy], text="1") is None
    assert first is not None
    assert worded is not None
    with session_scope(crm) as session:
        # A second answer to the same question changes the first rather than counting twice.
        again = record_answer(
            session=session, patron_id=amy, delivery_id=ids[amy], text="", tapped={"csat": "5"}
        )
        assert again is not None
        assert again.feedback_id == first.feedback_id
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(Feedback.delivery_id, Feedback.patron_id, Feedback.csat, Feedback.comment).order_by(
                Feedback.id
            )
        ).all()
        assert [tuple(row) for row in rows] == [
            (ids[amy], amy, 5, None),
            (ids[bo], bo, None, "not really, the book never came"),
        ]
        report = campaign_report(session=session, campaign_id=campaign)
    assert report.answers == 2
    assert report.ratings["csat_count"] == 1
    assert report.ratings["csat_mean"] == 5.0
    assert report.ratings["comments"] == 1


def test_pause_holds_messages_30_days_and_is_audited_and_resume_ends_it(crm: Engine) -> None:
    amy = _patron(crm, "amy")
    with session_scope(crm) as session:
        state = pause_messages(session=session, patron_id=amy, now=NOON)
    assert state.paused_until == NOON + dt.timedelta(days=30)
    assert state.subscribed
    with session_scope(crm) as session:
        patron = session.get(Patron, amy)
        assert patron is not None
        assert patron.paused_until == NOON + dt.timedelta(days=30)
        ended = resume_messages(session=session, patron_id=amy, now=NOON + dt.timedelta(days=1))
        assert ended.changed
        assert patron.paused_until is None
        assert not resume_messages(session=session, patron_id=amy, now=NOON).changed
    with Session(crm, future=True) as session:
        audit = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.reason).order_by(AuditLog.id)
        ).all()
    assert [(actor, action) for actor, action, _ in audit] == [("patron", "consent"), ("patron", "consent")]
    assert "paused" in audit[0][2]
    assert "ended" in audit[1][2]


def test_the_resume_date_is_written_in_the_patrons_language() -> None:
    until = dt.datetime(2027, 1, 14, 20, 0, tzinfo=UTC)  # already the 15th in Shanghai
    shanghai = ZoneInfo("Asia/Shanghai")
    assert resume_date(until, language="zh", zone=shanghai) == "2027年1月15日"
    assert resume_date(until, language="en", zone=shanghai) == "15 January 2027"


def test_the_trigger_of_a_question_does_not_open_wechats_window(crm: Engine, rasa: FakeRasa) -> None:
    """Rasa records the trigger as a user message, and the ingester copies it: it is not the patron
    writing, so a WeChat patron silent for 49 hours is still outside the 48-hour window."""
    campaign = _question(crm)
    fu = _patron(crm, "fu", channel="wechat")
    with session_scope(crm) as session:
        conversation = session.execute(select(Conversation).where(Conversation.patron_id == fu)).scalar_one()
        for key, text, intent, hours in [
            ("real", "hello", "greet", 49),
            ("trigger", "EXTERNAL: followup_question", "followup_question", 1),
        ]:
            session.add(
                Interaction(
                    patron_id=fu,
                    conversation_id=conversation.id,
                    channel="wechat",
                    direction="in",
                    text=text,
                    intent=intent,
                    event_key=key,
                    occurred_at=NOON - dt.timedelta(hours=hours),
                )
            )
    _deliveries(crm, campaign, [fu])
    assert dict(release_due(engine=crm, rules=_rules(rasa.api), now=NOON).skipped) == {"window_closed": 1}
    assert rasa.triggered == []
