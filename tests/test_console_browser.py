"""The staff console in real headless Chromium (the system one): sign in, a new escalation appears in the
inbox without a reload, claim, reply and resolve with the keyboard alone, and axe-core on every page in
both languages finds nothing serious or critical.

Screenshots and the axe report go to var/test-artefacts/console/ (git-ignored)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import make_engine, session_scope
from bot.crm.migrate import upgrade
from bot.crm.models import Escalation, Feedback, OutboxMessage, StaffSession
from bot.settings import PROJECT_ROOT, Settings
from console.app import create_app
from tests.browser import NEEDS_CHROMIUM, chromium, focus_by_tab, serious
from tests.console_helpers import PASSWORD, escalated_patron, staff
from tests.test_report_answers import patron_with_report

ARTEFACTS = PROJECT_ROOT / "var" / "test-artefacts" / "console"

pytestmark = NEEDS_CHROMIUM


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """The console on a free port in a background thread, over a SQLite CRM of its own."""

    def __init__(self, folder: Path) -> None:
        url = f"sqlite:///{folder / 'crm.db'}"
        upgrade(url=url)
        self.engine: Engine = make_engine(url)
        kb = folder / "faq.yml"  # the editor writes it: a copy, never the repository's
        kb.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=url,
            knowledge_base=kb,
            # The knowledge base's vectors (suggested answers, "try a question"), encoded once for all tests.
            vector_dir=PROJECT_ROOT / ".test-models" / "vectors",
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.app = create_app(settings=settings, engine=self.engine)
        config = uvicorn.Config(self.app, port=port, log_level="warning", ws="none")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the console did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.engine.dispose()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(tmp_path)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(ARTEFACTS) as launched:
        yield launched


def new_page(browser: Browser, locale: str, width: int = 1280) -> Page:
    return browser.new_context(locale=locale, viewport={"width": width, "height": 900}).new_page()


def sign_in_with_keyboard(page: Page, served: Served, username: str) -> None:
    page.goto(f"{served.url}/")
    expect(page.locator("#username")).to_be_focused()  # the sign-in page put the focus there
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{served.url}/")


def test_a_librarian_works_the_inbox_with_the_keyboard_alone(browser: Browser, served: Served) -> None:
    staff(served.engine, "lin", "librarian")
    escalated_patron(served.engine, sender="telegram:101", words="Can I talk to a person?")
    page = new_page(browser, "en-GB")
    sign_in_with_keyboard(page, served, "lin")
    expect(page.locator("#inbox")).to_contain_text("Can I talk to a person?")
    page.screenshot(path=str(ARTEFACTS / "inbox-en.png"))

    # A new escalation arrives while the page is open: it appears without a reload.
    _, arrived = escalated_patron(served.engine, sender="wechat:oNew", words="书找不到了", priority="urgent")
    expect(page.locator("#inbox")).to_contain_text("书找不到了", timeout=15_000)
    first_row = page.locator("#inbox tbody tr").first
    expect(first_row).to_contain_text("urgent")  # the most urgent first

    focus_by_tab(page, f'a[href="/escalations/{arrived}"]')
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text(f"Escalation {arrived}")
    expect(page.locator("#transcript")).to_contain_text("书找不到了")

    focus_by_tab(page, 'form[action$="/claim"] button')
    page.keyboard.press("Enter")
    expect(page.locator("[role=status]")).to_have_text("Claimed: the conversation is yours.")
    focus_by_tab(page, "#reply-text")
    page.keyboard.type("我们帮您查一下。")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("[role=status]")).to_have_text("Reply sent to the patron.")
    expect(page.locator("#transcript")).to_contain_text("我们帮您查一下。", timeout=15_000)
    page.screenshot(path=str(ARTEFACTS / "escalation-en.png"), full_page=True)
    focus_by_tab(page, "#resolve-note")
    page.keyboard.type("found on the shelf")
    page.keyboard.press("Enter")
    expect(page.locator("[role=status]")).to_have_text("Resolved: the bot answers the patron again.")
    with Session(served.engine, future=True) as session:
        escalation = session.get(Escalation, arrived)
        sent = session.execute(select(OutboxMessage.recipient, OutboxMessage.text)).all()
    assert escalation is not None
    assert (escalation.status, escalation.resolution_note) == ("resolved", "found on the shelf")
    assert ("wechat:oNew", "我们帮您查一下。") in [tuple(row) for row in sent]


@pytest.mark.parametrize("language", ["zh", "en"])
def test_every_page_passes_axe_in_both_languages_and_fits_a_tablet(
    browser: Browser, served: Served, language: str
) -> None:
    staff(served.engine, "ada", "admin")
    patron, escalation = escalated_patron(served.engine)
    with session_scope(served.engine) as session:  # ratings, so the feedback page draws its charts
        session.add_all(
            [Feedback(csat=4, nps=9, topic="hours", rasa_sender_id="telegram:1"), Feedback(csat=2)]
        )
    patron_with_report(served.engine)  # a purchase request, so the suggestions page has its answer form
    page = new_page(browser, "zh-CN" if language == "zh" else "en-GB", width=820)  # a tablet, portrait
    page.goto(f"{served.url}/login?lang={language}")
    report: dict[str, Any] = {"login": Axe().run(page).response["violations"]}
    page.screenshot(path=str(ARTEFACTS / f"login-{language}.png"))
    page.fill("#username", "ada")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.select_option("#language-choice", language)
    page.click("#language-choice ~ button")
    # A segment and a campaign, so the campaign report page has one to show.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    segment = {"name": "everyone", "rules": {}}
    made = page.request.post(f"{served.url}/api/segments", data=json.dumps(segment), headers=headers)
    assert made.ok, made.text()
    message = {"name": "welcome", "segment": "everyone", "message": {"en": "Hello", "zh": "您好"}}
    made = page.request.post(f"{served.url}/api/campaigns", data=json.dumps(message), headers=headers)
    assert made.ok, made.text()
    campaign = made.json()["id"]
    pages = {
        "inbox": "/",
        "escalation": f"/escalations/{escalation}",
        "patron": f"/patrons/{patron}",
        "audit": "/audit",
        "feedback": "/feedback",
        "suggestions": "/suggestions",
        "unanswered": "/unanswered",
        "knowledge": "/knowledge",
        "knowledge-entry": "/knowledge/renew-online",
        "knowledge-new": "/knowledge/new?lang=en&question=Can%20I%20bring%20my%20dog%3F",
        "knowledge-proposals": "/knowledge/proposals",
        "segments": "/segments",
        "segment-new": "/segments/new",
        "campaigns": "/campaigns",
        "campaign-new": "/campaigns/new",
        "campaign-report": f"/campaigns/{campaign}",
        "staff": "/staff",
    }
    for name, path in pages.items():
        page.goto(f"{served.url}{path}")
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN" if language == "zh" else "en")
        report[name] = Axe().run(page).response["violations"]
        page.screenshot(path=str(ARTEFACTS / f"{name}-{language}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 820, f"{name} scrolls sideways on a tablet ({width}px)"
    (ARTEFACTS / f"axe-{language}.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    assert {name: serious(found) for name, found in report.items() if serious(found)} == {}


def test_a_reply_typed_when_the_session_ended_is_still_there_after_signing_in_again(
    browser: Browser, served: Served
) -> None:
    staff(served.engine, "lin", "librarian")
    _, escalation = escalated_patron(served.engine, sender="telegram:102", words="Is anyone there?")
    page = new_page(browser, "en-GB")
    sign_in_with_keyboard(page, served, "lin")
    page.goto(f"{served.url}/escalations/{escalation}")
    page.fill("#reply-text", "Sorry for the wait: your book is at the desk.")
    page.locator("#reply-text").dispatch_event("input")
    with session_scope(served.engine) as session:  # the session ends (expired, or signed out elsewhere)
        session.execute(delete(StaffSession))
    page.click('form[action$="/reply"] button')
    expect(page.locator("#username")).to_be_visible()
    page.fill("#username", "lin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{served.url}/escalations/{escalation}")
    expect(page.locator("#reply-text")).to_have_value("Sorry for the wait: your book is at the desk.")
    with Session(served.engine, future=True) as session:
        assert session.execute(select(OutboxMessage)).first() is None  # nothing was sent without a session
    page.click('form[action$="/reply"] button')
    expect(page.locator("[role=status]")).to_have_text("Reply sent to the patron.")
    page.reload()  # sent: the draft is spent, the box is empty again
    expect(page.locator("#reply-text")).to_have_value("")


def test_a_suggested_answer_goes_into_the_reply_with_the_keyboard(browser: Browser, served: Served) -> None:
    staff(served.engine, "lin", "librarian")
    _, escalation = escalated_patron(
        served.engine, sender="telegram:103", words="How do I renew my books online?"
    )
    # The models load and the knowledge base is encoded (minutes on a busy 2-core machine the first
    # time; cached on disk after) before the page: this test is about the keyboard, not that wait.
    served.app.state.knowledge.retriever()
    page = new_page(browser, "en-GB")
    sign_in_with_keyboard(page, served, "lin")
    page.goto(f"{served.url}/escalations/{escalation}")
    insert = page.locator("button[data-insert-reply]").first
    expect(insert).to_be_visible(timeout=120_000)
    suggested = page.locator(f"#{insert.get_attribute('data-insert-reply')}").inner_text().strip()
    assert "renew" in suggested.lower()
    focus_by_tab(page, "button[data-insert-reply]")
    page.keyboard.press("Enter")
    expect(page.locator("#reply-text")).to_have_value(suggested)
    expect(page.locator("#reply-text")).to_be_focused()
