"""Campaign sending: the patron's say checked at send time, each delivery queued once, and the report."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bot.crm.consent import record_consent
from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    Conversation,
    Delivery,
    Feedback,
    Interaction,
    OutboxMessage,
    Patron,
    Segment,
    utcnow,
)
from bot.outbound.dispatcher import SENT, Attempt, Dispatcher
from bot.outreach.report import campaign_report
from bot.outreach.runs import add_deliveries, finish_campaigns
from bot.outreach.sender import SendRules, release_due
from bot.quiet_hours import QuietHours

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Noon in Shanghai: outside the default quiet hours.
NOON = dt.datetime(2027, 3, 1, 4, 0, tzinfo=UTC)
RULES = SendRules(quiet_hours=QuietHours.parse("21:00-08:00"), cap=2, library_zone=SHANGHAI)


def _campaign(
    crm: Engine, *, name: str = "workshop", purpose: str = "follow_up", status: str = "running"
) -> int:
    with session_scope(crm) as session:
        segment = Segment(name=f"seg-{name}", definition={})
        session.add(segment)
        session.flush()
        campaign = Campaign(
            name=name,
            segment_id=segment.id,
            purpose=purpose,
            status=status,
            message={
                "en": "Hello {display_name}, the workshop is on Monday.",
                "zh": "{display_name}您好，周一有讲座。",
            },
        )
        session.add(campaign)
        session.flush()
        return int(campaign.id)


def _patron(
    crm: Engine,
    *,
    name: str,
    channel: str = "telegram",
    language: str = "en",
    consent: bool | None = True,
    zone: str | None = None,
    last_message: dt.datetime = NOON - dt.timedelta(hours=1),
) -> int:
    with session_scope(crm) as session:
        patron = Patron(display_name=name, language=language, time_zone=zone)
        session.add(patron)
        session.flush()
        sender = f"{channel}:{name}"
        conversation = Conversation(
            patron_id=patron.id,
            channel=channel,
            rasa_sender_id=sender,
            started_at=last_message,
            last_message_at=last_message,
        )
        session.add(conversation)
        session.flush()
        session.add(
            Interaction(
                patron_id=patron.id,
                conversation_id=conversation.id,
                channel=channel,
                direction="in",
                text="hi",
                event_key=f"in:{name}",
                occurred_at=last_message,
            )
        )
        if consent is not None:
            record_consent(
                session=session,
                patron_id=int(patron.id),
                purpose="follow_up",
                granted=consent,
                at=NOON - dt.timedelta(days=30),
            )
        return int(patron.id)


def _deliver(
    crm: Engine, campaign_id: int, patron_ids: list[int], *, occasion: str = "", at: dt.datetime = NOON
) -> None:
    with session_scope(crm) as session:
        add_deliveries(
            session=session, campaign_id=campaign_id, wanted=[(p, occasion, at) for p in patron_ids]
        )


def _states(crm: Engine, campaign_id: int) -> dict[int, tuple[str, str | None]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(Delivery.patron_id, Delivery.state, Delivery.reason).where(
                Delivery.campaign_id == campaign_id
            )
        ).all()
    return {int(p): (str(s), r) for p, s, r in rows if p is not None}


def test_a_delivery_goes_only_with_the_patrons_say_checked_at_send_time(crm: Engine) -> None:
    campaign = _campaign(crm)
    ok = _patron(crm, name="amy")
    never_asked = _patron(crm, name="bo", consent=None)
    withdrew = _patron(crm, name="cy", consent=False)
    paused = _patron(crm, name="di")
    blocked = _patron(crm, name="ed")
    wechat_old = _patron(crm, name="fu", channel="wechat", last_message=NOON - dt.timedelta(hours=49))
    wechat_new = _patron(crm, name="gu", channel="wechat", last_message=NOON - dt.timedelta(hours=47))
    _deliver(crm, campaign, [ok, never_asked, withdrew, paused, blocked, wechat_old, wechat_new])
    # Said after the run filled the outbox: still heard, because the check is made when sending.
    with session_scope(crm) as session:
        session.execute(
            update(Patron).where(Patron.id == paused).values(paused_until=NOON + dt.timedelta(days=30))
        )
        session.execute(update(Patron).where(Patron.id == blocked).values(reachable=False))
    released = release_due(engine=crm, rules=RULES, now=NOON)
    assert _states(crm, campaign) == {
        ok: ("queued", None),
        never_asked: ("skipped", "no_consent"),
        withdrew: ("skipped", "opted_out"),
        paused: ("skipped", "paused"),
        blocked: ("skipped", "unreachable"),
        wechat_old: ("skipped", "window_closed"),
        wechat_new: ("queued", None),
    }
    assert released.queued == 2
    assert dict(released.skipped) == {
        "no_consent": 1,
        "opted_out": 1,
        "paused": 1,
        "unreachable": 1,
        "window_closed": 1,
    }
    with Session(crm, future=True) as session:
        outbox = session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all()
        assert [(m.channel, m.recipient, m.produced_by) for m in outbox] == [
            ("telegram", "telegram:amy", f"campaign:{campaign}"),
            ("wechat", "wechat:gu", f"campaign:{campaign}"),
        ]
        assert outbox[0].text.startswith("Hello amy, the workshop is on Monday.")
        assert "Reply STOP" in outbox[0].text  # the opt-out hint, in her language
        linked = session.execute(select(Delivery.outbox_id).where(Delivery.patron_id == ok)).scalar_one()
        assert linked == outbox[0].id
        # The CRM history shows the message.
        history = (
            session.execute(
                select(Interaction.produced_by).where(
                    Interaction.patron_id == ok, Interaction.direction == "out"
                )
            )
            .scalars()
            .all()
        )
        assert history == [f"campaign:{campaign}"]
    # Looked at again: nothing moves twice.
    again = release_due(engine=crm, rules=RULES, now=NOON + dt.timedelta(minutes=1))
    assert again.queued == 0
    assert not again.skipped


def test_quiet_hours_in_the_patrons_own_zone_hold_a_delivery_until_the_morning(crm: Engine) -> None:
    campaign = _campaign(crm)
    london = _patron(crm, name="amy", zone="Europe/London")  # 04:00 there at NOON (UTC 04:00)
    shanghai = _patron(crm, name="bo")  # no zone: the library's, noon
    _deliver(crm, campaign, [london, shanghai])
    released = release_due(engine=crm, rules=RULES, now=NOON)
    assert released.queued == 1
    assert released.waiting == 1
    assert _states(crm, campaign)[london] == ("pending", "quiet_hours")
    with Session(crm, future=True) as session:
        due = session.execute(select(Delivery.scheduled_at).where(Delivery.patron_id == london)).scalar_one()
    assert due == dt.datetime(2027, 3, 1, 8, 0, tzinfo=UTC)  # 08:00 in London (GMT in March)
    assert release_due(engine=crm, rules=RULES, now=due - dt.timedelta(minutes=1)).queued == 0
    assert release_due(engine=crm, rules=RULES, now=due).queued == 1
    assert _states(crm, campaign)[london] == ("queued", None)
    # Turned off: no wait at all.
    assert QuietHours.parse("") is None


@pytest.mark.parametrize(
    ("window", "local", "after"),
    [
        ("21:00-08:00", dt.time(22, 30), (1, 8, 0)),
        ("21:00-08:00", dt.time(3, 0), (0, 8, 0)),
        ("21:00-08:00", dt.time(12, 0), (0, 12, 0)),
        ("12:00-14:00", dt.time(13, 0), (0, 14, 0)),
        ("12:00-14:00", dt.time(14, 0), (0, 14, 0)),
    ],
)
def test_quiet_hours_end(window: str, local: dt.time, after: tuple[int, int, int]) -> None:
    quiet = QuietHours.parse(window)
    assert quiet is not None
    moment = dt.datetime.combine(dt.date(2027, 3, 1), local, tzinfo=SHANGHAI)
    days, hour, minute = after
    assert quiet.ends_after(moment) == dt.datetime(2027, 3, 1 + days, hour, minute, tzinfo=SHANGHAI)


def test_the_frequency_cap_counts_campaign_messages_of_the_last_seven_days(crm: Engine) -> None:
    first, second, third = (_campaign(crm, name=n) for n in ("one", "two", "three"))
    amy = _patron(crm, name="amy")
    for campaign in (first, second, third):
        _deliver(crm, campaign, [amy])
    released = release_due(engine=crm, rules=RULES, now=NOON)
    assert released.queued == 2
    assert dict(released.skipped) == {"cap": 1}
    assert _states(crm, third)[amy] == ("skipped", "cap")
    # A week later the cap has room again.
    fourth = _campaign(crm, name="four")
    _deliver(crm, fourth, [amy], at=NOON + dt.timedelta(days=8))
    assert release_due(engine=crm, rules=RULES, now=NOON + dt.timedelta(days=8)).queued == 1


def test_a_paused_or_cancelled_campaign_sends_nothing_and_not_before_its_time(crm: Engine) -> None:
    paused = _campaign(crm, name="paused", status="paused")
    later = _campaign(crm, name="later")
    amy = _patron(crm, name="amy")
    _deliver(crm, paused, [amy])
    _deliver(crm, later, [amy], at=NOON + dt.timedelta(hours=2))
    assert release_due(engine=crm, rules=RULES, now=NOON).queued == 0
    assert _states(crm, paused)[amy] == ("pending", None)
    assert _states(crm, later)[amy] == ("pending", None)


def test_no_more_than_the_channel_can_send_soon_is_queued(crm: Engine) -> None:
    campaign = _campaign(crm)
    patrons = [_patron(crm, name=f"p{n}") for n in range(15)]
    _deliver(crm, campaign, patrons)
    slow = SendRules(quiet_hours=None, cap=2, library_zone=SHANGHAI, rates={"telegram": 1.0})
    assert release_due(engine=crm, rules=slow, now=NOON).queued == 10  # 10 s of sending at 1/s
    assert release_due(engine=crm, rules=slow, now=NOON).queued == 0  # the outbox still holds them
    with session_scope(crm) as session:
        session.execute(update(OutboxMessage).values(status="delivered"))
    assert release_due(engine=crm, rules=slow, now=NOON).queued == 5


def _status(crm: Engine, campaign_id: int) -> str:
    with Session(crm, future=True) as session:
        return str(session.get(Campaign, campaign_id).status)  # type: ignore[union-attr]


def test_a_one_off_campaign_is_done_once_nothing_is_left_to_send(crm: Engine) -> None:
    """Outreach staff see a finished one-off as done, not running for ever; a cron or triggered one runs
    on, and a delivery waiting for the morning or in the outbox keeps it running."""
    one_off = _campaign(crm, name="one-off")
    monthly = _campaign(crm, name="monthly")
    triggered = _campaign(crm, name="welcome")
    with session_scope(crm) as session:
        session.get(Campaign, monthly).schedule = {"cron": "0 10 1 * *"}  # type: ignore[union-attr]
        session.get(Campaign, triggered).trigger_event = "first_conversation"  # type: ignore[union-attr]
    amy, bo = _patron(crm, name="amy"), _patron(crm, name="bo", consent=None)
    for campaign in (one_off, monthly, triggered):
        _deliver(crm, campaign, [amy, bo])
    assert finish_campaigns(engine=crm) == []  # everything still pending
    release_due(engine=crm, rules=RULES, now=NOON)
    assert _states(crm, one_off)[bo] == ("skipped", "no_consent")
    assert finish_campaigns(engine=crm) == []  # amy's message is in the outbox, not sent yet
    with session_scope(crm) as session:
        session.execute(update(OutboxMessage).values(status="delivered"))
    assert finish_campaigns(engine=crm) == [one_off]
    assert [_status(crm, c) for c in (one_off, monthly, triggered)] == ["done", "running", "running"]
    assert finish_campaigns(engine=crm) == []


def test_a_campaign_paused_before_it_finishes_stays_paused(crm: Engine) -> None:
    campaign = _campaign(crm, name="paused-one-off", status="paused")
    _deliver(crm, campaign, [_patron(crm, name="cy")])
    with session_scope(crm) as session:
        session.execute(update(Delivery).values(state="cancelled"))
    assert finish_campaigns(engine=crm) == []
    assert _status(crm, campaign) == "paused"


def test_two_senders_at_once_queue_each_delivery_once(crm: Engine) -> None:
    campaign = _campaign(crm)
    patrons = [_patron(crm, name=f"p{n}") for n in range(40)]
    _deliver(crm, campaign, patrons)
    rules = SendRules(quiet_hours=None, cap=2, library_zone=SHANGHAI, rates={"telegram": 1000.0})
    errors: list[BaseException] = []

    def sender() -> None:
        for _ in range(40):
            try:
                release_due(engine=crm, rules=rules, limit=7, now=NOON)
            except OperationalError:  # SQLite: the other writer held the database; look again
                continue
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with Session(crm, future=True) as session:
        outbox = session.execute(select(OutboxMessage.recipient)).scalars().all()
        queued = session.execute(
            select(func.count()).where(Delivery.campaign_id == campaign, Delivery.state == "queued")
        ).scalar_one()
    assert sorted(outbox) == sorted({f"telegram:p{n}" for n in range(40)})
    assert queued == 40


def test_the_report_counts_outcomes_skips_replies_opt_outs_and_ratings(crm: Engine) -> None:
    campaign = _campaign(crm)
    amy, bo, cy = (_patron(crm, name=n) for n in ("amy", "bo", "cy"))
    never = _patron(crm, name="di", consent=None)
    now = utcnow()
    _deliver(crm, campaign, [amy, bo, cy, never], at=now)
    assert (
        release_due(engine=crm, rules=SendRules(quiet_hours=None, library_zone=SHANGHAI), now=now).queued == 3
    )
    outcomes = {
        "telegram:amy": SENT,
        "telegram:bo": Attempt("unknown", reason="timeout"),
        "telegram:cy": SENT,
    }

    async def channel(message: OutboxMessage) -> Attempt:
        return outcomes[str(message.recipient)]

    dispatcher = Dispatcher(engine=crm)
    dispatcher.register("telegram", channel)
    assert asyncio.run(dispatcher.drain_once()) == 2
    with session_scope(crm) as session:  # amy answers and rates; cy opts out
        conversation = session.execute(
            select(Conversation.id).where(Conversation.patron_id == amy)
        ).scalar_one()
        session.add(
            Interaction(
                patron_id=amy,
                conversation_id=conversation,
                channel="telegram",
                direction="in",
                text="I'll come",
                event_key="in:amy:2",
                occurred_at=utcnow() + dt.timedelta(seconds=1),
            )
        )
        session.add(Feedback(patron_id=amy, csat=5, created_at=utcnow() + dt.timedelta(seconds=1)))
        record_consent(
            session=session,
            patron_id=cy,
            purpose="follow_up",
            granted=False,
            at=utcnow() + dt.timedelta(seconds=1),
        )
    with Session(crm, future=True) as session:
        report = campaign_report(session=session, campaign_id=campaign)
    assert (report.deliveries, report.sent, report.unknown_outcome, report.queued, report.waiting) == (
        4,
        2,
        1,
        0,
        0,
    )
    assert report.skipped == {"no_consent": 1}
    assert (report.replies, report.opt_outs) == (1, 1)
    assert report.ratings["csat_count"] == 1
    assert report.ratings["csat_mean"] == 5.0


def test_campaign_run_and_report_from_the_command_line(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli.main import main
    from bot.crm.models import SegmentMembership

    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    monkeypatch.setenv("PATRONBOT_QUIET_HOURS", "")
    campaign = _campaign(crm, status="draft")
    amy = _patron(crm, name="amy", channel="rest")
    bo = _patron(crm, name="bo", channel="rest", consent=None)
    with session_scope(crm) as session:
        segment = session.execute(select(Campaign.segment_id).where(Campaign.id == campaign)).scalar_one()
        session.execute(update(Segment).where(Segment.id == segment).values(definition=None))  # by hand
        session.add_all([SegmentMembership(segment_id=segment, patron_id=p) for p in (amy, bo)])
    assert main(["campaign", "run", str(campaign), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 deliveries" in out
    assert "no_consent 1" in out
    with Session(crm, future=True) as session:
        waiting = session.execute(select(OutboxMessage.recipient, OutboxMessage.status)).all()
    assert waiting == [("rest:amy", "pending")]  # the REST client fetches it
    # Run again: nobody gets a one-off campaign twice.
    assert main(["campaign", "run", str(campaign), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["campaign", "report", str(campaign), "--format", "json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert (report["deliveries"], report["queued"], report["skipped"]) == (2, 1, {"no_consent": 1})
    assert main(["campaign", "report", "999"]) == 2
    assert "no campaign 999" in capsys.readouterr().err


def test_a_campaigns_buttons_go_with_its_message_titled_in_the_patrons_language(crm: Engine) -> None:
    campaign = _campaign(crm)
    with session_scope(crm) as session:
        row = session.get(Campaign, campaign)
        assert row is not None
        row.buttons = [
            {"title": {"en": "Register", "zh": "报名"}, "payload": "/register_workshop"},
            {"title": {"en": "Not for me"}, "payload": "/deny"},  # no Chinese title: the English one
        ]
    amy, bo = _patron(crm, name="amy"), _patron(crm, name="bo", language="zh")
    _deliver(crm, campaign, [amy, bo])
    assert release_due(engine=crm, rules=RULES, now=NOON).queued == 2
    with Session(crm, future=True) as session:
        sent = dict(session.execute(select(OutboxMessage.patron_id, OutboxMessage.buttons)).all())
    assert sent[amy] == [
        {"title": "Register", "payload": "/register_workshop"},
        {"title": "Not for me", "payload": "/deny"},
    ]
    assert sent[bo] == [
        {"title": "报名", "payload": "/register_workshop"},
        {"title": "Not for me", "payload": "/deny"},
    ]
