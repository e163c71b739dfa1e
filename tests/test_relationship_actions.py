"""Subscribing, one-word unsubscribing and "what do you know about me", against a real CRM database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actions.relationship import ActionPrivacySummary, ActionSubscribe, ActionUnsubscribe, crm_engine
from bot.models import AuditLog, Consent
from tests.test_actions import FACTS, tracker


@pytest.fixture
def crm_for_actions(crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    crm_engine.cache_clear()
    yield crm
    crm_engine().dispose()
    crm_engine.cache_clear()


def run(action: object, text: str) -> list[dict[str, object]]:
    dispatcher = CollectingDispatcher()
    assert action.run(dispatcher, tracker(text), {}) == []  # type: ignore[attr-defined]
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


def test_stop_without_a_subscription_is_still_recorded_once(crm_for_actions: Engine) -> None:
    run(ActionUnsubscribe(), "退订")
    run(ActionUnsubscribe(), "退订")
    assert consent_history(crm_for_actions) == [("follow_up", False)]


def test_privacy_summary_tells_the_patron_and_is_audited(crm_for_actions: Engine) -> None:
    run(ActionSubscribe(), "subscribe")
    messages = run(ActionPrivacySummary(), "what do you know about me")
    assert messages[0]["response"] == "utter_privacy_summary"
    assert messages[0]["channels"] == "rest"
    assert messages[0]["consents"] == "service: yes, follow_up: yes, profiling: no, cross_border: no"
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
