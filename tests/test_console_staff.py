"""The staff accounts page and API (admins only): add a member who can then sign in, change a role,
deactivate (their session stops at once) and reactivate, reset a password; never oneself out, never
the last admin; every change audited; staff-written names shown as text."""

from __future__ import annotations

import re

from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.models import AuditLog, StaffUser
from tests.console_helpers import PASSWORD, signed_in, staff

NEW_PASSWORD = "a brand new passphrase"


def staff_id(crm: Engine, username: str) -> int:
    with Session(crm, future=True) as session:
        return int(session.execute(select(StaffUser.id).where(StaffUser.username == username)).scalar_one())


def second_client(console: TestClient) -> TestClient:
    """Another browser on the same console (its own cookies)."""
    return TestClient(console.app, base_url="http://console.test")


def page_csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/staff").text)
    assert found is not None
    return found.group(1)


def staff_changes(crm: Engine) -> list[tuple[str, str, str]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.reason)
            .where(AuditLog.reason.like("console: staff account %"))
            .order_by(AuditLog.id)
        ).all()
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def test_an_admin_adds_a_member_by_the_page_who_can_then_sign_in(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    signed_in(console, "ada")
    csrf = page_csrf(console)
    form = {"csrf_token": csrf, "username": "lin", "role": "librarian"}
    differ = console.post(
        "/staff",
        data={**form, "password": PASSWORD, "password_again": "something else"},
        follow_redirects=False,
    )
    assert differ.headers["location"] == "/staff?staff_problem=mismatch"
    short = console.post("/staff", data={**form, "password": "short", "password_again": "short"})
    assert "at least 10 characters" in short.text
    with Session(crm, future=True) as session:
        assert session.execute(select(StaffUser).where(StaffUser.username == "lin")).first() is None
    added = console.post("/staff", data={**form, "password": PASSWORD, "password_again": PASSWORD})
    assert added.status_code == 200
    assert "lin" in added.text
    other = second_client(console)
    assert other.post("/api/session", json={"username": "lin", "password": PASSWORD}).status_code == 200
    assert other.get("/api/session").json()["role"] == "librarian"
    assert staff_changes(crm) == [("staff:ada", "update", "console: staff account lin: added")]


def test_the_api_lists_staff_with_their_last_sign_in(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    signed_in(console, "ada")
    listed = {member["username"]: member for member in console.get("/api/staff").json()["staff"]}
    assert listed["ada"]["last_sign_in_at"] is not None
    assert (listed["lin"]["last_sign_in_at"], listed["lin"]["role"], listed["lin"]["active"]) == (
        None,
        "librarian",
        True,
    )


def test_deactivating_a_member_ends_their_session_at_once_and_reactivating_lets_them_back(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    lin = second_client(console)
    signed_in(lin, "lin")
    assert lin.get("/api/escalations").status_code == 200
    csrf = signed_in(console, "ada")
    answer = console.post(f"/api/staff/{staff_id(crm, 'lin')}/deactivate", headers={"X-CSRF-Token": csrf})
    assert (answer.status_code, answer.json()["active"]) == (200, False)
    assert lin.get("/api/escalations").status_code == 401
    assert lin.post("/api/session", json={"username": "lin", "password": PASSWORD}).status_code == 401
    console.post(f"/api/staff/{staff_id(crm, 'lin')}/activate", headers={"X-CSRF-Token": csrf})
    assert lin.post("/api/session", json={"username": "lin", "password": PASSWORD}).status_code == 200
    assert [reason for _, _, reason in staff_changes(crm)] == [
        "console: staff account lin: deactivated",
        "console: staff account lin: activated",
    ]


def test_deactivating_by_the_page_ends_their_session(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    lin = second_client(console)
    signed_in(lin, "lin")
    signed_in(console, "ada")
    done = console.post(
        f"/staff/{staff_id(crm, 'lin')}/deactivate",
        data={"csrf_token": page_csrf(console)},
        headers={"Accept-Language": "en"},
    )
    assert "Deactivated: their sessions have ended." in done.text
    assert lin.get("/api/escalations").status_code == 401


def test_an_admin_cannot_deactivate_themselves_or_remove_the_last_admin(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    headers = {"X-CSRF-Token": csrf}
    ada = staff_id(crm, "ada")
    themselves = console.post(f"/api/staff/{ada}/deactivate", headers=headers)
    assert themselves.status_code == 409
    assert "yourself" in themselves.json()["error"]
    demoted = console.post(f"/api/staff/{ada}/role", json={"role": "librarian"}, headers=headers)
    assert demoted.status_code == 409
    assert "last active admin" in demoted.json()["error"]
    assert console.get("/api/staff").status_code == 200  # still an admin
    staff(crm, "bo", "admin")
    bo = staff_id(crm, "bo")
    assert console.post(f"/api/staff/{bo}/deactivate", headers=headers).status_code == 200
    # bo no longer counts: ada is the last active admin again.
    assert (
        console.post(f"/api/staff/{ada}/role", json={"role": "librarian"}, headers=headers).status_code == 409
    )
    console.post(f"/api/staff/{bo}/activate", headers=headers)
    changed = console.post(f"/api/staff/{ada}/role", json={"role": "librarian"}, headers=headers)
    assert (changed.status_code, changed.json()["role"]) == (200, "librarian")
    assert console.get("/api/staff").status_code == 403
    assert console.post(f"/api/staff/{bo}/role", json={"role": "boss"}, headers=headers).status_code == 403


def test_the_page_offers_no_deactivation_of_oneself(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    signed_in(console, "ada")
    page = console.get("/staff").text
    assert f'action="/staff/{staff_id(crm, "lin")}/deactivate"' in page
    assert f'action="/staff/{staff_id(crm, "ada")}/deactivate"' not in page


def test_a_password_reset_takes_the_new_password_and_ends_their_sessions(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    lin = second_client(console)
    signed_in(lin, "lin")
    csrf = signed_in(console, "ada")
    target = staff_id(crm, "lin")
    short = console.post(
        f"/api/staff/{target}/password", json={"password": "short"}, headers={"X-CSRF-Token": csrf}
    )
    assert short.status_code == 400
    reset = console.post(
        f"/api/staff/{target}/password", json={"password": NEW_PASSWORD}, headers={"X-CSRF-Token": csrf}
    )
    assert reset.status_code == 200
    assert lin.get("/api/escalations").status_code == 401
    assert lin.post("/api/session", json={"username": "lin", "password": PASSWORD}).status_code == 401
    assert lin.post("/api/session", json={"username": "lin", "password": NEW_PASSWORD}).status_code == 200
    # Resetting one's own password by the page keeps the session it was done in.
    own = console.post(
        f"/staff/{staff_id(crm, 'ada')}/password",
        data={"csrf_token": csrf, "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
        follow_redirects=False,
    )
    assert own.headers["location"] == "/staff?staff_done=password"
    assert console.get("/api/staff").status_code == 200
    assert staff_changes(crm)[-2:] == [
        ("staff:ada", "update", "console: staff account lin: password reset"),
        ("staff:ada", "update", "console: staff account ada: password reset"),
    ]


def test_a_librarian_reaches_no_staff_page_or_api(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    staff(crm, "lin", "librarian")
    csrf = signed_in(console, "lin")
    ada = staff_id(crm, "ada")
    headers = {"X-CSRF-Token": csrf}
    answers = [
        console.get("/staff"),
        console.post("/staff", data={"csrf_token": csrf, "username": "x", "role": "admin"}),
        console.post(f"/staff/{ada}/deactivate", data={"csrf_token": csrf}),
        console.get("/api/staff"),
        console.post(
            "/api/staff", json={"username": "x", "role": "admin", "password": PASSWORD}, headers=headers
        ),
        console.post(f"/api/staff/{ada}/deactivate", headers=headers),
        console.post(f"/api/staff/{ada}/role", json={"role": "librarian"}, headers=headers),
        console.post(f"/api/staff/{ada}/password", json={"password": PASSWORD}, headers=headers),
    ]
    assert [answer.status_code for answer in answers] == [403] * len(answers)
    assert 'href="/staff"' not in console.get("/").text
    assert staff_changes(crm) == []


def test_staff_names_are_shown_as_text_and_the_nav_links_the_page_for_admins(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    name = "<script>alert(1)</script>"
    shown = "<img src=x onerror=alert(2)>"
    added = console.post(
        "/api/staff",
        json={"username": name, "role": "librarian", "password": PASSWORD, "display_name": shown},
        headers={"X-CSRF-Token": csrf},
    )
    assert added.status_code == 200
    taken = console.post(
        "/api/staff",
        json={"username": name, "role": "admin", "password": PASSWORD},
        headers={"X-CSRF-Token": csrf},
    )
    assert taken.status_code == 409
    page = console.get("/staff").text
    assert name not in page
    assert shown not in page
    assert str(escape(name)) in page
    assert str(escape(shown)) in page
    assert 'href="/staff" aria-current="page"' in page


def test_a_name_with_a_space_or_control_character_is_refused_with_the_rule(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    bodies = [
        {"username": "li wei", "role": "librarian", "password": PASSWORD},
        {"username": "lin\x00", "role": "librarian", "password": PASSWORD},
        {"username": "li\x1cn", "role": "librarian", "password": PASSWORD},
        {"username": "lin", "role": "librarian", "password": PASSWORD, "display_name": "Lin\x00"},
        {"username": "lin", "role": "boss", "password": PASSWORD},
    ]
    answers = [console.post("/api/staff", json=body, headers={"X-CSRF-Token": csrf}) for body in bodies]
    assert [answer.status_code for answer in answers] == [400] * len(bodies)
    assert "without spaces" in answers[0].json()["error"]
    with Session(crm, future=True) as session:
        assert session.execute(select(StaffUser.username)).scalars().all() == ["ada"]
