"""The console's campaigns pages and API (admins only): a campaign made from the form through the campaign
parser, its message preview, pause, resume and cancel, and its report with chart and CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import Campaign, ChannelIdentity, Delivery, Patron
from bot.outreach.report import campaign_report
from tests.console_helpers import signed_in, staff

XSS = "<script>alert('x')</script>"


def admin_with_segment(console: TestClient, crm: Engine) -> str:
    """Signed in as an admin, with segment `everyone` holding one patron; the CSRF token."""
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    with session_scope(crm) as session:
        patron = Patron(display_name="Mei", language="zh", patron_type="postgraduate")
        session.add(patron)
        session.flush()
        session.add(ChannelIdentity(patron_id=patron.id, channel="telegram", external_id="77"))
    saved = console.post(
        "/api/segments", json={"name": "everyone", "rules": {}}, headers={"X-CSRF-Token": csrf}
    )
    assert saved.json()["count"] == 1
    return csrf


def campaign_form(csrf: str, **fields: str) -> dict[str, str]:
    base = {
        "csrf_token": csrf,
        "name": "rdm-invite",
        "segment": "everyone",
        "purpose": "follow_up",
        "kind": "announcement",
        "asks": "",
        "message_zh": "{display_name}您好，欢迎参加讲座。",
        "message_en": "Hello {display_name}, join the workshop.",
        "button0_en": "Sign me up",
        "button0_zh": "我要报名",
        "button0_payload": "/affirm",
        "schedule_kind": "none",
    }
    return {**base, **fields}


def make_campaign(console: TestClient, csrf: str, **fields: Any) -> int:
    answer = console.post(
        "/api/campaigns",
        json={"name": "c", "segment": "everyone", "message": {"en": "Hi"}, **fields},
        headers={"X-CSRF-Token": csrf},
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["id"])


def test_a_librarian_gets_403_on_every_campaign_page_and_api(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    csrf = signed_in(console, "lin")
    headers = {"X-CSRF-Token": csrf}
    for path in (
        "/campaigns",
        "/campaigns/new",
        "/campaigns/1",
        "/campaigns/1.csv",
        "/campaigns/1/edit",
        "/api/campaigns",
        "/api/campaigns/1/report",
    ):
        assert console.get(path).status_code == 403, path
    for path in (
        "/api/campaigns",
        "/api/campaigns/1/pause",
        "/api/campaigns/1/resume",
        "/api/campaigns/1/cancel",
    ):
        assert console.post(path, json={}, headers=headers).status_code == 403, path
    for path in ("/campaigns/form", "/campaigns/1/pause", "/campaigns/1/resume", "/campaigns/1/cancel"):
        assert console.post(path, data={"csrf_token": csrf}).status_code == 403, path
    assert 'href="/campaigns"' not in console.get("/").text


def test_an_admin_reaches_every_campaign_page_and_api(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(console, csrf)
    for path in ("/campaigns", "/campaigns/new", f"/campaigns/{campaign}", f"/campaigns/{campaign}.csv"):
        assert console.get(path).status_code == 200, path
    assert console.get("/api/campaigns").status_code == 200
    assert console.get(f"/api/campaigns/{campaign}/report").status_code == 200
    assert console.get("/campaigns/999").status_code == 404
    assert console.get("/api/campaigns/999/report").status_code == 404
    assert console.post("/api/campaigns/999/pause", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert 'href="/campaigns"' in console.get("/").text


def test_a_campaign_made_from_the_form_is_stored_with_its_schedule_and_texts(
    console: TestClient, crm: Engine
) -> None:
    csrf = admin_with_segment(console, crm)
    zone: ZoneInfo = console.app.state.zone  # type: ignore[attr-defined]
    when = (dt.datetime.now(zone) + dt.timedelta(days=30)).replace(second=0, microsecond=0, tzinfo=None)
    fields = campaign_form(csrf, schedule_kind="at", at=when.strftime("%Y-%m-%dT%H:%M"))
    preview = console.post("/campaigns/form", data={**fields, "do": "preview"})
    assert preview.status_code == 200
    assert "Hello Alex, join the workshop." in preview.text  # the sample patron's name filled in
    assert "Reply STOP" in preview.text
    assert "1. Sign me up" in preview.text
    saved = console.post("/campaigns/form", data={**fields, "do": "save"}, follow_redirects=False)
    assert saved.status_code == 303
    with session_scope(crm) as session:
        campaign = session.execute(select(Campaign)).scalar_one()
        assert saved.headers["location"] == f"/campaigns/{campaign.id}?done=camp_saved"
        assert campaign.status == "scheduled"
        assert campaign.scheduled_at == when.replace(tzinfo=zone).astimezone(dt.UTC)
        assert campaign.message == {
            "zh": "{display_name}您好，欢迎参加讲座。",
            "en": "Hello {display_name}, join the workshop.",
        }
        assert campaign.buttons == [{"title": {"en": "Sign me up", "zh": "我要报名"}, "payload": "/affirm"}]
    listed = console.get("/campaigns").text
    assert "rdm-invite" in listed
    assert f"once at {when:%Y-%m-%d %H:%M} {zone.key}" in listed


def test_cron_and_after_schedules_from_the_form(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    console.post(
        "/campaigns/form",
        data=campaign_form(csrf, name="weekly", schedule_kind="cron", cron="0 9 * * MON", do="save"),
    )
    console.post(
        "/campaigns/form",
        data=campaign_form(
            csrf,
            name="after",
            kind="question",
            asks="csat",
            schedule_kind="after",
            after_event="low_rating",
            after_days="3",
            do="save",
        ),
    )
    with session_scope(crm) as session:
        stored = {c.name: (c.schedule, c.kind, c.asks) for c in session.execute(select(Campaign)).scalars()}
    zone = console.app.state.zone.key  # type: ignore[attr-defined]
    assert stored == {
        "weekly": ({"cron": "0 9 * * MON", "timezone": zone}, "announcement", None),
        "after": ({"after": {"event": "low_rating", "days": 3.0}}, "question", "csat"),
    }


def test_parser_errors_are_shown_beside_the_form_with_the_typed_text_kept(
    console: TestClient, crm: Engine
) -> None:
    csrf = admin_with_segment(console, crm)
    answer = console.post(
        "/campaigns/form",
        data=campaign_form(
            csrf, message_en="Hi {first_name} " + XSS, schedule_kind="cron", cron="0 9 * *", do="save"
        ),
    )
    assert answer.status_code == 400
    assert "message.en: {first_name} is not a field a message can name" in answer.text
    assert 'id="message-en-problem"' in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert "Hi {first_name} &lt;script&gt;" in answer.text
    assert XSS not in answer.text
    assert 'value="0 9 * *"' in answer.text
    assert 'value="rdm-invite"' in answer.text
    bad_cron = console.post(
        "/campaigns/form", data=campaign_form(csrf, schedule_kind="cron", cron="0 9 * *", do="save")
    )
    assert "schedule.cron: not a valid cron expression" in bad_cron.text
    with session_scope(crm) as session:
        assert session.scalar(select(Campaign.id)) is None


def test_the_api_refuses_an_unknown_segment_and_a_bad_campaign_with_the_parsers_message(
    console: TestClient, crm: Engine
) -> None:
    csrf = admin_with_segment(console, crm)
    answer = console.post(
        "/api/campaigns",
        json={"name": "x", "segment": "nobody", "message": {"en": "Hi"}},
        headers={"X-CSRF-Token": csrf},
    )
    assert answer.status_code == 404
    assert answer.json()["error"].startswith("segment: no segment named 'nobody'")
    bad = console.post(
        "/api/campaigns",
        json={"name": "x", "segment": "everyone", "message": {"en": "Hi"}, "schedule": {"cron": "0 9 * *"}},
        headers={"X-CSRF-Token": csrf},
    )
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("schedule.cron: not a valid cron expression")


def test_a_saved_campaign_opens_in_the_form_and_saving_changes_it(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(
        console,
        csrf,
        name="monthly-news",
        message={"en": "News for {display_name}", "zh": "{display_name}，本月新闻"},
        buttons=[{"title": {"en": "Tell me more", "zh": "详细"}, "payload": "/affirm"}],
        schedule={"cron": "0 10 1 * *", "timezone": "Asia/Shanghai"},
    )
    report = console.get(f"/campaigns/{campaign}").text
    assert f'href="/campaigns/{campaign}/edit"' in report
    page = console.get(f"/campaigns/{campaign}/edit")
    assert page.status_code == 200
    for shown in (
        'value="monthly-news" readonly',
        ">News for {display_name}</textarea>",
        'value="Tell me more"',
        'value="0 10 1 * *"',
        'value="Asia/Shanghai"',
    ):
        assert shown in page.text, shown
    form = campaign_form(
        csrf,
        name="monthly-news",
        editing="1",
        do="save",
        message_en="This month for {display_name}",
        message_zh="{display_name}，本月通讯",
        button0_en="Tell me more",
        button0_zh="详细",
        schedule_kind="cron",
        cron="0 10 1 * *",
        cron_timezone="Asia/Shanghai",
    )
    saved = console.post("/campaigns/form", data=form, follow_redirects=False)
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/campaigns/{campaign}?done=camp_saved"
    with session_scope(crm) as session:
        stored = session.get(Campaign, campaign)
        assert stored is not None
        assert stored.message["en"] == "This month for {display_name}"
        assert stored.schedule == {"cron": "0 10 1 * *", "timezone": "Asia/Shanghai"}
        assert session.scalar(select(func.count()).select_from(Campaign)) == 1


def test_a_cancelled_campaign_is_not_offered_for_editing(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(console, csrf)
    console.post(f"/campaigns/{campaign}/cancel", data={"csrf_token": csrf, "confirm": "yes"})
    assert f'href="/campaigns/{campaign}/edit"' not in console.get(f"/campaigns/{campaign}").text
    assert console.get(f"/campaigns/{campaign}/edit").status_code == 409
    assert console.get("/campaigns/999999/edit").status_code == 404


def test_pause_resume_and_cancel_change_the_status(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(console, csrf, schedule={"cron": "0 9 * * MON"})

    def status() -> str:
        with session_scope(crm) as session:
            return str(session.get(Campaign, campaign).status)  # type: ignore[union-attr]

    paused = console.post(f"/campaigns/{campaign}/pause", data={"csrf_token": csrf}, follow_redirects=False)
    assert (paused.headers["location"], status()) == (f"/campaigns/{campaign}?done=camp_paused", "paused")
    assert console.post(f"/api/campaigns/{campaign}/resume", headers={"X-CSRF-Token": csrf}).json() == {
        "id": campaign,
        "status": "scheduled",
    }
    assert status() == "scheduled"
    unconfirmed = console.post(
        f"/campaigns/{campaign}/cancel", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert "problem=" in unconfirmed.headers["location"]
    assert status() == "scheduled"
    console.post(f"/campaigns/{campaign}/cancel", data={"csrf_token": csrf, "confirm": "yes"})
    assert status() == "cancelled"
    again = console.post(f"/api/campaigns/{campaign}/pause", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]


def test_the_report_page_and_csv_match_the_crm(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(console, csrf)
    with session_scope(crm) as session:
        patrons = [Patron(display_name=f"p{n}") for n in range(4)]
        session.add_all(patrons)
        session.flush()
        session.add_all(
            [
                Delivery(
                    campaign_id=campaign, patron_id=patrons[0].id, state="skipped", reason="quiet_hours"
                ),
                Delivery(
                    campaign_id=campaign, patron_id=patrons[1].id, state="skipped", reason="quiet_hours"
                ),
                Delivery(campaign_id=campaign, patron_id=patrons[2].id, state="skipped", reason="no_consent"),
                Delivery(campaign_id=campaign, patron_id=patrons[3].id, state="pending"),
            ]
        )
    with session_scope(crm) as session:
        report = campaign_report(session=session, campaign_id=campaign)
    console.post("/language", data={"csrf_token": csrf, "language": "en", "next": "/"})
    page = console.get(f"/campaigns/{campaign}").text
    assert '<th scope="row">Skipped: quiet hours</th><td>2</td>' in page
    assert '<th scope="row">Deliveries</th><td>4</td>' in page
    assert '<th scope="row">Waiting for the morning</th><td>1</td>' in page
    assert page.count("<rect ") >= 10
    assert "<title>Skipped: no consent: 1</title>" in page
    assert "unknown_outcome" not in page
    console.post("/language", data={"csrf_token": csrf, "language": "zh", "next": "/"})
    page = console.get(f"/campaigns/{campaign}").text
    assert '<th scope="row">跳过：免打扰时段</th><td>2</td>' in page
    assert '<th scope="row">结果未知（不重发）</th><td>0</td>' in page
    rows = dict(csv.reader(io.StringIO(console.get(f"/campaigns/{campaign}.csv").text)))
    assert rows["deliveries"] == str(report.deliveries) == "4"
    assert rows["skipped:quiet_hours"] == str(report.skipped["quiet_hours"]) == "2"
    assert rows["waiting"] == "1"
    assert rows["sent"] == "0"
    assert console.get(f"/api/campaigns/{campaign}/report").json() == report.as_dict()


def test_a_campaign_message_is_shown_as_text(console: TestClient, crm: Engine) -> None:
    csrf = admin_with_segment(console, crm)
    campaign = make_campaign(console, csrf, message={"en": "Hello " + XSS})
    page = console.get(f"/campaigns/{campaign}").text
    assert XSS not in page
    assert "Hello &lt;script&gt;alert(" in page
    preview = console.post(
        "/campaigns/form", data={**campaign_form(csrf, message_en="Hi " + XSS), "do": "preview"}
    ).text
    assert XSS not in preview
    assert "Hi &lt;script&gt;alert(" in preview
