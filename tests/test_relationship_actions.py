"""Subscribing, one-word unsubscribing and "what do you know about me", against a real CRM database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions.relationship import ActionPrivacySummary, ActionSubscribe, ActionUnsubscribe, crm_engine
from bot.crm.models import AuditLog, Consent
from tests.test_actions import FACTS, tracker


@pytest.fixture
def crm_for_actions(crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    crm_engine.cache_clear()
    yield crm
    crm_engine().dispose()
    crm_engine.cache_clear()


def run(action: object, text: str, *, confidence: float = 0.99) -> list[dict[str, object]]:
    dispatcher = CollectingDispatcher()
    typed = tracker(text)
    typed.latest_message["intent"]["confidence"] = confidence
    assert action.run(dispatcher, typed, {}) == []  # type: ignore[attr-defined]
    return dispatcher.messages


def consent_history(crm: Engine) -> list[tuple[str, bool]]:
    with Session(crm, future=True) as session:
        rows = session.execute(select(Consent.purpose, Consent.granted).order_by(Consent.id)).all()
        return [(str(purpose), bool(granted)) for purpose, granted in rows]


def test_subscribe_then_stop_records_both_decisions(crm_for_actions: Engine) -> None:
    subscribed = run(ActionSubscribe(), "please send me library news")
    assert subscribed[0]["response"] == "utter_subscribed"
    assert subscribed[0]["privacy_url"] == FACTS.privacy_notice
    unsubscribed = run(ActionUnsubscribe(), "stop")
    assert unsubscribed[0]["response"] == "utter_unsubscribed"
    assert consent_history(crm_for_actions) == [("follow_up", True), ("follow_up", False)]


def test_a_doubtful_request_for_messages_is_asked_before_consent_is_recorded(crm_for_actions: Engine) -> None:
    # "结束订阅" (end my subscription) was taken for subscribe at 0.44: nothing may be granted on that.
    asked = run(ActionSubscribe(), "结束订阅", confidence=0.44)
    assert asked[0]["response"] == "utter_ask_follow_up_consent"
    assert asked[0]["privacy_url"] == FACTS.privacy_notice
    assert consent_history(crm_for_actions) == []
    # The "Yes" button's payload is the patron's unmistakable answer.
    assert run(ActionSubscribe(), "/subscribe", confidence=1.0)[0]["response"] == "utter_subscribed"
    assert consent_history(crm_for_actions) == [("follow_up", True)]


@pytest.mark.parametrize("typed", ["/ please sign me up", "/subscribe me to everything", "/subscribe{oops"])
def test_typed_text_beginning_with_a_slash_is_not_a_tap(crm_for_actions: Engine, typed: str) -> None:
    """Any message starting with "/" counted as the Yes button: "/ please sign me up" (classified as
    subscribe at 0.3-0.7) granted consent without the patron's unmistakable answer."""
    asked = run(ActionSubscribe(), typed, confidence=0.5)
    assert asked[0]["response"] == "utter_ask_follow_up_consent"
    assert consent_history(crm_for_actions) == []


def test_a_tap_is_a_payload_as_rasa_parses_one() -> None:
    from actions.buttons import is_tap

    assert is_tap("/subscribe")
    assert is_tap('/inform_profile{"patron_type": "faculty"}')
    assert is_tap("/subscribe", intent="subscribe")
    assert not is_tap("/unsubscribe", intent="subscribe")
    assert not is_tap("/ please sign me up")
    assert not is_tap("/subscribe{not json}")
    assert not is_tap("subscribe")


def test_stop_without_a_subscription_is_still_recorded_once(crm_for_actions: Engine) -> None:
    run(ActionUnsubscribe(), "退订")
    run(ActionUnsubscribe(), "退订")
    assert consent_history(crm_for_actions) == [("follow_up", False)]


def test_privacy_summary_tells_the_patron_and_is_audited(crm_for_actions: Engine) -> None:
    run(ActionSubscribe(), "subscribe")
    messages = run(ActionPrivacySummary(), "what do you know about me")
    assert messages[0]["response"] == "utter_privacy_summary"
    # In the patron's words, not the CRM's codes.
    assert messages[0]["channels"] == "web"
    assert messages[0]["consents"] == (
        "service messages: yes, messages from the library: yes, personalised service: no, channels abroad: no"
    )
    assert messages[0]["messages"] == "0"
    with Session(crm_for_actions, future=True) as session:
        entry = session.execute(select(AuditLog)).scalar_one()
        assert (entry.actor, entry.action) == ("patron", "read")


def test_unreachable_crm_gets_an_apology_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", "postgresql://nobody:secret@127.0.0.1:1/crm")
    crm_engine.cache_clear()
    try:
        assert run(ActionUnsubscribe(), "stop")[0]["response"] == "utter_action_unavailable"
        assert (
            run(ActionPrivacySummary(), "what do you know about me")[0]["response"]
            == "utter_action_unavailable"
        )
    finally:
        crm_engine.cache_clear()


def test_the_chinese_summary_shows_no_codes_and_counts_the_conversation_so_far(
    crm_for_actions: Engine,
) -> None:
    """The summary answered "读者类型 undergraduate；兴趣 events；follow_up: 不同意", and "0 messages"
    to a patron who had been chatting (the ingester had not caught up)."""
    from actions.relationship import ActionPrivacySummary
    from tests.test_actions import tracker as make

    asking = make("你们有我哪些信息", language="zh")
    asking.events = [{"event": "user", "text": "你好"}, {"event": "bot", "text": "您好"}, {"event": "user"}]
    dispatcher = CollectingDispatcher()
    ActionPrivacySummary().run(dispatcher, asking, {})
    said = dispatcher.messages[0]
    assert said["channels"] == "网页"
    assert "follow_up" not in said["consents"]
    assert "service" not in said["consents"]
    assert said["consents"].startswith("服务消息：同意")
    assert said["messages"] == "3"
