"""The staff console end to end, in real headless Chromium, with a real `patronbot run` (Rasa, action server,
console) and a patron on Telegram through the fake Bot API: the patron asks for a librarian and appears in
the inbox without a reload; the librarian claims, the patron's next message reaches the librarian and the
bot stays silent; the reply reaches the fake Bot API; given back, the bot answers again; the patron's low
rating shows on the feedback page; a knowledge-base edit in the browser changes the running bot's answer.

Screenshots go to var/test-artefacts/console-e2e/ (git-ignored)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.models import Escalation, Feedback, Interaction
from bot.settings import PROJECT_ROOT
from tests.browser import NEEDS_CHROMIUM, chromium
from tests.console_helpers import PASSWORD, staff
from tests.e2e.conftest import RunningBot, start_bot, stop_bot
from tests.e2e.test_telegram import TOKEN, deliver, telegram_env
from tests.fakes.telegram_api import FakeTelegramAPI, text_update

ARTEFACTS = PROJECT_ROOT / "var" / "test-artefacts" / "console-e2e"
CHAT = 7001

pytestmark = [pytest.mark.rasa, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module")
def bot(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory, api: FakeTelegramAPI
) -> Iterator[RunningBot]:
    tmp = tmp_path_factory.mktemp("console-e2e")
    kb = tmp / "faq.yml"  # a copy the librarian edits in the browser while the bot runs
    kb.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    running = start_bot(
        tmp, trained_model, telegram_env(api, webhook=True) | {"PATRONBOT_KNOWLEDGE_BASE": str(kb)}
    )
    yield running
    assert stop_bot(running) == 0, running.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium(ARTEFACTS) as launched:
        yield launched


class Patron:
    """The patron's side: Telegram updates posted to the bot's webhook, numbered as Telegram does."""

    def __init__(self, bot: RunningBot, api: FakeTelegramAPI) -> None:
        self.bot, self.api, self.next_id = bot, api, 900_000

    def says(self, text: str) -> None:
        self.next_id += 1
        deliver(self.bot, text_update(self.next_id, CHAT, text), deadline=time.monotonic() + 120)

    def received(self) -> list[str]:
        return [str(call.params.get("text") or "") for call in self.api.sent(CHAT)]

    def waits_for(self, condition: str, test: object, timeout: float = 90) -> None:
        assert callable(test)
        assert self.api.wait_for(lambda: bool(test()), timeout=timeout), f"{condition}: {self.received()}"


def recorded(bot: RunningBot, text: str) -> bool:
    """Whether the patron's message `text` is in the CRM (the ingester has it)."""
    with Session(make_engine(bot.crm_url), future=True) as session:
        found = session.execute(
            select(Interaction.id).where(Interaction.direction == "in", Interaction.text == text)
        ).first()
        return found is not None


def sign_in(page: Page, bot: RunningBot, username: str) -> str:
    console = bot.console.rstrip("/")
    page.goto(f"{console}/login?lang=en")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{console}/")
    return console


@pytest.mark.timeout(900)
def test_a_librarian_takes_a_telegram_conversation_and_gives_it_back(
    bot: RunningBot, api: FakeTelegramAPI, browser: Browser
) -> None:
    staff(make_engine(bot.crm_url), "lin", "librarian")
    page = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900}).new_page()
    console = sign_in(page, bot, "lin")
    patron = Patron(bot, api)

    # The patron asks for a librarian on Telegram: the open inbox shows them without a reload.
    patron.says("I want to talk to a librarian")
    expect(page.locator("#inbox")).to_contain_text("I want to talk to a librarian", timeout=60_000)
    page.screenshot(path=str(ARTEFACTS / "inbox-telegram.png"), full_page=True)
    with Session(make_engine(bot.crm_url), future=True) as session:
        escalation = session.execute(select(Escalation).where(Escalation.channel == "telegram")).scalar_one()
    assert escalation.rasa_sender_id == f"telegram:{CHAT}"
    page.click(f'a[href="/escalations/{escalation.id}"]')
    page.click('form[action$="/claim"] button')
    expect(page.locator("[role=status]")).to_have_text("Claimed: the conversation is yours.")

    # Claimed: the patron's next message reaches the librarian, and the bot says nothing.
    before = len(patron.received())
    patron.says("Is the book I reserved waiting for me?")
    expect(page.locator("#transcript")).to_contain_text(
        "Is the book I reserved waiting for me?", timeout=30_000
    )
    assert recorded(bot, "Is the book I reserved waiting for me?")
    time.sleep(5)  # what the bot would have said has had time to reach the fake Bot API
    assert patron.received()[before:] == []

    # The librarian's reply reaches the patron through Telegram.
    page.fill("#reply-text", "Yes, it is on the hold shelf by the entrance.")
    page.click('form[action$="/reply"] button')
    expect(page.locator("[role=status]")).to_have_text("Reply sent to the patron.")
    patron.waits_for(
        "the librarian's reply", lambda: "Yes, it is on the hold shelf by the entrance." in patron.received()
    )
    page.screenshot(path=str(ARTEFACTS / "escalation-telegram.png"), full_page=True)

    # Given back: the bot answers again.
    page.click('form[action$="/give-back"] button')
    expect(page.locator("[role=status]")).to_contain_text("bot")
    answered = len(patron.received())
    patron.says("how do I renew my books online")
    patron.waits_for(
        "the bot's answer", lambda: any("renew" in text.lower() for text in patron.received()[answered:])
    )

    # A low rating given on Telegram shows on the feedback page.
    page.goto(f"{console}/feedback")
    expect(page.locator("table").last).not_to_contain_text("telegram")
    patron.says("I'd like to leave feedback on the service")
    patron.waits_for("the rating question", lambda: "rate it from 1 to 5" in patron.received()[-1])
    asked = len(patron.received())
    patron.says("1")
    patron.waits_for("the comment question", lambda: len(patron.received()) > asked)
    patron.says("the hold shelf was empty")
    patron.waits_for("the bot's thanks", lambda: len(patron.received()) > asked + 1)

    def rated() -> bool:
        with Session(make_engine(bot.crm_url), future=True) as session:
            return session.execute(select(Feedback.id).where(Feedback.csat == 1)).first() is not None

    assert api.wait_for(rated, timeout=60), f"no rating recorded: {patron.received()[asked:]}"
    page.goto(f"{console}/feedback")
    channel_row = page.locator("table").last.locator("tr", has_text="telegram")
    expect(channel_row.locator("td").first).to_have_text("1.0", timeout=30_000)
    page.screenshot(path=str(ARTEFACTS / "feedback-telegram.png"), full_page=True)

    # The librarian edits the knowledge base in the browser; the running bot answers with the new text.
    page.goto(f"{console}/knowledge/renew-online")
    answer = page.locator("#kb-en-answer")
    answer.fill(f"{answer.input_value()} From this term you can also renew at the self-service kiosks.")
    page.click("form.kb-form button[type=submit]")
    expect(page).to_have_url(f"{console}/knowledge/renew-online?done=kb_saved")
    page.screenshot(path=str(ARTEFACTS / "knowledge-entry-telegram.png"), full_page=True)
    asked = len(patron.received())
    patron.says("how do I renew my books online")
    patron.waits_for(
        "the edited answer", lambda: any("self-service kiosks" in text for text in patron.received()[asked:])
    )

    # Nothing of the bot token reached a log (httpx logs request URLs at INFO inside Rasa's own logging).
    logs = [bot.log, *sorted((bot.data_dir / "log").glob("*.log"))]
    assert all(TOKEN not in path.read_text(errors="replace") for path in logs)
