"""The staff console's JSON API: sign-in and its limit, the session cookie, CSRF, the role matrix, the
inbox with its claim, reply, notes, transfer, resolve and give-back, patron reads audited."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

import console.app  # noqa: F401  (importing the app brings every feature's routes into PATHS)
from bot.crm.database import session_scope
from bot.crm.models import (
    AuditLog,
    Conversation,
    Escalation,
    LoginAttempt,
    OutboxMessage,
    StaffSession,
    utcnow,
)
from bot.engagement.inbox import AUDIT_REPEAT_WINDOW
from console.accounts import MAX_FAILURES_PER_ACCOUNT, StaffError, add_staff
from console.openapi import PATHS
from tests.console_helpers import PASSWORD, escalated_patron, signed_in, staff

# Every API route with a method, as the OpenAPI document lists them ({…} filled with 1).
API_CALLS = sorted(
    (method.upper(), re.sub(r"\{\w+\}", "1", path))
    for path, operations in PATHS.items()
    for method in operations
)


def audit_rows(crm: Engine, patron: int) -> list[tuple[str, str, str]]:
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.reason)
            .where(AuditLog.patron_id == patron)
            .order_by(AuditLog.id)
        ).all()
        return [(str(a), str(b), str(c)) for a, b, c in rows]


@pytest.mark.parametrize(("method", "path"), [call for call in API_CALLS if call != ("POST", "/api/session")])
def test_without_a_session_every_api_route_answers_401(console: TestClient, method: str, path: str) -> None:
    answer = console.request(method, path, json={"text": "x", "note": "x", "to": "x", "language": "en"})
    assert answer.status_code == 401
    assert answer.json() == {"error": "sign in first"}


def test_a_forged_or_expired_cookie_is_no_session(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    signed_in(console, "lin")
    console.cookies.set("patronbot_console", "forged-token")
    assert console.get("/api/escalations").status_code == 401


def test_signing_in_sets_an_httponly_samesite_cookie_and_answers_the_csrf_token(
    console: TestClient,
    crm: Engine,
) -> None:
    staff(crm, "lin", "librarian")
    answer = console.post("/api/session", json={"username": "lin", "password": PASSWORD})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert re.search(r"patronbot_console=[\w-]{40,};", cookie)
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; PATRONBOT_CONSOLE_SECURE_COOKIES or HTTPS adds it
    body = answer.json()
    assert (body["username"], body["role"], len(body["csrf_token"]) >= 40) == ("lin", "librarian", True)
    assert console.get("/api/session").json()["csrf_token"] == body["csrf_token"]
    with Session(crm, future=True) as session:
        [stored] = session.execute(select(StaffSession.token_hash)).scalars().all()
    assert stored not in cookie  # only the token's hash is kept


@pytest.mark.parametrize(
    "body",
    [{"username": "lin", "password": "wrong password"}, {"username": "nobody", "password": PASSWORD}],
)
def test_a_wrong_name_or_password_is_refused_alike(
    console: TestClient,
    crm: Engine,
    body: dict[str, str],
) -> None:
    staff(crm, "lin", "librarian")
    answer = console.post("/api/session", json=body)
    assert (answer.status_code, answer.json()) == (401, {"error": "wrong username or password"})
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"username": 5, "password": "x"}', b'{"username": "a"}']
)
def test_a_body_that_is_not_a_sign_in_is_400(console: TestClient, body: bytes) -> None:
    answer = console.post("/api/session", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "error" in answer.json()


def test_failed_sign_ins_are_limited_per_account_even_with_the_right_password_then(
    console: TestClient,
    crm: Engine,
) -> None:
    staff(crm, "lin", "librarian")
    staff(crm, "ada", "admin")
    for _ in range(MAX_FAILURES_PER_ACCOUNT):
        assert (
            console.post("/api/session", json={"username": "lin", "password": "guess-guess"}).status_code
            == 401
        )
    limited = console.post("/api/session", json={"username": "lin", "password": PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    # Another account from the same address is not locked out by lin's failures (the address limit is higher).
    assert console.post("/api/session", json={"username": "ada", "password": PASSWORD}).status_code == 200
    with Session(crm, future=True) as session:
        recorded = session.execute(select(func.count()).select_from(LoginAttempt)).scalar_one()
    assert recorded == MAX_FAILURES_PER_ACCOUNT + 1  # the limited attempt never reached the password check


def test_unsafe_requests_need_the_sessions_csrf_token(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    token = signed_in(console, "lin")
    claim = f"/api/escalations/{escalation}/claim"
    assert console.post(claim).status_code == 403
    assert console.post(claim, headers={"X-CSRF-Token": token[:-1] + "x"}).status_code == 403
    other = TestClient(console.app, base_url="http://console.test")
    staff(crm, "ada", "admin")
    other_token = signed_in(other, "ada")
    assert console.post(claim, headers={"X-CSRF-Token": other_token}).status_code == 403  # not this session's
    with Session(crm, future=True) as session:
        assert session.get(Escalation, escalation).status == "open"  # type: ignore[union-attr]
    assert console.post(claim, headers={"X-CSRF-Token": token}).status_code == 200


def test_a_librarian_reaches_no_admin_route_and_an_admin_reaches_it(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    staff(crm, "ada", "admin")
    signed_in(console, "lin")
    assert console.get("/api/audit").status_code == 403
    assert console.get("/audit").status_code == 403
    assert console.get("/api/escalations").status_code == 200
    signed_in(console, "ada")
    assert console.get("/api/audit").status_code == 200
    assert console.get("/audit").status_code == 200


def test_the_inbox_lists_open_escalations_most_urgent_first_and_audits_the_messages_shown(
    console: TestClient,
    crm: Engine,
) -> None:
    staff(crm, "lin", "librarian")
    amy, normal = escalated_patron(crm, sender="telegram:1", words="Can a person help me?")
    bo, urgent = escalated_patron(crm, sender="wechat:oB", words="我的账户被锁了", priority="urgent")
    signed_in(console, "lin")
    listed = console.get("/api/escalations").json()["escalations"]
    assert [(e["id"], e["patron_id"], e["channel"], e["sender_id"], e["latest_message"]) for e in listed] == [
        (urgent, bo, "wechat", "wechat:oB", "我的账户被锁了"),
        (normal, amy, "telegram", "telegram:1", "Can a person help me?"),
    ]
    assert {"reason", "priority", "status", "due_at"} <= set(listed[0])
    assert audit_rows(crm, amy) == [("staff:lin", "read", "inbox: the patron's latest message")]
    # The open inbox refreshes every 3 s: the same librarian seeing Amy again within the window is not
    # logged again; another librarian's view is, and so is Lin's once the window has passed.
    console.get("/api/escalations")
    assert len(audit_rows(crm, amy)) == 1
    staff(crm, "mo", "librarian")
    signed_in(console, "mo")
    console.get("/api/escalations")
    assert [row[0] for row in audit_rows(crm, amy)] == ["staff:lin", "staff:mo"]
    with Session(crm, future=True) as session, session.begin():
        session.execute(update(AuditLog).values(at=utcnow() - AUDIT_REPEAT_WINDOW - dt.timedelta(minutes=1)))
    console.get("/api/escalations")
    assert [row[0] for row in audit_rows(crm, amy)] == ["staff:lin", "staff:mo", "staff:mo"]


def test_two_librarians_cannot_claim_the_same_escalation(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    staff(crm, "mei", "librarian")
    _, escalation = escalated_patron(crm)
    lin = signed_in(console, "lin")
    other = TestClient(console.app, base_url="http://console.test")
    mei = signed_in(other, "mei")
    first = console.post(f"/api/escalations/{escalation}/claim", headers={"X-CSRF-Token": lin})
    assert first.json() == {"id": escalation, "status": "assigned", "assignee": "lin", "resolved_at": None}
    second = other.post(f"/api/escalations/{escalation}/claim", headers={"X-CSRF-Token": mei})
    assert (second.status_code, second.json()) == (
        409,
        {"error": f"escalation {escalation} is already claimed by lin"},
    )
    # Claiming again is harmless for the holder; the holder may transfer it to mei.
    assert (
        console.post(f"/api/escalations/{escalation}/claim", headers={"X-CSRF-Token": lin}).status_code == 200
    )
    moved = console.post(
        f"/api/escalations/{escalation}/transfer", headers={"X-CSRF-Token": lin}, json={"to": "mei"}
    )
    assert moved.json()["assignee"] == "mei"
    refused = console.post(
        f"/api/escalations/{escalation}/transfer", headers={"X-CSRF-Token": lin}, json={"to": "lin"}
    )
    assert refused.status_code == 409


def test_reply_note_and_resolve_reach_the_patron_and_the_record(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    patron, escalation = escalated_patron(crm, sender="telegram:77")
    token = {"X-CSRF-Token": signed_in(console, "lin")}
    replied = console.post(
        f"/api/escalations/{escalation}/reply", headers=token, json={"text": "Your card is renewed."}
    )
    assert replied.status_code == 200
    assert (
        console.post(f"/api/escalations/{escalation}/reply", headers=token, json={"text": "  "}).status_code
        == 400
    )
    note = console.post(
        f"/api/escalations/{escalation}/notes", headers=token, json={"text": "renewed by hand"}
    )
    assert (note.json()["staff"], note.json()["text"]) == ("lin", "renewed by hand")
    shown = console.get(f"/api/escalations/{escalation}").json()
    assert [m["text"] for m in shown["messages"]][-2:] == ["I need a librarian", "Your card is renewed."]
    assert shown["messages"][0]["intent"] == "human_handoff"
    assert shown["notes"][0]["text"] == "renewed by hand"
    resolved = console.post(
        f"/api/escalations/{escalation}/resolve", headers=token, json={"note": "card renewed"}
    )
    assert resolved.json()["status"] == "resolved"
    again = console.post(f"/api/escalations/{escalation}/resolve", headers=token, json={})
    assert again.status_code == 409
    with Session(crm, future=True) as session:
        sent = session.execute(
            select(OutboxMessage.recipient, OutboxMessage.text, OutboxMessage.produced_by).order_by(
                OutboxMessage.id
            )
        ).all()
        conversation = session.execute(select(Conversation.status)).scalar_one()
    assert sent[0] == ("telegram:77", "Your card is renewed.", "staff:lin")
    assert sent[1][2] == "resolve_escalation"  # the patron is told the bot has them again
    assert conversation == "open"
    assert ("staff:lin", "read", f"answering escalation {escalation}") in audit_rows(crm, patron)
    assert console.get("/api/escalations/999").status_code == 404


def test_giving_back_to_the_bot_closes_the_escalation_and_tells_the_patron(
    console: TestClient,
    crm: Engine,
) -> None:
    staff(crm, "lin", "librarian")
    _, escalation = escalated_patron(crm)
    token = {"X-CSRF-Token": signed_in(console, "lin")}
    console.post(f"/api/escalations/{escalation}/claim", headers=token)
    back = console.post(f"/api/escalations/{escalation}/give-back", headers=token)
    assert back.json()["status"] == "resolved"
    with Session(crm, future=True) as session:
        note = session.execute(select(Escalation.resolution_note)).scalar_one()
        told = session.execute(select(OutboxMessage.produced_by)).scalars().all()
    assert (note, told) == ("given back to the bot", ["resolve_escalation"])
    assert console.get("/api/escalations").json()["escalations"] == []


def test_a_patron_profile_read_is_audited_and_an_unknown_patron_is_404(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    patron, _ = escalated_patron(crm, sender="telegram:55")
    signed_in(console, "lin")
    profile = console.get(f"/api/patrons/{patron}").json()
    assert (profile["patron_id"], profile["channels"], profile["display_name"]) == (
        patron,
        ["telegram:55"],
        "Amy",
    )
    assert audit_rows(crm, patron) == [("staff:lin", "read", "console: patron profile")]
    assert console.get("/api/patrons/999").status_code == 404


def test_the_audit_log_filters_by_staff_patron_and_action(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    staff(crm, "ada", "admin")
    amy, _ = escalated_patron(crm, sender="telegram:1")
    bo, _ = escalated_patron(crm, sender="telegram:2")
    signed_in(console, "lin")
    console.get(f"/api/patrons/{amy}")
    signed_in(console, "ada")
    console.get(f"/api/patrons/{bo}")
    entries = console.get("/api/audit", params={"staff": "lin", "action": "read"}).json()["entries"]
    assert [(e["staff"], e["patron_id"]) for e in entries] == [("lin", amy)]
    assert [e["patron_id"] for e in console.get("/api/audit", params={"patron": bo}).json()["entries"]] == [
        bo
    ]
    assert console.get("/api/audit", params={"action": "delete"}).status_code == 400
    assert console.get("/api/audit", params={"limit": "many"}).status_code == 400


def test_signing_out_ends_the_session(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    token = signed_in(console, "lin")
    cookie = console.cookies.get("patronbot_console")
    assert console.request("DELETE", "/api/session", headers={"X-CSRF-Token": token}).status_code == 200
    console.cookies.set("patronbot_console", str(cookie))  # the old cookie, replayed
    assert console.get("/api/escalations").status_code == 401


def test_a_deactivated_staff_member_is_signed_out_at_once(console: TestClient, crm: Engine) -> None:
    staff(crm, "lin", "librarian")
    signed_in(console, "lin")
    with session_scope(crm) as session:
        from bot.crm.models import StaffUser

        member = session.execute(select(StaffUser).where(StaffUser.username == "lin")).scalar_one()
        member.active = False
    assert console.get("/api/escalations").status_code == 401


@pytest.mark.parametrize(
    ("username", "role", "password", "message"),
    [
        ("lin", "librarian", "short", "at least 10 characters"),
        ("li n", "librarian", PASSWORD, "without spaces"),
        ("lin", "boss", PASSWORD, "role must be one of"),
    ],
)
def test_a_staff_account_that_cannot_be_made_is_refused(
    crm: Engine, username: str, role: str, password: str, message: str
) -> None:
    with pytest.raises(StaffError, match=message), session_scope(crm) as session:
        add_staff(session=session, username=username, role=role, password=password)


def test_the_console_answers_with_security_headers(console: TestClient) -> None:
    answer = console.get("/login")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_a_blank_name_is_400_but_a_blank_password_is_just_wrong(console: TestClient, crm: Engine) -> None:
    """The document's pattern for a name and the API agree on blank (\\x1f is blank to Python, not to
    ECMA's \\S, which schemathesis found); a password is never trimmed, so spaces are only a wrong one."""
    staff(crm, "lin", "librarian")
    assert console.post("/api/session", json={"username": "\x1f", "password": "x"}).status_code == 400
    assert console.post("/api/session", json={"username": "lin", "password": "\x1f "}).status_code == 401


def test_the_audit_filter_refuses_a_nul_character_instead_of_failing(
    console: TestClient, crm: Engine
) -> None:
    staff(crm, "ada", "admin")
    signed_in(console, "ada")
    answer = console.get("/api/audit", params={"staff": "a\x00b"})
    assert answer.status_code == 400
    assert "NUL" in answer.json()["error"]
