"""NUL in a console request (PostgreSQL cannot store it) is a 400 before any handler runs, on the API and
the pages, and nothing is written; a JSON text that only spells the escape is still accepted."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from bot.crm.database import session_scope
from bot.crm.models import Campaign, Segment
from console.nul_guard import PROBLEM, body_holds_nul
from tests.console_helpers import signed_in, staff


@pytest.mark.parametrize(
    ("content_type", "body", "holds"),
    [
        ("application/json", b'{"segment": "\\u0000"}', True),
        ("application/json", b'{"a": ["x", {"b\\u0000": 1}]}', True),
        ("application/json", b'{"text": "\\\\u0000 is how JSON spells it"}', False),
        ("application/json", b'{"text": "\\u0000', False),  # not JSON: the handler says so
        ("application/json; charset=utf-8", b'{"text": "ok"}', False),
        ("application/x-www-form-urlencoded", b"name=a%00b", True),
        ("application/x-www-form-urlencoded", b"name=a%2500b", False),
        ("application/x-www-form-urlencoded", b"name=a+b", False),
        ("text/plain", b"a\x00b", True),
    ],
)
def test_a_body_holds_nul_only_once_decoded(content_type: str, body: bytes, holds: bool) -> None:
    assert body_holds_nul(content_type, body) is holds


def counts(crm: Engine) -> tuple[int, int]:
    with session_scope(crm) as session:
        return (
            session.scalar(select(func.count()).select_from(Segment)) or 0,
            session.scalar(select(func.count()).select_from(Campaign)) or 0,
        )


def test_a_campaign_naming_a_nul_segment_is_400_and_nothing_is_saved(
    console: TestClient, crm: Engine
) -> None:
    """Schemathesis found this one: the segment lookup sent NUL to PostgreSQL and answered 500."""
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    body = {"message": {"en": "0"}, "name": "渠道", "segment": "\x00", "purpose": "follow_up"}
    answer = console.post("/api/campaigns", json=body, headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 400
    assert answer.json() == {"error": PROBLEM}
    segment = {"name": "every\x00one", "rules": {}}
    assert console.post("/api/segments", json=segment, headers={"X-CSRF-Token": csrf}).status_code == 400
    assert counts(crm) == (0, 0)


def test_a_form_or_query_with_nul_is_400_in_plain_words(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    form = {"csrf_token": csrf, "name": "a\x00", "do": "save"}
    answer = console.post("/segments/form", data=form)
    assert answer.status_code == 400
    assert answer.text == PROBLEM
    assert console.get("/audit", params={"staff": "a\x00"}).status_code == 400
    assert counts(crm) == (0, 0)


def test_the_same_requests_without_nul_still_work(console: TestClient, crm: Engine) -> None:
    staff(crm, "ada", "admin")
    csrf = signed_in(console, "ada")
    segment = {"name": "everyone", "rules": {}}
    assert console.post("/api/segments", json=segment, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert console.get("/audit", params={"staff": "\\u0000"}).status_code == 200
    assert counts(crm) == (1, 0)
