"""Actions for the patron's relationship with the library: consent to messages, and their data."""

from __future__ import annotations

import logging
import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from actions.buttons import INTEREST_TITLES, PATRON_TYPE_TITLES, is_tap
from actions.crm import crm_engine, patron_id_for, privacy_url, tracker_key
from actions.language import patron_language
from bot.crm.audit import log_access
from bot.crm.consent import current_consents, record_consent
from bot.crm.database import describe_error, session_scope
from bot.crm.models import ChannelIdentity, Interaction, Patron
from bot.settings import get_settings

log = logging.getLogger(__name__)

# The version of the consent wording the patron answered, kept with every consent row.
FOLLOW_UP_WORDING = "follow-up-v1"

__all__ = ["ActionPrivacySummary", "ActionSubscribe", "ActionUnsubscribe", "crm_engine"]


def _set_follow_up(tracker: Tracker, *, granted: bool) -> bool:
    """Record the patron's decision; False if the CRM could not be reached (logged, no patron data)."""
    settings = get_settings()
    try:
        with session_scope(crm_engine()) as session:
            patron_id = patron_id_for(session, tracker)
            record_consent(
                session=session,
                patron_id=patron_id,
                purpose="follow_up",
                granted=granted,
                channel=tracker_key(tracker).channel,
                wording_version=FOLLOW_UP_WORDING,
            )
    except SQLAlchemyError as error:
        log.error("cannot record a consent decision: %s", describe_error(error, settings.crm_database_url))
        return False
    return True


# Consent is given only when it is unmistakable: a tapped "Yes", or a typed request the NLU is this
# sure of ("subscribe", "订阅" score above 0.9). Below it the bot asks, with one-tap Yes / No buttons:
# out of fold on nlu/, 0.7 granted no wrong prediction ("I'm done receiving updates", "结束订阅" were
# taken for subscribe at 0.4-0.6) and asked 52 of 93 right ones to tap once more.
EXPLICIT_CONSENT = 0.7


def explicit_request(tracker: Tracker) -> bool:
    """Whether the patron's latest message asks for messages unmistakably (a tap, or a sure NLU)."""
    latest = tracker.latest_message or {}
    if is_tap(str(latest.get("text") or ""), intent="subscribe"):
        return True
    return float((latest.get("intent") or {}).get("confidence") or 0.0) >= EXPLICIT_CONSENT


class ActionSubscribe(Action):  # type: ignore[misc]
    """The patron asks for library messages: record the follow-up consent and show the privacy
    notice; if the request is not unmistakable, ask first (withdrawing needs no such care)."""

    def name(self) -> str:
        return "action_subscribe"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if not explicit_request(tracker):
            dispatcher.utter_message(response="utter_ask_follow_up_consent", privacy_url=privacy_url())
            return []
        if _set_follow_up(tracker, granted=True):
            dispatcher.utter_message(response="utter_subscribed", privacy_url=privacy_url())
        else:
            dispatcher.utter_message(response="utter_action_unavailable")
        return []


# "取消我的荐购", "cancel my hold": cancelling something other than the library's messages, which the
# classifier may still call unsubscribe. Consent is withdrawn only when nothing else is named.
_SOMETHING_ELSE = re.compile(
    r"荐购|采购|预约|预定|预订|借阅|续借|座位|研讨室|讲座|活动|报名|申请|"
    r"\b(?:holds?|bookings?|reservations?|requests?|suggestions?|loans?|renewals?|registrations?|seats?|"
    r"rooms?|orders?|appointments?)\b",
    re.IGNORECASE,
)
_MESSAGES = re.compile(
    r"消息|通知|推送|订阅|短信|邮件|提醒|\b(?:messages?|notifications?|newsletters?|e-?mails?|updates?|"
    r"subscri\w*|alerts?|news)\b",
    re.IGNORECASE,
)


def cancels_something_else(text: str) -> bool:
    """Whether a "cancel ..." names something other than the library's messages ("取消我的荐购")."""
    return bool(_SOMETHING_ELSE.search(text)) and not _MESSAGES.search(text)


class ActionUnsubscribe(Action):  # type: ignore[misc]
    """One word ("stop", "退订") withdraws the follow-up consent at once, wherever the patron is; a
    "cancel" of something else ("取消我的荐购") withdraws nothing and is answered as the question it is."""

    def name(self) -> str:
        return "action_unsubscribe"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        text = str((tracker.latest_message or {}).get("text") or "")
        if not is_tap(text) and cancels_something_else(text):
            from actions.knowledge import ActionAnswerFaq

            answered: list[dict[str, Any]] = ActionAnswerFaq().run(dispatcher, tracker, domain)
            return answered
        if _set_follow_up(tracker, granted=False):
            dispatcher.utter_message(response="utter_unsubscribed")
        else:
            dispatcher.utter_message(response="utter_action_unavailable")
        return []


class ActionPrivacySummary(Action):  # type: ignore[misc]
    """Tells the patron what the library holds about them (the read is written to the audit log)."""

    def name(self) -> str:
        return "action_privacy_summary"

    def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        settings = get_settings()
        zh = patron_language(tracker) == "zh"
        try:
            with session_scope(crm_engine()) as session:
                patron_id = patron_id_for(session, tracker)
                in_session = sum(1 for event in tracker.events if event.get("event") in ("user", "bot"))
                summary = _summary(session, patron_id, zh=zh, in_session=in_session)
                log_access(
                    session=session,
                    actor="patron",
                    action="read",
                    patron_id=patron_id,
                    reason="the patron asked what the library holds about them",
                )
        except SQLAlchemyError as error:
            log.error(
                "cannot summarise a patron's data: %s", describe_error(error, settings.crm_database_url)
            )
            dispatcher.utter_message(response="utter_action_unavailable")
            return []
        dispatcher.utter_message(response="utter_privacy_summary", privacy_url=privacy_url(), **summary)
        return []


# What the summary shows, in the patron's words rather than the CRM's codes.
LANGUAGE_NAMES = {"zh": ("中文", "Chinese"), "en": ("英文", "English")}
CHANNEL_NAMES = {"rest": ("网页", "web"), "telegram": ("Telegram", "Telegram"), "wechat": ("微信", "WeChat")}
PURPOSE_NAMES = {
    "service": ("服务消息", "service messages"),
    "follow_up": ("图书馆主动发送的消息", "messages from the library"),
    "profiling": ("个性化服务", "personalised service"),
    "cross_border": ("境外渠道", "channels abroad"),
}


def _name(names: dict[str, tuple[str, str]], code: str, zh: bool) -> str:
    pair = names.get(code)
    return (pair[0] if zh else pair[1]) if pair else code


def _summary(session: Session, patron_id: int, *, zh: bool, in_session: int = 0) -> dict[str, str]:
    """What the library holds about the patron, in their language. `in_session`: the messages of this
    conversation so far, some of which may not have reached the CRM yet."""
    patron = session.get(Patron, patron_id)
    assert patron is not None  # just created or found in this transaction
    channels = session.execute(
        select(ChannelIdentity.channel).where(ChannelIdentity.patron_id == patron_id)
    ).scalars()
    messages = session.execute(
        select(func.count()).select_from(Interaction).where(Interaction.patron_id == patron_id)
    ).scalar_one()
    none = "无" if zh else "none"
    interests = patron.interests if isinstance(patron.interests, list) else []
    consents = current_consents(session=session, patron_id=patron_id)
    words = {True: "同意" if zh else "yes", False: "不同意" if zh else "no"}
    separator = "、" if zh else ", "
    return {
        "channels": separator.join(_name(CHANNEL_NAMES, c, zh) for c in sorted(set(channels))) or none,
        "language": _name(LANGUAGE_NAMES, patron.language, zh) if patron.language else none,
        "patron_type": _name(PATRON_TYPE_TITLES, patron.patron_type, zh) if patron.patron_type else none,
        "interests": separator.join(_name(INTEREST_TITLES, str(i), zh) for i in interests) or none,
        "messages": str(max(int(messages), in_session)),
        "first_seen": f"{patron.created_at:%Y-%m-%d}" if patron.created_at else none,
        "consents": separator.join(
            f"{_name(PURPOSE_NAMES, purpose, zh)}{'：' if zh else ': '}{words[granted]}"
            for purpose, granted in consents.items()
        )
        or none,
    }
