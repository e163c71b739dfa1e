"""The knowledge base editor in the console: librarians list, filter, add, edit, retire and restore
entries; the second of two librarians saving one entry is told and loses nothing; a refused edit leaves
the file as it was; a question tried runs the bot's live retrieval (the real models, once); proposals
from an escalation are reviewed before they reach the bot; everything written is shown as text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from bot.crm.models import AuditLog, KnowledgeProposal
from bot.knowledge.entries import load_entries
from bot.settings import PROJECT_ROOT, Settings
from console.app import create_app
from tests.console_helpers import escalated_patron, signed_in, staff
from tests.test_knowledge_editing import small_models

XSS = "<script>alert('kb')</script>"


def kb_of(client: TestClient) -> Path:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    path: Path = settings.path(settings.knowledge_base)
    return path


@pytest.fixture
def librarian(console: TestClient, crm: Engine, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Signed in as a librarian (small stand-in models for the retrieval); the CSRF header."""
    small_models(monkeypatch)
    assert kb_of(console) != PROJECT_ROOT / "knowledge" / "faq.yml"
    staff(crm, "lin", "librarian")
    return {"X-CSRF-Token": signed_in(console, "lin")}


def entry(client: TestClient, entry_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/knowledge/{entry_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def form_of(found: dict[str, Any], csrf: str, **changes: str) -> dict[str, str]:
    """The edit form's fields for an entry as the API gives it, with `changes` (field name: value)."""
    fields = {"csrf_token": csrf, "version": found["version"], "topic": found["topic"] or ""}
    for lang in ("zh", "en"):
        block = found.get(lang) or {"question": "", "alternatives": [], "answer": ""}
        fields |= {
            f"{lang}_question": block["question"],
            f"{lang}_alternatives": "\n".join(block["alternatives"]),
            f"{lang}_answer": block["answer"],
        }
    return fields | changes


def test_a_librarian_lists_filters_and_finds_retired_entries_apart(
    console: TestClient, librarian: dict[str, str]
) -> None:
    page = console.get("/knowledge")
    assert page.status_code == 200
    assert 'href="/knowledge" aria-current="page"' in page.text
    assert "card-registration" in page.text
    found = console.get("/knowledge", params={"q": "CAMPUS CARD", "topic": "card_account"}).text
    assert "lost-card" in found
    assert "opening-hours" not in found
    assert [e["id"] for e in console.get("/api/knowledge", params={"q": "zzzz-none"}).json()["entries"]] == []
    assert console.get("/api/knowledge", params={"topic": "gossip"}).status_code == 400
    retired = console.post("/api/knowledge/lost-card/retire", headers=librarian)
    assert retired.json()["retired"] is True
    page = console.get("/knowledge").text
    in_use, retired_part = page.split('id="kb-retired-heading"')
    assert 'href="/knowledge/lost-card"' not in in_use
    assert 'href="/knowledge/lost-card"' in retired_part
    assert (
        console.get("/knowledge/lost-card").text.count("Restore")
        + console.get("/knowledge/lost-card").text.count("恢复使用")
        == 1
    )
    assert console.post("/api/knowledge/lost-card/restore", headers=librarian).json()["retired"] is False


def test_the_second_of_two_librarians_saving_one_entry_is_told_and_keeps_their_text(
    console: TestClient, crm: Engine, crm_url: str, librarian: dict[str, str]
) -> None:
    staff(crm, "wu", "librarian")
    settings = console.app.state.settings  # type: ignore[attr-defined]
    with TestClient(create_app(settings=settings, engine=crm), base_url="http://console.test") as other:
        other_csrf = signed_in(other, "wu")
        loaded = entry(console, "lost-card")
        their_form = form_of(entry(other, "lost-card"), other_csrf, en_answer="Wu's answer: call us.")
        first = {**loaded, "en": {**loaded["en"], "answer": "Lin's answer: report it online."}}
        saved = console.put("/api/knowledge/lost-card", headers=librarian, json=first)
        assert saved.status_code == 200, saved.text
        # The API: 409 with the entry as it is now; nothing written.
        stale = other.put(
            "/api/knowledge/lost-card",
            headers={"X-CSRF-Token": other_csrf},
            json={**first, "en": {**loaded["en"], "answer": "Wu's answer: call us."}},
        )
        assert stale.status_code == 409
        assert stale.json()["current"]["en"]["answer"] == "Lin's answer: report it online."
        assert stale.json()["version"] == saved.json()["version"]
        # The page: Wu sees Lin's version beside the text Wu typed, which is kept in the form.
        page = other.post("/knowledge/lost-card", data=their_form)
        assert page.status_code == 409
        assert "Lin&#39;s answer: report it online." in page.text
        assert "Wu&#39;s answer: call us." in page.text
        assert f'name="version" value="{saved.json()["version"]}"' in page.text
        text = kb_of(console).read_text(encoding="utf-8")
        assert "Lin's answer: report it online." in text
        assert "Wu's answer" not in text
        # Saving again (the form now carries the saved version) applies Wu's text over Lin's.
        again = other.post("/knowledge/lost-card", data={**their_form, "version": saved.json()["version"]})
        assert again.status_code == 200
        assert "Wu's answer: call us." in kb_of(console).read_text(encoding="utf-8")


def test_an_invalid_edit_is_refused_and_the_file_is_byte_identical(
    console: TestClient, librarian: dict[str, str]
) -> None:
    before = kb_of(console).read_bytes()
    loaded = entry(console, "lost-card")
    too_long = {**loaded, "en": {**loaded["en"], "answer": "x" * 2001}}
    refused = console.put("/api/knowledge/lost-card", headers=librarian, json=too_long)
    assert refused.status_code == 400
    assert "at most 2000" in refused.json()["error"]
    page = console.post(
        "/knowledge/lost-card",
        data=form_of(loaded, librarian["X-CSRF-Token"], topic="gossip", zh_answer="我的答案"),
    )
    assert page.status_code == 400
    assert "topic must be one of" in page.text
    assert "我的答案" in page.text  # what was typed is shown back
    assert console.post("/api/knowledge", headers=librarian, json={"id": "Bad Id"}).status_code == 400
    duplicate = {"id": "lost-card", "en": {"question": "q", "answer": "a"}}
    assert console.post("/api/knowledge", headers=librarian, json=duplicate).status_code == 409
    assert kb_of(console).read_bytes() == before
    for odd in ("NOPE", "no-such-entry", "-x", "a" * 65, "try", "new"):
        assert console.get(f"/api/knowledge/{odd}").status_code == 404, odd
    assert console.get("/knowledge/no-such-entry").status_code == 404
    assert console.put("/api/knowledge/lost-card", json=loaded).status_code == 403  # no CSRF token


def test_a_new_entry_is_published_to_the_bot_and_the_new_form_takes_its_prefill(
    console: TestClient, librarian: dict[str, str]
) -> None:
    prefilled = console.get(
        "/knowledge/new",
        params=[
            ("lang", "en"),
            ("question", "Can I bring my dog?"),
            ("alternative", "dogs"),
            ("alternative", "pets"),
        ],
    )
    assert prefilled.status_code == 200
    assert 'value="Can I bring my dog?"' in prefilled.text
    assert ">dogs\npets</textarea>" in prefilled.text
    knowledge = console.app.state.knowledge  # type: ignore[attr-defined]
    knowledge.retriever()  # the bot's retrieval, built before the new entry exists
    made = console.post(
        "/knowledge/new",
        data={
            "csrf_token": librarian["X-CSRF-Token"],
            "id": "pets",
            "topic": "spaces",
            "en_question": "Can I bring my dog?",
            "en_alternatives": "dogs\npets",
            "en_answer": "Only assistance dogs are allowed in the library.",
        },
    )
    assert made.status_code == 200
    assert "/knowledge/pets" in made.text
    [hit, *_] = knowledge.retriever().search("Can I bring my dog?", lang="en", k=3)
    assert (hit.entry.id, hit.entry.answer) == ("pets", "Only assistance dogs are allowed in the library.")
    assert "pets" in {e.id for e in load_entries(kb_of(console))}


def test_retiring_stops_the_bots_retrieval_using_the_entry_and_restoring_brings_it_back(
    console: TestClient, librarian: dict[str, str]
) -> None:
    knowledge = console.app.state.knowledge  # type: ignore[attr-defined]
    question = "What should I do if I lose my campus card?"
    assert knowledge.retriever().search(question, lang="en", k=3)[0].entry.id == "lost-card"
    token = librarian["X-CSRF-Token"]
    assert console.post("/knowledge/lost-card/retire", data={"csrf_token": token}).status_code == 200
    assert "lost-card" not in {hit.entry.id for hit in knowledge.retriever().search(question, lang="en", k=5)}
    assert console.post("/knowledge/lost-card/restore", data={"csrf_token": token}).status_code == 200
    assert knowledge.retriever().search(question, lang="en", k=3)[0].entry.id == "lost-card"


def test_every_edit_is_in_the_audit_log_with_who_and_which_entry(
    console: TestClient, crm: Engine, librarian: dict[str, str]
) -> None:
    """The file names no author: the audit log says who created, edited, retired and restored what."""
    token = librarian["X-CSRF-Token"]
    made = {
        "id": "quiet-rooms",
        "topic": "spaces",
        "en": {"question": "Are there quiet rooms?", "alternatives": [], "answer": "Yes, on floor 3."},
    }
    assert console.post("/api/knowledge", json=made, headers=librarian).status_code == 201
    found = entry(console, "quiet-rooms")
    edit = {**made, "version": found["version"], "en": {**made["en"], "answer": "Yes, on floor 4."}}
    saved = console.put("/api/knowledge/quiet-rooms", json=edit, headers=librarian)
    assert saved.status_code == 200, saved.text
    assert console.post("/api/knowledge/quiet-rooms/retire", headers=librarian).status_code == 200
    assert console.post("/knowledge/quiet-rooms/restore", data={"csrf_token": token}).status_code == 200
    stale = console.put("/api/knowledge/quiet-rooms", json=edit, headers=librarian)
    assert stale.status_code == 409  # refused: not an edit, not in the log
    with Session(crm, future=True) as session:
        rows = session.execute(
            select(AuditLog.actor, AuditLog.action, AuditLog.patron_id, AuditLog.reason, AuditLog.detail)
            .where(AuditLog.reason.like("console: knowledge base%"))
            .order_by(AuditLog.id)
        ).all()
    assert [(actor, action, patron, reason) for actor, action, patron, reason, _ in rows] == [
        ("staff:lin", "update", None, f"console: knowledge base entry quiet-rooms: {change}")
        for change in ("created", "edited", "retired", "restored")
    ]
    assert rows[1].detail["version"] == saved.json()["version"]


def _proposals(crm: Engine) -> list[KnowledgeProposal]:
    with Session(crm, future=True) as session:
        return list(session.execute(select(KnowledgeProposal).order_by(KnowledgeProposal.id)).scalars())


def test_a_reply_proposed_from_an_escalation_is_reviewed_before_the_bot_uses_it(
    console: TestClient, crm: Engine, librarian: dict[str, str]
) -> None:
    patron, escalation = escalated_patron(crm, words=f"{XSS} my card is gone")
    page = console.get(f"/escalations/{escalation}").text
    assert f'action="/escalations/{escalation}/propose"' in page
    assert "&lt;script&gt;alert(&#39;kb&#39;)&lt;/script&gt; my card is gone</textarea>" in page  # pre-filled
    token = librarian["X-CSRF-Token"]
    proposed = console.post(
        f"/escalations/{escalation}/propose",
        data={"csrf_token": token, "question": "my card is gone", "entry_id": "lost-card", "lang": ""},
    )
    assert "kb-propose" in str(proposed.url)
    console.post(
        f"/escalations/{escalation}/propose",
        data={"csrf_token": token, "question": XSS, "answer": f"{XSS} answer", "lang": "en"},
    )
    alternative, new_entry = _proposals(crm)
    assert (alternative.kind, alternative.lang, alternative.patron_id, alternative.source) == (
        "alternative",
        "en",
        patron,
        f"escalation:{escalation}",
    )
    assert (new_entry.kind, new_entry.entry_id) == ("entry", None)
    assert "my card is gone" not in kb_of(console).read_text(encoding="utf-8")  # not before review
    review = console.get("/knowledge/proposals").text
    assert XSS not in review
    assert "&lt;script&gt;alert(&#39;kb&#39;)&lt;/script&gt; answer" in review
    with Session(crm, future=True) as session:
        reasons = session.execute(select(AuditLog.reason).where(AuditLog.patron_id == patron)).scalars().all()
    assert "console: knowledge base proposals" in reasons
    accepted = console.post(f"/knowledge/proposals/{alternative.id}/accept", data={"csrf_token": token})
    assert accepted.status_code == 200
    lost = [e for e in load_entries(kb_of(console)) if e.id == "lost-card" and e.lang == "en"]
    assert "my card is gone" in lost[0].alternatives
    console.post(f"/knowledge/proposals/{new_entry.id}/reject", data={"csrf_token": token})
    assert [(p.status, p.reviewed_by is not None) for p in _proposals(crm)] == [
        ("accepted", True),
        ("rejected", True),
    ]
    assert (
        console.post(f"/api/knowledge/proposals/{new_entry.id}/accept", headers=librarian).status_code == 409
    )
    assert XSS not in kb_of(console).read_text(encoding="utf-8")


def test_the_proposals_api_makes_an_entry_from_a_reviewed_proposal(
    console: TestClient, crm: Engine, librarian: dict[str, str]
) -> None:
    _, escalation = escalated_patron(crm)
    body = {"kind": "entry", "lang": "en", "question": "Is there a nap room?", "escalation_id": escalation}
    assert (
        console.post("/api/knowledge/proposals", headers=librarian, json=body).status_code == 400
    )  # no answer
    made = console.post(
        "/api/knowledge/proposals", headers=librarian, json={**body, "answer": "No, but there are sofas."}
    )
    assert made.status_code == 201
    assert made.json()["proposed_by"] == "lin"
    missing = {**body, "answer": "x", "escalation_id": 999}
    assert console.post("/api/knowledge/proposals", headers=librarian, json=missing).status_code == 404
    [pending] = console.get("/api/knowledge/proposals").json()["proposals"]
    accept = f"/api/knowledge/proposals/{pending['id']}/accept"
    assert console.post(accept, headers=librarian).status_code == 409  # the new entry needs an id
    done = console.post(accept, headers=librarian, json={"id": "nap-room", "topic": "spaces"})
    assert done.status_code == 200, done.text
    assert done.json()["proposal"]["reviewed_by"] == "lin"
    assert done.json()["entry"]["en"]["answer"] == "No, but there are sofas."
    assert console.get("/api/knowledge/proposals").json()["proposals"] == []
    assert entry(console, "nap-room")["topic"] == "spaces"


def test_entry_texts_are_shown_as_text(console: TestClient, librarian: dict[str, str]) -> None:
    created = console.post(
        "/api/knowledge",
        headers=librarian,
        json={"id": "xss", "zh": {"question": XSS, "answer": f"答 {XSS}", "alternatives": [XSS]}},
    )
    assert created.status_code == 201, created.text
    for address in ("/knowledge", "/knowledge/xss", "/knowledge?q=script"):
        page = console.get(address).text
        assert XSS not in page, address
        assert "&lt;script&gt;" in page, address


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kb-vectors")


@pytest.fixture
def real_console(crm: Engine, crm_url: str, tmp_path: Path, vectors: Path) -> Iterator[TestClient]:
    """The console with the real models on a copy of the knowledge base."""
    copy = tmp_path / "faq.yml"
    copy.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=crm_url, knowledge_base=copy, vector_dir=vectors
    )
    with TestClient(create_app(settings=settings, engine=crm), base_url="http://console.test") as client:
        yield client


def test_trying_a_question_shows_the_live_decision_and_an_edit_changes_the_bots_answer(
    real_console: TestClient, crm: Engine
) -> None:
    staff(crm, "lin", "librarian")
    csrf = {"X-CSRF-Token": signed_in(real_console, "lin")}
    tried = real_console.post(
        "/api/knowledge/try", headers=csrf, json={"text": "I lost my campus card", "lang": "en"}
    )
    assert tried.status_code == 200, tried.text
    assert tried.json()["decision"] == "answer"
    assert tried.json()["matches"][0]["id"] == "lost-card"
    page = real_console.get("/knowledge", params={"ask": "校园卡丢了", "ask_lang": "zh"}).text
    assert 'href="/knowledge/lost-card"' in page.split('id="kb-entries-heading"')[0]
    loaded = entry(real_console, "lost-card")
    edit = {**loaded, "en": {**loaded["en"], "answer": "Report it in the campus card app now."}}
    assert real_console.put("/api/knowledge/lost-card", headers=csrf, json=edit).status_code == 200
    again = real_console.post(
        "/api/knowledge/try", headers=csrf, json={"text": "I lost my campus card", "lang": "en"}
    )
    assert again.json()["matches"][0]["answer"] == "Report it in the campus card app now."
    assert (
        real_console.post("/api/knowledge/try", headers=csrf, json={"text": "x", "lang": "fr"}).status_code
        == 400
    )
