"""The console's segments pages and API (admins only): the form through the segment parser, the preview
with its audited sample, saving and counting, parser errors beside the form, stored text shown as text."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import AuditLog, ChannelIdentity, Consent, Patron, PatronInterest, Segment, utcnow
from tests.console_helpers import signed_in, staff
from tests.test_segments import WordEncoder

PAGES = ["/segments", "/segments/new"]
XSS = "<script>alert('x')</script>"


def patron(crm: Engine, name: str, *, kind: str, language: str, channel: str, seen_days_ago: int = 1) -> int:
    with session_scope(crm) as session:
        row = Patron(
            display_name=name,
            patron_type=kind,
            language=language,
            last_seen_at=utcnow() - dt.timedelta(days=seen_days_ago),
        )
        session.add(row)
        session.flush()
        session.add(ChannelIdentity(patron_id=row.id, channel=channel, external_id=f"{channel}-{name}"))
        return int(row.id)


def admin(console: TestClient, crm: Engine) -> str:
    staff(crm, "ada", "admin")
    return signed_in(console, "ada")


def form(csrf: str, **fields: str | list[str]) -> dict[str, str | list[str]]:
    return {"csrf_token": csrf, "editing": "0", **fields}


def test_a_librarian_gets_403_on_every_segment_page_and_api(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    csrf = signed_in(console, "lin")
    headers = {"X-CSRF-Token": csrf}
    for path in PAGES:
        assert console.get(path).status_code == 403, path
    assert console.get("/api/segments").status_code == 403
    assert console.post("/api/segments", json={"name": "a", "rules": {}}, headers=headers).status_code == 403
    assert (
        console.post("/api/segments/preview", json={"name": "a", "rules": {}}, headers=headers).status_code
        == 403
    )
    assert console.post("/segments/form", data=form(csrf, name="a", do="save")).status_code == 403
    assert 'href="/segments"' not in console.get("/").text


def test_an_admin_reaches_every_segment_page_and_api(console: TestClient, crm: Engine) -> None:
    csrf = admin(console, crm)
    for path in PAGES:
        assert console.get(path).status_code == 200, path
    assert 'href="/segments"' in console.get("/").text
    assert console.get("/api/segments").json() == {"segments": []}
    saved = console.post("/api/segments", json={"name": "all", "rules": {}}, headers={"X-CSRF-Token": csrf})
    assert saved.status_code == 200
    assert console.get(f"/segments/{saved.json()['id']}").status_code == 200
    assert console.get("/segments/999").status_code == 404


def test_the_forms_preview_shows_the_matching_patrons_and_audits_each_read(
    console: TestClient, crm: Engine
) -> None:
    csrf = admin(console, crm)
    wanted = patron(crm, "Mei", kind="postgraduate", language="zh", channel="telegram")
    patron(crm, "Tom", kind="undergraduate", language="zh", channel="telegram")
    patron(crm, "Ann", kind="postgraduate", language="en", channel="telegram")
    patron(crm, "Wu", kind="postgraduate", language="zh", channel="wechat")
    answer = console.post(
        "/segments/form",
        data=form(
            csrf,
            name="pg-zh-telegram",
            patron_type=["postgraduate"],
            language=["zh"],
            channel=["telegram"],
            active_within_days="30",
            do="preview",
        ),
    )
    assert answer.status_code == 200
    assert "当前符合条件的读者：1 位" in answer.text  # the console's language: Chinese unless chosen
    assert f'href="/patrons/{wanted}"' in answer.text
    assert "Mei" in answer.text
    assert "Tom" not in answer.text
    assert "Ann" not in answer.text
    assert "Wu" not in answer.text
    with session_scope(crm) as session:
        assert session.scalar(select(Segment.id)) is None  # a preview stores nothing
        audited = session.execute(select(AuditLog.patron_id, AuditLog.action, AuditLog.reason)).all()
    assert [(row[0], row[1]) for row in audited] == [(wanted, "read")]
    assert "pg-zh-telegram" in audited[0][2]


def test_saving_from_the_form_stores_the_segment_and_counts_it(console: TestClient, crm: Engine) -> None:
    csrf = admin(console, crm)
    patron(crm, "Mei", kind="faculty", language="en", channel="webchat")
    patron(crm, "Old", kind="faculty", language="en", channel="webchat", seen_days_ago=400)
    answer = console.post(
        "/segments/form",
        data=form(
            csrf,
            name="faculty-web",
            description="faculty on the widget",
            patron_type=["faculty"],
            channel=["webchat"],
            active_within_days="90",
            do="save",
        ),
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/segments?done=seg_saved")
    with session_scope(crm) as session:
        segment = session.execute(select(Segment)).scalar_one()
        assert segment.definition == {
            "patron_type": ["faculty"],
            "channel": ["webchat"],
            "active_within_days": 90,
        }
        assert (segment.description, segment.member_count) == ("faculty on the widget", 1)
        segment_id = segment.id
    listed = console.get("/segments?done=seg_saved")
    assert "faculty-web" in listed.text
    assert "faculty on the widget" in listed.text
    edit = console.get(f"/segments/{segment_id}").text
    assert 'value="faculty"' in edit
    assert 'value="90"' in edit
    assert 'value="faculty" checked' in edit


def test_a_parser_error_is_shown_beside_the_form_with_the_typed_values_kept(
    console: TestClient, crm: Engine
) -> None:
    csrf = admin(console, crm)
    answer = console.post(
        "/segments/form",
        data=form(
            csrf,
            name="tz",
            description="typed words",
            channel=["wechat"],
            time_zone="Asia/Beijing",
            active_within_days="ninety",
            do="save",
        ),
    )
    assert answer.status_code == 400
    assert "rules.time_zone.0: unknown time zone &#39;Asia/Beijing&#39;" in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert 'value="Asia/Beijing"' in answer.text
    assert 'value="ninety"' in answer.text
    assert "typed words" in answer.text
    assert 'value="wechat" checked' in answer.text
    with session_scope(crm) as session:
        assert session.scalar(select(Segment.id)) is None


def test_the_api_refuses_a_bad_definition_with_the_parsers_message(console: TestClient, crm: Engine) -> None:
    csrf = admin(console, crm)
    headers = {"X-CSRF-Token": csrf}
    bad = console.post(
        "/api/segments", json={"name": "x", "rules": {"channels": ["telegram"]}}, headers=headers
    )
    assert bad.status_code == 400
    assert bad.json()["error"].startswith("rules.channels: unknown field")
    preview = console.post(
        "/api/segments/preview", json={"name": "x", "rules": {"reachable": True}}, headers=headers
    )
    assert preview.status_code == 400
    assert "not a rule" in preview.json()["error"]
    assert console.post("/api/segments", content=b"[]", headers=headers).status_code == 400


def test_the_api_saves_and_previews(console: TestClient, crm: Engine) -> None:
    csrf = admin(console, crm)
    headers = {"X-CSRF-Token": csrf}
    mei = patron(crm, "Mei", kind="postgraduate", language="zh", channel="wechat")
    patron(crm, "Tom", kind="public", language="zh", channel="wechat")
    definition = {"name": "pg", "description": "d", "rules": {"patron_type": ["postgraduate"]}}
    shown = console.post("/api/segments/preview", json=definition, headers=headers).json()
    assert shown == {
        "name": "pg",
        "count": 1,
        "sample": [
            {
                "patron_id": mei,
                "display_name": "Mei",
                "language": "zh",
                "patron_type": "postgraduate",
                "channels": ["wechat"],
            }
        ],
    }
    saved = console.post("/api/segments", json=definition, headers=headers).json()
    assert (saved["name"], saved["count"]) == ("pg", 1)
    [listed] = console.get("/api/segments").json()["segments"]
    assert (listed["name"], listed["member_count"], listed["rules"]) == (
        "pg",
        1,
        {"patron_type": ["postgraduate"]},
    )


def test_the_interest_rule_previews_and_saves_with_the_apps_encoder(console: TestClient, crm: Engine) -> None:
    csrf = admin(console, crm)
    encoder = WordEncoder()
    console.app.state.interest_encoder = encoder  # type: ignore[attr-defined]
    near = patron(crm, "Near", kind="postgraduate", language="en", channel="rest")
    far = patron(crm, "Far", kind="postgraduate", language="en", channel="rest")
    with session_scope(crm) as session:
        for patron_id, words in ((near, "research data management plan"), (far, "where is the toilet")):
            session.add(Consent(patron_id=patron_id, purpose="profiling", granted=True))
            vector = encoder.encode_queries([words])[0]
            session.add(
                PatronInterest(
                    patron_id=patron_id, vector=vector.tobytes(), dims=64, model=encoder.identity, messages=1
                )
            )
    values = form(csrf, name="rdm", interest_text="research data management", interest_min_similarity="0.5")
    shown = console.post("/segments/form", data={**values, "do": "preview"})
    assert shown.status_code == 200
    assert "Near" in shown.text
    assert "Far" not in shown.text
    saved = console.post("/segments/form", data={**values, "do": "save"}, follow_redirects=False)
    assert saved.status_code == 303
    with session_scope(crm) as session:
        assert session.execute(select(Segment.member_count)).scalar_one() == 1


@pytest.mark.parametrize("where", ["list", "form"])
def test_a_segment_description_is_shown_as_text(console: TestClient, crm: Engine, where: str) -> None:
    csrf = admin(console, crm)
    saved = console.post(
        "/api/segments", json={"name": "x", "description": XSS, "rules": {}}, headers={"X-CSRF-Token": csrf}
    )
    page = console.get("/segments" if where == "list" else f"/segments/{saved.json()['id']}").text
    assert XSS not in page
    assert "&lt;script&gt;alert(" in page
