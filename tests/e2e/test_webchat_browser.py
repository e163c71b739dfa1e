"""The web chat widget in real headless Chromium against a real `patronbot run`: both languages, a
button, a staff reply pushed to the open widget, the CRM rows, keyboard-only use and axe-core.

Screenshots and the axe report go to var/test-artefacts/webchat/ (git-ignored)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from bot.crm.database import make_engine, session_scope
from bot.crm.models import ChannelIdentity, DeliveryAttempt, Interaction, OutboxMessage
from bot.language import detect_language
from bot.outbound.outbox import send
from bot.settings import PROJECT_ROOT
from tests.browser import NEEDS_CHROMIUM, chromium, focus_by_tab, serious
from tests.e2e.conftest import RunningBot
from tests.e2e.test_patron_flows import eventually, query
from tests.e2e.test_rest_conversation import FACTS, response_text

ARTEFACTS = PROJECT_ROOT / "var" / "test-artefacts" / "webchat"
DEMO_SOURCE = "webchat-demo-page"  # the demo page's data-source
REPLY_TIMEOUT = 60_000  # ms: the first turns of a freshly started bot are slow on 2 shared cores

pytestmark = [
    pytest.mark.rasa,
    NEEDS_CHROMIUM,
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(ARTEFACTS) as launched:
        yield launched


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    yield opened
    context.close()


def demo_url(bot: RunningBot) -> str:
    return bot.webhook.removesuffix("/rest/webhook") + "/webchat/"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"))


def bot_texts(page: Page) -> list[str]:
    return [text.strip() for text in page.locator(".rw-from-response .rw-message-text").all_inner_texts()]


def wait_for_reply(page: Page, count_before: int) -> list[str]:
    """The bot's messages once one more than `count_before` is on the page."""
    expect(page.locator(".rw-from-response .rw-message-text")).to_have_count(
        count_before + 1, timeout=REPLY_TIMEOUT
    )
    page.wait_for_timeout(300)  # the rest of the turn's messages, if it sent several
    return bot_texts(page)


def ask(page: Page, text: str) -> list[str]:
    """Type `text`, press Enter, and return the bot's new messages."""
    before = len(bot_texts(page))
    page.locator(".rw-new-message").fill(text)
    page.keyboard.press("Enter")
    return wait_for_reply(page, before)[before:]


def session_id(page: Page) -> str:
    stored = page.evaluate("window.localStorage.getItem('chat_session')")
    return str(json.loads(stored)["session_id"])


def open_widget(page: Page, bot: RunningBot) -> None:
    page.goto(demo_url(bot))
    page.locator("button.rw-launcher").click(timeout=REPLY_TIMEOUT)
    wait_for_reply(page, 0)  # the greeting (the widget's initPayload)


def test_a_patron_asks_in_both_languages_taps_a_button_and_gets_a_staff_reply(
    running_bot: RunningBot, page: Page
) -> None:
    open_widget(page, running_bot)
    shot(page, "1-opened")

    chinese = ask(page, "图书馆几点开门？")
    assert any(FACTS.weekly["monday"].span() in text for text in chinese), chinese
    assert detect_language(chinese[0]) == "zh"
    english = ask(page, "When do you open on Saturday?")
    assert any(FACTS.weekly["saturday"].span() in text and "Saturday" in text for text in english), english
    shot(page, "2-both-languages")

    assert ask(page, "I want to give feedback") == [response_text("utter_ask_csat", "en")]
    replies = page.locator(".rw-reply")
    expect(replies).to_have_count(5)
    before = len(bot_texts(page))
    replies.nth(1).click()  # "2"
    assert wait_for_reply(page, before)[before:] == [response_text("utter_ask_comment", "en")]
    shot(page, "3-button-tapped")

    # A librarian's reply, recorded as `patronbot escalations reply` records it, reaches the open widget.
    sender = "webchat:" + session_id(page).split(".")[0]
    external_id = sender.removeprefix("webchat:")
    [identity] = eventually(
        lambda: query(running_bot, select(ChannelIdentity).where(ChannelIdentity.external_id == external_id))
    )
    assert (identity.channel, identity.source) == ("webchat", DEMO_SOURCE)
    engine = make_engine(running_bot.crm_url)
    try:
        with session_scope(engine) as session:
            outbox_id = send(
                session=session,
                channel="webchat",
                recipient=sender,
                text="您好，我是馆员小林 / Hello, Lin from the library here.",
                produced_by="staff:lin",
                patron_id=identity.patron_id,
            )
    finally:
        engine.dispose()
    before = len(bot_texts(page))
    assert wait_for_reply(page, before)[before:] == ["您好，我是馆员小林 / Hello, Lin from the library here."]
    shot(page, "4-staff-reply")
    delivered = select(OutboxMessage.status).where(OutboxMessage.id == outbox_id)
    eventually(lambda: query(running_bot, delivered) == ["delivered"])
    outcomes = query(
        running_bot, select(DeliveryAttempt.outcome).where(DeliveryAttempt.outbox_id == outbox_id)
    )
    assert outcomes == ["sent"]

    # The CRM holds the conversation, on the webchat channel, in both languages.
    asked = {"图书馆几点开门？", "When do you open on Saturday?"}
    incoming = (
        select(Interaction)
        .where(Interaction.patron_id == identity.patron_id, Interaction.direction == "in")
        .order_by(Interaction.occurred_at, Interaction.id)
    )
    rows = eventually(
        lambda: (found := query(running_bot, incoming)) and asked <= {r.text for r in found} and found
    )
    said = [(row.text, row.intent, row.language, row.channel) for row in rows]
    assert ("图书馆几点开门？", "ask_hours", "zh", "webchat") in said
    assert ("When do you open on Saturday?", "ask_hours", "en", "webchat") in said

    # The browser comes back: the server confirms the id it gave, and the conversation goes on.
    kept = session_id(page)
    page.reload()
    expect(page.locator("button.rw-launcher")).to_be_visible(timeout=REPLY_TIMEOUT)
    page.wait_for_function("() => window.localStorage.getItem('chat_session') !== null")
    assert session_id(page) == kept


def test_a_forged_session_id_in_the_browser_gets_a_new_one(running_bot: RunningBot, page: Page) -> None:
    page.goto(demo_url(running_bot))
    expect(page.locator("button.rw-launcher")).to_be_visible(timeout=REPLY_TIMEOUT)
    issued = session_id(page)
    forged = issued.split(".")[0][::-1] + "." + issued.split(".")[1]
    page.evaluate(
        """forged => {
            const stored = JSON.parse(window.localStorage.getItem('chat_session'));
            stored.session_id = forged;
            window.localStorage.setItem('chat_session', JSON.stringify(stored));
        }""",
        forged,
    )
    page.reload()
    page.wait_for_function(
        "forged => JSON.parse(window.localStorage.getItem('chat_session') || '{}').session_id !== forged",
        arg=forged,
        timeout=REPLY_TIMEOUT,
    )
    assert session_id(page) not in {forged, issued}


def test_the_widget_works_with_the_keyboard_alone_and_passes_axe(running_bot: RunningBot, page: Page) -> None:
    page.goto(demo_url(running_bot))
    expect(page.locator("button.rw-launcher")).to_be_visible(timeout=REPLY_TIMEOUT)
    closed = Axe().run(page).response["violations"]

    focus_by_tab(page, "button.rw-launcher")
    page.keyboard.press("Enter")  # open
    expect(page.locator(".rw-new-message")).to_be_visible()
    # Opening took the focus into the window, to the message field.
    expect(page.locator(".rw-new-message")).to_be_focused()
    wait_for_reply(page, 0)
    focus_by_tab(page, ".rw-new-message")
    page.keyboard.type("I want to give feedback")
    page.keyboard.press("Enter")  # send
    expect(page.locator(".rw-reply")).to_have_count(5, timeout=REPLY_TIMEOUT)
    shot(page, "5-keyboard-buttons")

    opened = Axe().run(page).response["violations"]
    (ARTEFACTS / "axe.json").write_text(
        json.dumps({"widget_closed": closed, "widget_open": opened}, indent=2, ensure_ascii=False),
        encoding="utf-8",
    )
    assert serious(closed) == []
    assert serious(opened) == []

    focus_by_tab(page, ".rw-reply")
    assert page.evaluate("document.activeElement.textContent") == "1"
    page.keyboard.press("Tab")
    before = len(bot_texts(page))
    page.keyboard.press("Enter")  # choose "2"
    assert wait_for_reply(page, before)[before:] == [response_text("utter_ask_comment", "en")]
    shot(page, "6-keyboard-chosen")

    # Escape closes the window, and the focus goes back to the launcher.
    focus_by_tab(page, ".rw-new-message")
    page.keyboard.press("Escape")
    expect(page.locator(".rw-conversation-container")).to_have_count(0)
    expect(page.locator("button.rw-launcher")).to_be_focused()
    assert page.locator("button.rw-launcher").get_attribute("aria-expanded") == "false"
