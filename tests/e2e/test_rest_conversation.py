"""End to end: the trained model on a real `patronbot run`, through the REST webhook, into the CRM."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.database import make_engine
from bot.crm.models import ChannelIdentity, Consent, Escalation, Interaction, Suggestion
from bot.knowledge.dates import find_day
from bot.knowledge.facts import load_facts
from bot.language import detect_language
from bot.settings import PROJECT_ROOT
from tests.e2e.conftest import PATRONBOT, RunningBot

pytestmark = pytest.mark.rasa

FACTS = load_facts(PROJECT_ROOT / "knowledge" / "library.yml")
DOMAIN = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text(encoding="utf-8"))


def response_text(name: str, language: str) -> str:
    """The domain's variation of a response for a language (read from domain.yml, not copied here)."""
    for variation in DOMAIN["responses"][name]:
        for condition in variation.get("condition") or []:
            if condition["name"] == "language" and condition["value"] == language:
                return str(variation["text"])
    raise KeyError(name)


def sender() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


def crm_rows(bot: RunningBot, external_id: str, expected: int, timeout: float = 30) -> list[Interaction]:
    """The patron's interactions once the ingester has written `expected` of them."""
    engine = make_engine(bot.crm_url)
    deadline = time.monotonic() + timeout
    rows: list[Interaction] = []
    try:
        while time.monotonic() < deadline:
            with Session(engine, future=True) as session:
                rows = list(
                    session.execute(
                        select(Interaction)
                        .join(ChannelIdentity, ChannelIdentity.patron_id == Interaction.patron_id)
                        .where(ChannelIdentity.channel == "rest", ChannelIdentity.external_id == external_id)
                        .order_by(Interaction.occurred_at, Interaction.id)
                    ).scalars()
                )
            if len(rows) >= expected:
                return rows
            time.sleep(0.2)
    finally:
        engine.dispose()
    pytest.fail(f"expected {expected} interactions for rest:{external_id}, found {len(rows)}")


def test_chinese_hours_question_gets_chinese_hours_and_lands_in_the_crm(running_bot: RunningBot) -> None:
    patron = sender()
    replies = running_bot.say(patron, "图书馆几点开门？")
    assert len(replies) == 1
    assert FACTS.weekly["monday"].span() in replies[0]
    assert FACTS.name["zh"] in replies[0]
    assert detect_language(replies[0]) == "zh"
    rows = crm_rows(running_bot, patron, 2)
    assert [(r.direction, r.text, r.intent, r.language, r.channel) for r in rows] == [
        ("in", "图书馆几点开门？", "ask_hours", "zh", "rest"),
        ("out", replies[0], None, "zh", "rest"),
    ]
    assert rows[1].produced_by == "action_opening_hours"
    assert rows[0].confidence is not None
    assert rows[0].confidence > 0.5


def test_english_saturday_question_gets_saturday_hours_in_english(running_bot: RunningBot) -> None:
    patron = sender()
    replies = running_bot.say(patron, "When do you open on Saturday?")
    assert len(replies) == 1
    assert FACTS.weekly["saturday"].span() in replies[0]
    assert "Saturday" in replies[0]
    assert detect_language(replies[0]) == "en"
    rows = crm_rows(running_bot, patron, 2)
    assert [(r.direction, r.intent, r.language) for r in rows] == [
        ("in", "ask_hours", "en"),
        ("out", None, "en"),
    ]


@pytest.mark.parametrize(
    ("text", "response", "language"),
    [
        ("你好", "utter_greet", "zh"),
        ("hello there", "utter_greet", "en"),
        ("谢谢你", "utter_youre_welcome", "zh"),
        ("thank you so much", "utter_youre_welcome", "en"),
        ("你是机器人吗", "utter_iamabot", "zh"),
        ("am I talking to a bot?", "utter_iamabot", "en"),
        ("再见", "utter_goodbye_rate", "zh"),
        ("goodbye", "utter_goodbye_rate", "en"),
        ("帮我订一张去北京的机票", "utter_out_of_scope", "zh"),
        ("can you order me a pizza", "utter_out_of_scope", "en"),
    ],
)
def test_small_talk_and_out_of_scope_in_both_languages(
    running_bot: RunningBot, text: str, response: str, language: str
) -> None:
    assert running_bot.say(sender(), text) == [response_text(response, language)]


def test_contact_answer_comes_from_the_facts_file(running_bot: RunningBot) -> None:
    assert FACTS.phone in running_bot.say(sender(), "图书馆的电话是多少")[0]
    assert FACTS.address["en"] in running_bot.say(sender(), "what is the library's address")[0]


def test_language_follows_the_patron_within_a_conversation(running_bot: RunningBot) -> None:
    patron = sender()
    assert running_bot.say(patron, "你好") == [response_text("utter_greet", "zh")]
    assert running_bot.say(patron, "hello") == [response_text("utter_greet", "en")]
    # An emoji has no language of its own: the reply stays in the conversation's language.
    replies = running_bot.say(patron, "👍👍")
    assert len(replies) == 1
    assert detect_language(replies[0]) == "en"


def test_mixed_script_message_is_answered_in_chinese(running_bot: RunningBot) -> None:
    replies = running_bot.say(sender(), "请问 library 周六几点开门")
    saturday = find_day("周六", today=FACTS.today())
    assert saturday is not None
    assert FACTS.opening_on(saturday).span() in replies[0]  # the week's, or an exam period's
    assert "周六" in replies[0]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "the body must be JSON"),
        ({"message": "hello"}, "'sender' is required"),
        ({"sender": "x", "message": ""}, "'message' is empty"),
        ({"sender": "x"}, "'message' is required"),
        ({"sender": "x", "message": "hi", "metadata": "nope"}, "'metadata', when given, must be"),
    ],
)
def test_bad_requests_get_a_400_with_the_reason(running_bot: RunningBot, body: object, reason: str) -> None:
    status, payload = running_bot.post(body)  # type: ignore[arg-type]
    assert status == 400
    assert reason in payload["error"]


def test_ten_thousand_characters_get_a_reply_and_are_stored_whole(running_bot: RunningBot) -> None:
    patron = sender()
    text = ("我想问一下图书馆的开放时间。" * 800)[:10_000]
    replies = running_bot.say(patron, text)
    assert len(replies) >= 1
    assert detect_language(replies[0]) == "zh"
    rows = crm_rows(running_bot, patron, 2)
    assert rows[0].text == text


@pytest.mark.parametrize(
    "text",
    [
        "🙂🙂🙂",
        "<script>alert(1)</script>",
        "'; DROP TABLE patron; --",
        "\u200b\u200b",
        "SELECT * FROM users",
    ],
)
def test_odd_messages_get_a_polite_reply_a_crm_row_and_change_nothing(
    running_bot: RunningBot, text: str
) -> None:
    patron = sender()
    replies = running_bot.say(patron, text)
    assert len(replies) >= 1
    assert all(reply for reply in replies)
    rows = crm_rows(running_bot, patron, 1 + len(replies))
    assert rows[0].text == text
    assert rows[0].direction == "in"
    # Nothing is acted on: no consent given or withdrawn, no complaint or suggestion, no librarian called.
    patron_id = rows[0].patron_id
    engine = make_engine(running_bot.crm_url)
    try:
        with Session(engine, future=True) as session:
            for model in (Consent, Suggestion, Escalation):
                assert session.execute(select(model).where(model.patron_id == patron_id)).first() is None
    finally:
        engine.dispose()


def test_patronbot_chat_talks_to_the_running_bot(running_bot: RunningBot) -> None:
    result = subprocess.run(
        [PATRONBOT, "chat", "--sender", sender()],
        input="你好\n/quit\n",
        env=running_bot.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"bot> {response_text('utter_greet', 'zh')}" in result.stdout


def test_facts_edits_apply_without_restart_or_retraining(running_bot: RunningBot) -> None:
    path = Path(running_bot.env["PATRONBOT_LIBRARY_FACTS"])
    original = path.read_text(encoding="utf-8")
    assert FACTS.weekly["sunday"].span() in running_bot.say(sender(), "星期天几点关门")[0]
    data = yaml.safe_load(original)
    data["hours"]["sunday"] = "10:15-16:45"
    try:
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        assert "10:15–16:45" in running_bot.say(sender(), "星期天几点关门")[0]
    finally:
        path.write_text(original, encoding="utf-8")


KNOWLEDGE = {
    (entry["id"], lang): entry[lang]
    for entry in yaml.safe_load((PROJECT_ROOT / "knowledge" / "faq.yml").read_text(encoding="utf-8"))[
        "entries"
    ]
    for lang in ("zh", "en")
}


@pytest.mark.parametrize(
    ("entry_id", "language"),
    [
        ("renew-online", "zh"),
        ("renew-online", "en"),
        ("wifi", "zh"),
        ("overdue-fines", "en"),
        ("ill-request", "zh"),
    ],
)
def test_service_questions_are_answered_from_the_knowledge_base(
    running_bot: RunningBot, entry_id: str, language: str
) -> None:
    block = KNOWLEDGE[(entry_id, language)]
    status, replies = running_bot.post({"sender": sender(), "message": block["question"]})
    assert status == 200
    assert len(replies) == 1
    # Asked in the knowledge base's own words, the bot answers, or at least offers that very question.
    offered = [button["payload"] for button in replies[0].get("buttons") or []]
    assert replies[0].get("text") == block["answer"] or block["question"] in offered


def test_the_nlu_hands_its_e5_vector_to_the_knowledge_base_action(running_bot: RunningBot) -> None:
    """Rasa keeps the classifier's vector in the message's parse data, which the action server reads;
    the vector is that of the text the patron sent, as retrieval normalises it."""
    import numpy as np

    from bot.crm.rasa_events import RasaEventStore
    from bot.knowledge import query_vectors
    from bot.knowledge.encoders import MultilingualEncoder
    from bot.knowledge.text import normalise_query
    from bot.settings import Settings

    patron, text = sender(), KNOWLEDGE[("wifi", "en")]["question"]
    assert running_bot.say(patron, text)
    settings = Settings(_env_file=None, data_dir=running_bot.data_dir)  # type: ignore[call-arg]
    tracker = RasaEventStore(name="tracker_store", url=settings.rasa_tracker_url)
    events = tracker.events_for({f"rest:{patron}"})
    [user] = [event for event in events if event.get("event") == "user"]
    vector = query_vectors.unpack(user["parse_data"].get(query_vectors.PARSE_KEY), normalise_query(text))
    assert vector is not None
    expected = MultilingualEncoder().encode_queries([normalise_query(text)])[0]
    assert float(np.abs(vector - expected).max()) < 2e-3


def test_knowledge_base_edits_apply_without_restart(running_bot: RunningBot, tmp_path: Path) -> None:
    kb = Path(running_bot.env["PATRONBOT_KNOWLEDGE_BASE"])
    original = kb.read_text(encoding="utf-8")
    data = yaml.safe_load(original)
    wifi = next(entry for entry in data["entries"] if entry["id"] == "wifi")
    wifi["zh"]["answer"] = "无线网络已更名为 RU-Library-2027，请用校园 ID 登录。"
    try:
        kb.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        replies = running_bot.say(sender(), wifi["zh"]["question"])
        assert replies == [wifi["zh"]["answer"]]
    finally:
        kb.write_text(original, encoding="utf-8")


def consent_decisions(bot: RunningBot, patron: str) -> list[bool]:
    """The REST patron's consent decisions (granted or not), oldest first."""
    from bot.crm.models import Consent

    engine = make_engine(bot.crm_url)
    try:
        with Session(engine, future=True) as session:
            return list(
                session.execute(
                    select(Consent.granted)
                    .join(ChannelIdentity, ChannelIdentity.patron_id == Consent.patron_id)
                    .where(ChannelIdentity.channel == "rest", ChannelIdentity.external_id == patron)
                    .order_by(Consent.id)
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "typed", ["I'm done receiving library updates", "结束订阅", "enough with the alerts"]
)
def test_a_patron_leaving_the_messages_is_never_subscribed(running_bot: RunningBot, typed: str) -> None:
    """Whatever the NLU makes of it, a message that leaves the library's messages grants no consent:
    it unsubscribes, asks, or says it did not understand."""
    patron = sender()
    replies = running_bot.say(patron, typed)
    assert FACTS.privacy_notice not in replies[0] or "?" in replies[0] or "？" in replies[0]
    assert True not in consent_decisions(running_bot, patron)


def test_one_word_unsubscribes_and_the_crm_keeps_the_history(running_bot: RunningBot) -> None:
    patron = sender()
    subscribed = running_bot.say(patron, "I'd like to receive messages from the library")
    assert FACTS.privacy_notice in subscribed[0]
    assert running_bot.say(patron, "退订") == [response_text("utter_unsubscribed", "zh")]
    assert consent_decisions(running_bot, patron) == [True, False]


def test_the_terminal_shows_patronbots_steps_and_the_log_keeps_everything(running_bot: RunningBot) -> None:
    """`patronbot run` prints its own steps; Rasa's, TensorFlow's and setuptools' notices go to the log."""
    terminal = running_bot.log.read_text(errors="replace")
    assert "patronbot is ready" in terminal
    assert f"staff console: {running_bot.console}" in terminal
    assert "started Rasa server" in terminal
    assert "Warning" not in terminal
    assert "is not used in any story or rule" not in terminal
    everything = running_bot.process_log.read_text(errors="replace")
    assert "[Rasa server]" in everything
    assert "[action server]" in everything
    assert "Rasa server is up and running" in everything


def test_patronbot_run_serves_the_staff_console_behind_its_sign_in(running_bot: RunningBot) -> None:
    with urllib.request.urlopen(f"{running_bot.console}login", timeout=30) as page:
        assert page.status == 200
        assert 'name="password"' in page.read().decode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{running_bot.console}api/escalations", timeout=30)
    assert refused.value.code == 401
