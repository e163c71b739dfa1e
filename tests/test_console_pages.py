"""The staff console's pages: sign-in by form, pages behind it, CSRF on every form, actions on an
escalation by form, each staff member's language remembered, and the command line that makes staff."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.cli.main import main
from bot.crm.models import Escalation, OutboxMessage, StaffUser
from bot.settings import get_settings
from console.pages import ROUTES
from tests.console_helpers import PASSWORD, escalated_patron, staff

PAGES = ["/", "/inbox/rows", "/escalations/1", "/escalations/1/messages", "/patrons/1", "/audit"]


def sign_in_by_form(client: TestClient, username: str) -> str:
    answer = client.post(
        "/login", data={"username": username, "password": PASSWORD, "next": "/"}, follow_redirects=False
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/")
    page = client.get("/").text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_a_stranger_to_sign_in(console: TestClient, path: str) -> None:
    answer = console.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")


def test_every_form_post_without_a_session_goes_to_sign_in_and_changes_nothing(
    console: TestClient, crm: Engine
) -> None:
    _, escalation = escalated_patron(crm)
    posts = [route.path for route in ROUTES if "POST" in (route.methods or ()) and route.path != "/login"]
    assert len(posts) >= 8
    for path in posts:
        answer = console.post(
            path.replace("{escalation_id:id}", str(escalation)), data={"text": "x"}, follow_redirects=False
        )
        assert answer.status_code == 303, path
    with Session(crm, future=True) as session:
        assert session.get(Escalation, escalation).status == "open"  # type: ignore[union-attr]
        assert session.execute(select(OutboxMessage)).first() is None


def test_sign_in_by_form_goes_to_the_page_asked_for_and_never_off_site(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    answer = console.post(
        "/login", data={"username": "lin", "password": PASSWORD, "next": "/audit?x=1"}, follow_redirects=False
    )
    assert answer.headers["location"] == "/audit?x=1"
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        answer = console.post(
            "/login", data={"username": "lin", "password": PASSWORD, "next": target}, follow_redirects=False
        )
        assert answer.headers["location"] == "/", target


def test_a_wrong_password_shows_the_sign_in_page_again_with_an_alert(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    answer = console.post("/login", data={"username": "lin", "password": "not-it-at-all", "lang": "en"})
    assert answer.status_code == 401
    assert 'role="alert">Wrong username or password.' in answer.text
    chinese = console.post("/login", data={"username": "lin", "password": "not-it-at-all", "lang": "zh"})
    assert "用户名或密码错误" in chinese.text


def test_a_form_without_the_csrf_token_is_refused(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    sign_in_by_form(console, "lin")
    refused = console.post(f"/escalations/{escalation}/claim", data={}, follow_redirects=False)
    assert refused.status_code == 403
    with Session(crm, future=True) as session:
        assert session.get(Escalation, escalation).assignee_id is None  # type: ignore[union-attr]


def test_a_librarian_works_an_escalation_with_the_pages(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron, escalation = escalated_patron(crm, sender="telegram:31", words="Where is my hold?")
    csrf = sign_in_by_form(console, "lin")
    inbox = console.get("/").text
    assert "Where is my hold?" in inbox
    assert f'href="/escalations/{escalation}"' in inbox
    page = console.get(f"/escalations/{escalation}").text
    assert "Where is my hold?" in page
    assert "human_handoff (0.93)" in page
    claimed = console.post(f"/escalations/{escalation}/claim", data={"csrf_token": csrf})
    assert 'role="status"' in claimed.text  # the outcome is announced to screen readers
    console.post(f"/escalations/{escalation}/reply", data={"csrf_token": csrf, "text": "It is on the shelf."})
    console.post(f"/escalations/{escalation}/notes", data={"csrf_token": csrf, "text": "checked the shelf"})
    taken = console.post(
        f"/escalations/{escalation}/transfer", data={"csrf_token": csrf, "text": "", "to": "nobody"}
    )
    assert "no active staff member" in taken.text  # shown, not a crash
    done = console.post(f"/escalations/{escalation}/resolve", data={"csrf_token": csrf, "note": "found it"})
    assert done.url.path == "/"
    with Session(crm, future=True) as session:
        texts = session.execute(select(OutboxMessage.text).order_by(OutboxMessage.id)).scalars().all()
        resolved = session.get(Escalation, escalation)
    assert texts[0] == "It is on the shelf."
    assert resolved is not None
    assert (resolved.status, resolved.resolution_note) == ("resolved", "found it")
    assert console.get(f"/patrons/{patron}").status_code == 200


def test_the_language_choice_is_remembered_for_the_staff_member(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    csrf = sign_in_by_form(console, "lin")
    console.post("/language", data={"csrf_token": csrf, "language": "en", "next": "/"})
    assert "Open escalations" in console.get("/").text
    other = TestClient(console.app, base_url="http://console.test")
    sign_in_by_form(other, "lin")  # another browser: the choice follows the staff member
    assert '<html lang="en">' in other.get("/", headers={"Accept-Language": "zh-CN"}).text
    console.post("/language", data={"csrf_token": csrf, "language": "zh", "next": "/"})
    assert "待处理的转人工会话" in console.get("/").text
    with Session(crm, future=True) as session:
        assert session.execute(select(StaffUser.language)).scalar_one() == "zh"


def test_patronbot_staff_add_reads_the_password_from_stdin_never_the_command_line(
    crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    get_settings.cache_clear()
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["staff", "add", "ada", "--role", "admin"]) == 0
    assert "ada (admin) can sign in" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["staff", "add", "bo", "--role", "librarian"]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["staff", "add", "cy", "--role", "librarian", "--password", PASSWORD])
    with Session(crm, future=True) as session:
        stored = session.execute(select(StaffUser.username, StaffUser.password_hash)).all()
    assert [name for name, _ in stored] == ["ada"]
    assert stored[0][1].startswith("$argon2id$")
    assert PASSWORD not in stored[0][1]
    monkeypatch.setattr("sys.stdin", io.StringIO("another good password\n"))
    assert main(["staff", "password", "ada"]) == 0
    assert main(["staff", "deactivate", "ada"]) == 0
    capsys.readouterr()
    assert main(["staff", "list"]) == 0
    assert "ada\tadmin\tinactive\tcannot sign in" in capsys.readouterr().out


def test_an_overlong_reply_is_refused_with_the_limit_not_cut_short(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    csrf = sign_in_by_form(console, "lin")
    page = console.post(f"/escalations/{escalation}/reply", data={"csrf_token": csrf, "text": "x" * 4001})
    assert "at most 4000 characters: this one has 4001" in page.text
    assert 'data-draft="replied"' in page.text  # the browser puts the typed text back (static/drafts.js)
    with Session(crm, future=True) as session:
        assert session.execute(select(OutboxMessage)).first() is None


def test_a_reply_posted_after_the_session_ended_returns_to_its_page_after_signing_in(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    page = f"http://console.test/escalations/{escalation}"
    answer = console.post(
        f"/escalations/{escalation}/reply",
        data={"csrf_token": "old", "text": "typed before the session ended"},
        headers={"Referer": page},
        follow_redirects=False,
    )
    assert answer.headers["location"] == f"/login?next=%2Fescalations%2F{escalation}"
    # A referer from elsewhere is not followed.
    elsewhere = console.post(
        f"/escalations/{escalation}/reply",
        data={"text": "x"},
        headers={"Referer": "https://evil.example/escalations/1"},
        follow_redirects=False,
    )
    assert elsewhere.headers["location"] == "/login?next=%2F"


def test_an_escalation_that_does_not_exist_is_a_404_page_not_an_error(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    sign_in_by_form(console, "lin")
    answer = console.get("/escalations/999")
    assert answer.status_code == 404
    assert "999" in answer.text
