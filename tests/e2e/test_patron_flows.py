"""End to end through the REST webhook: feedback, a librarian taking over and handing back, deletion."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.models import ChannelIdentity, Escalation, Feedback, Patron, Suggestion
from bot.crm.rasa_events import RasaEventStore
from bot.engagement.escalations import CLOSING_MESSAGE
from bot.settings import PROJECT_ROOT, Settings
from tests.e2e.conftest import PATRONBOT, RunningBot
from tests.e2e.test_rest_conversation import FACTS, response_text

pytestmark = pytest.mark.rasa
T = TypeVar("T")


def sender() -> str:
    return f"flow-{uuid.uuid4().hex[:10]}"


def eventually(check: Callable[[], T | None], *, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("the condition did not hold in time")


def query(bot: RunningBot, statement: Any) -> list[Any]:
    engine = make_engine(bot.crm_url)
    try:
        with Session(engine, future=True) as session:
            return list(session.execute(statement).scalars())
    finally:
        engine.dispose()


@pytest.fixture
def librarians_on_duty(running_bot: RunningBot) -> Iterator[None]:
    """Librarians on duty around the clock for the test, whatever time CI runs it."""
    facts = Path(running_bot.env["PATRONBOT_LIBRARY_FACTS"])
    original = facts.read_text(encoding="utf-8")
    raw = yaml.safe_load(original)
    raw["staffed_hours"] = dict.fromkeys(raw["hours"], "00:00-23:59")
    raw["hours_exceptions"] = []
    facts.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    yield
    facts.write_text(original, encoding="utf-8")


def staff(bot: RunningBot, *args: str) -> str:
    result = subprocess.run(
        [PATRONBOT, "escalations", *args],
        env=bot.env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_librarian_takes_over_replies_and_hands_back(
    running_bot: RunningBot, librarians_on_duty: None
) -> None:
    patron = sender()
    opened = running_bot.say(patron, "talk to a librarian")
    assert opened[0] == response_text("utter_handoff_opened", "en")
    assert "shortly" in opened[1]
    ack = response_text("utter_handoff_ack", "en")
    assert running_bot.say(patron, "what time do you open") == [ack]  # quiet while staff have it

    [escalation] = query(running_bot, select(Escalation).where(Escalation.rasa_sender_id == f"rest:{patron}"))
    assert (escalation.reason, escalation.status) == ("requested", "open")
    staff(running_bot, "reply", str(escalation.id), "--staff", "alice", "Hello, this is Alice at the desk.")
    # A librarian has answered: the bot is silent now, the librarian's words are all the patron gets.
    assert running_bot.say(patron, "thanks, one more thing") == ["Hello, this is Alice at the desk."]

    staff(running_bot, "resolve", str(escalation.id), "--staff", "alice", "--note", "answered")
    back = running_bot.say(patron, "what time do you open")
    assert back[0] == CLOSING_MESSAGE["en"]
    assert ack not in back
    assert any(FACTS.weekly["monday"].span() in reply for reply in back[1:])  # the bot answers again


def test_a_low_rating_with_a_comment_lands_in_the_crm_and_escalates(running_bot: RunningBot) -> None:
    patron = sender()
    status, asked = running_bot.post({"sender": patron, "message": "I want to give feedback"})
    assert status == 200
    assert asked[0]["text"] == response_text("utter_ask_csat", "en")
    assert [b["title"] for b in asked[0]["buttons"]] == ["1", "2", "3", "4", "5"]
    # The patron taps "2": the button's payload is what the channel sends.
    tapped = running_bot.say(patron, asked[0]["buttons"][1]["payload"])
    assert tapped == [response_text("utter_ask_comment", "en")]
    said = running_bot.say(patron, "the queue at the service desk was very long")
    assert said[0] == response_text("utter_feedback_low", "en")

    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))
    [feedback] = query(running_bot, select(Feedback).where(Feedback.patron_id == patron_id))
    assert (feedback.csat, feedback.comment) == (2, "the queue at the service desk was very long")
    escalations = query(running_bot, select(Escalation).where(Escalation.rasa_sender_id == f"rest:{patron}"))
    assert [e.reason for e in escalations] == ["low_rating"]


def report_variation(name: str, *, language: str, kind: str) -> str:
    """A response's variation for a complaint or a suggestion in a language (read from domain.yml)."""
    domain = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))
    wanted = {("language", language), ("report_kind", kind)}
    [text] = [
        str(v["text"])
        for v in domain["responses"][name]
        if {(c["name"], c["value"]) for c in v.get("condition") or []} == wanted
    ]
    return text


def test_a_complaint_naming_a_service_is_recorded_after_a_question(running_bot: RunningBot) -> None:
    patron = sender()
    ask_details = report_variation("utter_ask_report_details", language="en", kind="complaint")
    assert running_bot.say(patron, "I want to make a complaint") == [ask_details]
    # A question in the middle is answered, and the form asks again.
    answered = running_bot.say(patron, "how do I renew?")
    assert len(answered) >= 2, answered
    assert answered[-1] == ask_details
    # What went wrong names the renewal service (the classifier says renewal): it is the complaint.
    recorded = running_bot.say(patron, "the online renewal never works for me")
    recorded_text = report_variation("utter_report_recorded", language="en", kind="complaint")
    assert recorded[0].startswith(recorded_text.split("{number}")[0]), recorded
    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))
    [report] = query(running_bot, select(Suggestion).where(Suggestion.patron_id == patron_id))
    assert (report.kind, report.text) == ("complaint", "the online renewal never works for me")
    escalations = query(running_bot, select(Escalation).where(Escalation.rasa_sender_id == f"rest:{patron}"))
    assert [e.reason for e in escalations] == ["complaint"]


@pytest.mark.parametrize(
    ("typed", "language", "kind"),
    [
        ("I'd like to suggest longer opening hours on weekends", "en", "service"),
        ("我想荐购一本书：《深度学习》", "zh", "purchase"),
    ],
)
def test_a_suggestion_is_thanked_as_one_and_calls_no_librarian(
    running_bot: RunningBot, typed: str, language: str, kind: str
) -> None:
    patron = sender()
    replies = running_bot.say(patron, typed)
    thanks = report_variation("utter_report_recorded", language=language, kind="suggestion")
    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))
    [report] = query(running_bot, select(Suggestion).where(Suggestion.patron_id == patron_id))
    assert (report.kind, report.text) == (kind, typed)
    assert replies == [thanks.format(number=report.id)]
    assert query(running_bot, select(Escalation).where(Escalation.rasa_sender_id == f"rest:{patron}")) == []


def test_the_profile_is_told_by_a_tap_then_by_typing(running_bot: RunningBot) -> None:
    """A channel without buttons sends text: interests typed after the interests question are kept."""
    patron = sender()
    status, asked = running_bot.post({"sender": patron, "message": "how many books can I borrow"})
    assert status == 200
    postgraduate = next(b for b in asked[-1]["buttons"] if "postgraduate" in b["payload"])
    running_bot.say(patron, postgraduate["payload"])
    replies = running_bot.say(patron, "databases and new books")
    consent_question = response_text("utter_ask_follow_up_consent", "en")
    assert replies[-1] == consent_question.format(privacy_url=FACTS.privacy_notice)
    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))
    [saved] = query(running_bot, select(Patron).where(Patron.id == patron_id))
    assert (saved.patron_type, saved.interests) == ("postgraduate", ["e_resources", "new_books"])


def test_a_feedback_form_left_half_way_starts_afresh_and_can_be_left_again(running_bot: RunningBot) -> None:
    patron = sender()
    asked = running_bot.say(patron, "I want to give feedback")
    assert asked == [response_text("utter_ask_csat", "en")]
    assert running_bot.say(patron, '/give_feedback{"csat": "1"}') == [
        response_text("utter_ask_comment", "en")
    ]
    running_bot.say(patron, "stop")  # unsubscribes at once and ends the form
    # The rating of the form left behind is not reused: the form asks for one again.
    assert running_bot.say(patron, "I want to give feedback") == [response_text("utter_ask_csat", "en")]
    assert running_bot.say(patron, "never mind") == [response_text("utter_feedback_cancelled", "en")]
    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))
    assert query(running_bot, select(Feedback).where(Feedback.patron_id == patron_id)) == []
    escalations = query(running_bot, select(Escalation).where(Escalation.rasa_sender_id == f"rest:{patron}"))
    assert escalations == []


def test_delete_my_data_erases_the_crm_and_rasa_stores_after_confirmation(running_bot: RunningBot) -> None:
    patron = sender()
    running_bot.say(patron, "怎么续借")
    assert running_bot.say(patron, "删除我的数据") == [response_text("utter_ask_delete_confirmation", "zh")]
    assert running_bot.say(patron, "算了") == [response_text("utter_delete_cancelled", "zh")]
    identity = select(ChannelIdentity.patron_id).where(ChannelIdentity.external_id == patron)
    [patron_id] = eventually(lambda: query(running_bot, identity))

    running_bot.say(patron, "删除我的数据")
    assert running_bot.say(patron, "确认删除") == [response_text("utter_delete_scheduled", "zh")]
    eventually(lambda: not query(running_bot, select(Patron.id).where(Patron.id == patron_id)) or None)
    assert query(running_bot, identity) == []
    settings = Settings(_env_file=None, data_dir=running_bot.data_dir)  # type: ignore[call-arg]
    tracker = RasaEventStore(name="tracker_store", url=settings.rasa_tracker_url)
    assert tracker.events_for({f"rest:{patron}"}) == []
