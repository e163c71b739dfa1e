"""Buttons on messages no Rasa turn produced (a campaign's, a follow-up's): stored with the outbox row and
shown as each channel can: Telegram's inline keyboard, the widget's quick replies, the REST reply's
buttons, WeChat's numbered options, whose typed number or title the channel maps back to the payload."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import OutboxMessage
from bot.outbound.dispatcher import SENT, Attempt, Dispatcher
from bot.outbound.outbox import buttons_of, buttons_sent_since, send
from connectors.rest import pending_replies
from connectors.telegram_send import make_bot, outbox_sender
from connectors.typed_buttons import last_written
from connectors.webchat import widget_message
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.wechat_api import FakeWeChatApi
from tests.test_escalations import add_patron
from tests.test_telegram import TOKEN, api  # noqa: F401 (the fake Bot API fixture)
from tests.test_wechat import (  # noqa: F401 (fixtures)
    Served,
    Tracker,
    TrackerStore,
    dispatch,
    fake,
    openid,
    patron_on_wechat,
    served,
    text_xml,
    wechat_crm,
)

BUTTONS = [
    {"title": "Register", "payload": "/register_workshop"},
    {"title": "Not for me", "payload": "/deny"},
]


def test_buttons_are_kept_with_the_message_and_read_back_clean(crm: Engine) -> None:
    patron = add_patron(crm, "amy")
    with session_scope(crm) as session:
        with_buttons = send(
            session=session,
            channel="rest",
            recipient="rest:amy",
            text="Workshop on Monday",
            produced_by="campaign:1",
            patron_id=patron,
            buttons=[*BUTTONS, {"payload": "/untitled"}],
        )
        plain = send(session=session, channel="rest", recipient="rest:amy", text="hi", produced_by="staff:li")
    with session_scope(crm) as session:
        stored = session.get(OutboxMessage, with_buttons)
        assert stored is not None
        assert buttons_of(stored) == BUTTONS  # a button without a title cannot be shown: left out
        unbuttoned = session.get(OutboxMessage, plain)
        assert unbuttoned is not None
        assert (unbuttoned.buttons, buttons_of(unbuttoned)) == (None, [])
    replies = pending_replies(engine=crm, conversation_id="rest:amy", recipient_id="amy").replies
    assert replies == [
        {"recipient_id": "amy", "text": "Workshop on Monday", "buttons": BUTTONS},
        {"recipient_id": "amy", "text": "hi"},
    ]


def test_telegram_shows_them_as_an_inline_keyboard_under_the_last_piece(api: FakeTelegramAPI) -> None:  # noqa: F811
    long_text = "word " * 1000  # over Telegram's 4,096 characters: two messages

    async def once() -> str:
        bot = make_bot(token=TOKEN, api_url=api.url)
        async with bot:
            message = OutboxMessage(
                id=1, channel="telegram", recipient="telegram:4646", text=long_text, buttons=BUTTONS
            )
            return (await outbox_sender(bot)(message)).outcome

    assert asyncio.run(once()) == "sent"
    first, last = api.sent(4646)
    assert "reply_markup" not in first.params
    keyboard = last.params["reply_markup"]["inline_keyboard"]
    assert [[(key["text"], key["callback_data"]) for key in row] for row in keyboard] == [
        [("Register", "/register_workshop")],
        [("Not for me", "/deny")],
    ]


def test_the_widget_shows_them_as_quick_replies() -> None:
    shown = widget_message(OutboxMessage(text="Workshop on Monday", buttons=BUTTONS))
    assert shown == {
        "text": "Workshop on Monday",
        "quick_replies": [
            {"content_type": "text", "title": "Register", "payload": "/register_workshop"},
            {"content_type": "text", "title": "Not for me", "payload": "/deny"},
        ],
    }
    assert widget_message(OutboxMessage(text="hi")) == {"text": "hi"}


def test_wechat_numbers_them_and_a_typed_number_or_title_is_the_payload(
    served: Served,  # noqa: F811
    wechat_crm: Engine,  # noqa: F811
    fake: FakeWeChatApi,  # noqa: F811
) -> None:
    patron = openid()
    sender = f"wechat:{patron}"
    wrote_at = time.time() - 60
    # The patron wrote a minute ago: within WeChat's 48-hour window.
    patron_id = patron_on_wechat(wechat_crm, patron, last_wrote=dt.timedelta(minutes=1))
    with session_scope(wechat_crm) as session:
        send(
            session=session,
            channel="wechat",
            recipient=sender,
            text="周一有数据管理讲座",
            produced_by="campaign:7",
            patron_id=patron_id,
            buttons=BUTTONS,
        )
    dispatch(wechat_crm, fake)
    assert fake.messages_to(patron) == ["周一有数据管理讲座\n1. Register\n2. Not for me"]

    # The tracker has no buttons since the patron last wrote (no Rasa turn made this message).
    store = TrackerStore({sender: Tracker([{"event": "user", "text": "hello", "timestamp": wrote_at}])})
    served.app.ctx.agent = type("Agent", (), {"tracker_store": store})()
    served.post(text_xml(patron, 7001, "1"))
    served.post(text_xml(patron, 7002, "not for me"))
    served.post(text_xml(patron, 7003, "3"))
    assert [(text, meta) for _, text, meta in served.bot.heard] == [
        ("/register_workshop", {"typed": "1"}),
        ("/deny", {"typed": "not for me"}),
        ("3", {}),
    ]


def test_only_options_sent_since_the_patron_last_wrote_count(crm: Engine) -> None:
    patron = add_patron(crm, "amy")
    with session_scope(crm) as session:
        send(
            session=session,
            channel="rest",
            recipient="rest:amy",
            text="old",
            produced_by="campaign:1",
            patron_id=patron,
            buttons=BUTTONS[:1],
        )
    pending_replies(engine=crm, conversation_id="rest:amy", recipient_id="amy")  # delivered now
    since = time.time()
    time.sleep(0.01)
    with session_scope(crm) as session:
        send(
            session=session,
            channel="rest",
            recipient="rest:amy",
            text="new",
            produced_by="campaign:2",
            patron_id=patron,
            buttons=BUTTONS[1:],
        )
    after = dt.datetime.fromtimestamp(since, tz=dt.UTC)
    with session_scope(crm) as session:
        # The new one is not delivered yet: nothing offered after `since`.
        assert buttons_sent_since(session=session, recipient="rest:amy", since=after) == []
        assert buttons_sent_since(session=session, recipient="rest:amy", since=None) == BUTTONS[:1]
    pending_replies(engine=crm, conversation_id="rest:amy", recipient_id="amy")
    with session_scope(crm) as session:
        assert buttons_sent_since(session=session, recipient="rest:amy", since=after) == BUTTONS[1:]
    assert last_written([{"event": "user", "timestamp": 5.0}, {"event": "bot"}]) == 5.0
    assert last_written([{"event": "bot"}]) is None


def test_a_dispatcher_sends_the_buttons_it_finds(crm: Engine) -> None:
    """The dispatcher hands the row, buttons included, to the channel's sender."""
    patron = add_patron(crm, "amy")
    with session_scope(crm) as session:
        send(
            session=session,
            channel="push",
            recipient="push:amy",
            text="t",
            produced_by="campaign:1",
            patron_id=patron,
            buttons=BUTTONS,
        )
    seen: list[list[dict[str, str]]] = []

    async def sender(message: OutboxMessage) -> Attempt:
        seen.append(buttons_of(message))
        return SENT

    outbox = Dispatcher(engine=crm)
    outbox.register("push", sender)
    asyncio.run(outbox.drain_once())
    assert seen == [BUTTONS]
