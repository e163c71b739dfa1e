"""The WeChat channel: signed fresh pushes only, each handled once, answered within 5 s or through the API,
and staff replies sent within the 48-hour window (or as a template), with the access token shared."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered, UserUttered
from sanic import Sanic
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from wechatpy.utils import WeChatSigner

import bot.channels.updates as channel_updates
import connectors.wechat as wechat_channel
from bot.channels.quiet import QUIET
from bot.channels.updates import record_update
from bot.channels.wechat_api import WINDOW, WeChatApi, WeChatSender
from bot.crm.database import make_engine, session_scope
from bot.crm.models import (
    ChannelIdentity,
    ChannelToken,
    ChannelUpdate,
    DeliveryAttempt,
    OutboxMessage,
    Patron,
)
from bot.outbound.dispatcher import Dispatcher
from bot.outbound.outbox import send
from bot.settings import get_settings
from connectors.rest import crm_engine
from connectors.wechat import WeChatInput
from connectors.wechat_messages import ONLY_TEXT, numbered_payload, reply_text
from tests.fakes.wechat_api import CUSTOM_SEND, TEMPLATE_SEND, TOKEN, FakeWeChatApi, Fault

SERVER_TOKEN = "patronbot-wechat-server-token"
ACCOUNT = "gh_library"
WEBHOOK = "/webhooks/wechat/webhook"


def openid() -> str:
    return "o" + uuid.uuid4().hex[:27]


def signed(
    *, timestamp: int | None = None, nonce: str = "n0nce", token: str = SERVER_TOKEN
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signer = WeChatSigner()
    signer.add_data(token, stamp, nonce)
    return {"signature": signer.signature, "timestamp": stamp, "nonce": nonce}


def text_xml(sender: str, msg_id: int | str, content: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    ).encode()


def event_xml(sender: str, event: str, key: str | None = None, created: int = 1_700_000_000) -> bytes:
    event_key = f"<EventKey><![CDATA[{key}]]></EventKey>" if key is not None else ""
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event>{event_key}</xml>"
    ).encode()


def message_xml(sender: str, msg_id: int, kind: str, extra: str = "") -> bytes:
    return (
        f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{sender}</FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType>{kind}</MsgType>{extra}<MsgId>{msg_id}</MsgId></xml>"
    ).encode()


@dataclass
class Bot:
    """Rasa's part, played: answers "bot: TEXT", slowly for the texts in `slow`, with buttons for "menu"."""

    heard: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    message_ids: list[str | None] = field(default_factory=list)
    slow: dict[str, float] = field(default_factory=dict)
    fails: bool = False

    async def __call__(self, message: UserMessage) -> None:
        self.heard.append((message.sender_id, message.text, dict(message.metadata or {})))
        self.message_ids.append(message.message_id)
        await asyncio.sleep(self.slow.get(message.text, 0))
        if self.fails:
            raise RuntimeError("the action server is down")
        if message.text == "are you there?":  # a librarian has the conversation: the bot says nothing
            await message.output_channel.send_response(message.sender_id, {"custom": QUIET})
            return
        if message.text == "menu":
            buttons = [
                {"title": "Opening hours", "payload": "/ask_hours"},
                {"title": "Wi-Fi", "payload": "/ask_wifi"},
            ]
            await message.output_channel.send_text_with_buttons(message.sender_id, "Choose:", buttons)
            return
        await message.output_channel.send_text_message(message.sender_id, f"bot: {message.text}")


@dataclass
class Served:
    """The channel in a Sanic app on its own event loop; `post` and `get` run a request to the end."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    channel: WeChatInput
    bot: Bot
    app: Sanic

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(work)

    def post(self, body: bytes, params: dict[str, str] | None = None) -> httpx.Response:
        return self.run(
            self.client.post(WEBHOOK, content=body, params=signed() if params is None else params)
        )

    def get(self, params: dict[str, str]) -> httpx.Response:
        return self.run(self.client.get(WEBHOOK, params=params))

    def settle(self) -> None:
        """Wait for every detached turn (and its push through the API) to finish."""
        while self.channel._running:
            self.run(asyncio.wait(set(self.channel._running), timeout=30))


@pytest.fixture
def fake() -> Iterator[FakeWeChatApi]:
    api = FakeWeChatApi().start()
    yield api
    api.stop()


@pytest.fixture
def wechat_crm(
    crm: Engine, crm_url: str, fake: FakeWeChatApi, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    """The channel's settings point at the test CRM and the fake API."""
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    monkeypatch.setenv("PATRONBOT_WECHAT_TOKEN", SERVER_TOKEN)
    monkeypatch.setenv("PATRONBOT_WECHAT_APPID", fake.appid)
    monkeypatch.setenv("PATRONBOT_WECHAT_SECRET", fake.secret)
    monkeypatch.setenv("PATRONBOT_WECHAT_API_URL", fake.url)
    get_settings.cache_clear()
    crm_engine.cache_clear()
    yield crm
    crm_engine(crm_url).dispose()
    crm_engine.cache_clear()


@pytest.fixture
def served(wechat_crm: Engine) -> Iterator[Served]:
    Sanic.test_mode = True
    loop = asyncio.new_event_loop()
    bot = Bot()
    channel = WeChatInput.from_credentials(None)
    app = Sanic(f"wechat_{uuid.uuid4().hex[:8]}")
    app.blueprint(channel.blueprint(bot), url_prefix="/webhooks/wechat")
    events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()

    async def lifespan_send(event: dict[str, str]) -> None:
        if event["type"] == "lifespan.startup.complete":
            started.set()
        if event["type"] == "lifespan.shutdown.complete":
            stopped.set()

    async def boot() -> asyncio.Task[Any]:
        await events.put({"type": "lifespan.startup"})
        server = asyncio.ensure_future(app({"type": "lifespan"}, events.get, lifespan_send))
        await asyncio.wait_for(started.wait(), 10)
        return server

    server = loop.run_until_complete(boot())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bot")
    ready = Served(loop=loop, client=client, channel=channel, bot=bot, app=app)
    try:
        yield ready
    finally:
        ready.settle()
        loop.run_until_complete(events.put({"type": "lifespan.shutdown"}))
        loop.run_until_complete(asyncio.wait_for(stopped.wait(), 15))
        loop.run_until_complete(client.aclose())
        server.cancel()
        loop.run_until_complete(asyncio.gather(server, return_exceptions=True))
        loop.close()


def stored_updates(engine: Engine) -> int:
    with Session(engine, future=True) as session:
        return int(session.execute(select(func.count()).select_from(ChannelUpdate)).scalar_one())


def reply_content(answer: httpx.Response) -> str:
    assert answer.status_code == 200, answer.text
    assert "<MsgType><![CDATA[text]]></MsgType>" in answer.text
    return answer.text.split("<Content><![CDATA[", 1)[1].split("]]></Content>", 1)[0]


# --- who may push -------------------------------------------------------------------------------------


def test_the_server_url_handshake_echoes_only_under_a_valid_signature(served: Served) -> None:
    good = served.get({**signed(), "echostr": "1234567890"})
    assert (good.status_code, good.text) == (200, "1234567890")
    wrong = served.get({**signed(token="not-the-token"), "echostr": "1234567890"})
    missing = served.get({"echostr": "1234567890"})
    assert [wrong.status_code, missing.status_code] == [403, 403]
    assert "1234567890" not in wrong.text + missing.text


def test_a_push_without_the_right_signature_is_refused_and_nothing_is_stored(served: Served) -> None:
    body = text_xml(openid(), 1001, "hello")
    forged = signed(token="guessed")
    tampered = {**signed(), "nonce": "other"}
    for params in (forged, tampered, {}, {"timestamp": str(int(time.time()))}):
        answer = served.post(body, params)
        assert answer.status_code == 403, params
    served.settle()
    assert served.bot.heard == []
    assert stored_updates(served.channel.engine) == 0


def test_an_old_or_future_timestamp_is_refused_as_a_replay(served: Served) -> None:
    now = int(time.time())
    for stamp in (now - 301 - 5, now + 301 + 5, 0):
        answer = served.post(text_xml(openid(), 1002, "hi"), signed(timestamp=stamp))
        assert answer.status_code == 403
        assert "replay" in answer.text
    assert stored_updates(served.channel.engine) == 0
    fresh = served.post(text_xml(openid(), 1003, "hi"), signed(timestamp=now - 240))
    assert reply_content(fresh) == "bot: hi"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<xml><ToUserName>gh</ToUserName><FromUserName>oBomb</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&lol4;</Content><MsgId>1</MsgId></xml>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<xml><ToUserName>gh</ToUserName><FromUserName>oSteal</FromUserName><CreateTime>1</CreateTime>
<MsgType>text</MsgType><Content>&secret;</Content><MsgId>2</MsgId></xml>"""


BAD_BODIES = [
    (BILLION_LAUGHS, 400, "DTD or entity"),
    (EXTERNAL_ENTITY, 400, "DTD or entity"),
    (b"<xml><ToUserName>gh</ToUserName>", 400, "not well-formed"),
    (b"not xml at all", 400, "not well-formed"),
    (b"", 400, "not well-formed"),
    (b"<xml>\xff\xfe</xml>", 400, "UTF-8"),
    (b"<msg><FromUserName>oA</FromUserName></msg>", 400, "<xml>"),
    (
        b"<xml><ToUserName>gh</ToUserName><MsgType>text</MsgType><Content>hi</Content></xml>",
        400,
        "FromUserName",
    ),
    (b"<xml><ToUserName>gh</ToUserName><Encrypt>abc</Encrypt></xml>", 400, "plain-text mode"),
    (message_xml("o' OR 1=1", 5, "text", "<Content>hi</Content>"), 400, "not an openid"),
    (
        b"<xml><ToUserName>gh</ToUserName><FromUserName>oA</FromUserName><MsgType>text</MsgType></xml>",
        400,
        "MsgId",
    ),
    (message_xml("oA", 6, "text", "<Content>a</Content><Content>b</Content>"), 400, "twice"),
    (message_xml("oA", 7, "text", "<Content>   </Content>"), 400, "empty"),
    (message_xml("oA", 8, "text", "<Content>" + "x" * 70_000 + "</Content>"), 413, "larger than"),
]


@pytest.mark.parametrize(
    ("body", "status", "reason"), BAD_BODIES, ids=[reason for _, _, reason in BAD_BODIES]
)
def test_a_bad_body_gets_a_4xx_nothing_is_stored_and_the_server_keeps_serving(
    served: Served, body: bytes, status: int, reason: str
) -> None:
    answer = served.post(body)
    assert answer.status_code == status
    assert reason in answer.text
    assert stored_updates(served.channel.engine) == 0
    assert served.bot.heard == []
    assert reply_content(served.post(text_xml(openid(), 1009, "still there?"))) == "bot: still there?"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda text: f"<xml>{text}</xml>".encode()),
        st.dictionaries(
            st.sampled_from(
                ["ToUserName", "FromUserName", "MsgType", "Content", "MsgId", "Event", "CreateTime"]
            ),
            st.text(max_size=30),
        ).map(
            lambda fields: (
                "<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>"
            ).encode()
        ),
    ),
    params=st.dictionaries(st.sampled_from(["signature", "timestamp", "nonce", "x"]), st.text(max_size=20)),
    sign=st.booleans(),
)
def test_fuzzed_pushes_never_get_a_5xx(
    served: Served, body: bytes, params: dict[str, str], sign: bool
) -> None:
    before = stored_updates(served.channel.engine)
    answer = served.post(body, signed() if sign else params)
    assert answer.status_code < 500
    if answer.status_code != 200:
        assert stored_updates(served.channel.engine) == before


# --- turns ---------------------------------------------------------------------------------------------


def test_a_text_is_answered_passively_once_and_a_redelivery_gets_success(served: Served) -> None:
    patron = openid()
    first = served.post(text_xml(patron, 2001, "图书馆几点开门"))
    assert reply_content(first) == "bot: 图书馆几点开门"
    assert f"<ToUserName><![CDATA[{patron}]]></ToUserName>" in first.text
    assert f"<FromUserName><![CDATA[{ACCOUNT}]]></FromUserName>" in first.text
    again = served.post(text_xml(patron, 2001, "图书馆几点开门"))
    assert (again.status_code, again.text) == (200, "success")
    served.settle()
    assert served.bot.heard == [(f"wechat:{patron}", "图书馆几点开门", {})]
    with Session(served.channel.engine, future=True) as session:
        row = session.get(ChannelUpdate, ("wechat", "2001"))
        assert row is not None
        assert (row.sender, row.body, row.handled_at is not None) == (f"wechat:{patron}", None, True)


def test_concurrent_duplicates_give_one_turn_and_one_reply(served: Served) -> None:
    patron = openid()
    body = text_xml(patron, 2002, "hello")

    async def together() -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(served.client.post(WEBHOOK, content=body, params=signed()) for _ in range(4))
            )
        )

    answers = served.run(together())
    served.settle()
    assert sorted(answer.text == "success" for answer in answers) == [False, True, True, True]
    assert len(served.bot.heard) == 1


def test_a_slow_turn_answers_success_and_its_replies_go_through_the_api_once(
    served: Served, fake: FakeWeChatApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wechat_channel, "PASSIVE_WITHIN", 0.3)
    served.bot.slow["a long question"] = 1.0
    patron = openid()
    body = text_xml(patron, 2003, "a long question")
    first = served.post(body)
    assert (first.status_code, first.text) == (200, "success")
    redelivered = served.post(body)  # WeChat asks again while the turn still runs
    assert redelivered.text == "success"
    served.settle()
    assert fake.messages_to(patron) == ["bot: a long question"]
    assert len(served.bot.heard) == 1


def test_a_turn_that_outlasts_the_lease_is_held_not_taken_over_by_its_own_process(
    wechat_crm: Engine, fake: FakeWeChatApi, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A queue of slow turns may outlast the lease: the process renews its claims as Telegram's does, so
    the sweeper does not take the push over and run its turn a second time."""
    monkeypatch.setattr(channel_updates, "LEASE", dt.timedelta(seconds=0.5))
    monkeypatch.setattr(wechat_channel, "SWEEP_EVERY", 0.1)
    monkeypatch.setattr(wechat_channel, "PASSIVE_WITHIN", 0.2)
    served: Served = request.getfixturevalue("served")
    served.bot.slow["a very long question"] = 2.0
    patron = openid()
    assert served.post(text_xml(patron, 6400, "a very long question")).text == "success"
    served.settle()
    assert len(served.bot.heard) == 1
    assert fake.messages_to(patron) == ["bot: a very long question"]


def test_a_failed_turn_gets_an_apology_not_an_error(served: Served) -> None:
    served.bot.fails = True
    assert "抱歉" in reply_content(served.post(text_xml(openid(), 2004, "借书要带什么")))
    assert "Sorry" in reply_content(served.post(text_xml(openid(), 2005, "what do I need to borrow a book")))


def test_a_turn_the_bot_answers_with_silence_gets_no_reply_and_no_apology(
    served: Served, fake: FakeWeChatApi
) -> None:
    patron = openid()
    answer = served.post(text_xml(patron, 2006, "are you there?"))
    assert (answer.status_code, answer.text) == (200, "success")
    served.settle()
    assert fake.messages_to(patron) == []


def test_following_by_a_posters_qr_code_greets_and_records_the_source(served: Served) -> None:
    patron = openid()
    greeting = served.post(event_xml(patron, "subscribe", "qrscene_poster-east-2026"))
    assert reply_content(greeting) == "bot: /greet"
    scanned = served.post(event_xml(patron, "SCAN", "campaign-7", created=1_700_000_100))
    assert reply_content(scanned) == "bot: /greet"
    plain = served.post(event_xml(openid(), "subscribe", ""))
    assert reply_content(plain) == "bot: /greet"
    assert [(text, meta) for _, text, meta in served.bot.heard] == [
        ("/greet", {"source": "poster-east-2026"}),
        ("/greet", {"source": "campaign-7"}),
        ("/greet", {}),
    ]
    assert served.post(event_xml(patron, "subscribe", "qrscene_poster-east-2026")).text == "success"


def test_menu_clicks_are_payloads_or_text_and_voice_is_read_by_its_recognition(served: Served) -> None:
    patron = openid()
    served.post(event_xml(patron, "CLICK", "/ask_hours", created=1_700_000_001))
    served.post(event_xml(patron, "CLICK", "opening hours", created=1_700_000_002))
    voice = message_xml(
        patron, 3001, "voice", "<MediaId>m</MediaId><Format>amr</Format><Recognition>几点关门</Recognition>"
    )
    assert reply_content(served.post(voice)) == "bot: 几点关门"
    assert [text for _, text, _ in served.bot.heard] == ["/ask_hours", "opening hours", "几点关门"]
    view = served.post(event_xml(patron, "VIEW", "https://library.example/", created=1_700_000_003))
    assert view.text == "success"


@pytest.mark.parametrize(
    "extra",
    [
        ("image", "<PicUrl>http://x/y.jpg</PicUrl><MediaId>m</MediaId>"),
        ("voice", "<MediaId>m</MediaId><Format>amr</Format>"),
        (
            "location",
            "<Location_X>23.1</Location_X><Location_Y>113.3</Location_Y><Scale>20</Scale><Label>L</Label>",
        ),
        ("link", "<Title>t</Title><Description>d</Description><Url>http://x</Url>"),
        ("video", "<MediaId>m</MediaId><ThumbMediaId>t</ThumbMediaId>"),
    ],
)
def test_what_is_not_text_gets_a_polite_answer_without_a_turn(served: Served, extra: tuple[str, str]) -> None:
    kind, fields = extra
    assert reply_content(served.post(message_xml(openid(), 4001, kind, fields))) == ONLY_TEXT
    assert served.bot.heard == []


def test_leaving_the_account_marks_the_patron_unreachable_and_following_again_reachable(
    served: Served,
) -> None:
    patron = openid()
    engine = served.channel.engine
    with session_scope(engine) as session:
        person = Patron(language="zh")
        session.add(person)
        session.flush()
        session.add(ChannelIdentity(patron_id=person.id, channel="wechat", external_id=patron))
        patron_id = person.id

    def reachable() -> bool:
        with Session(engine, future=True) as session:
            found = session.get(Patron, patron_id)
            assert found is not None
            return bool(found.reachable)

    left = served.post(event_xml(patron, "unsubscribe", ""))
    assert (left.status_code, left.text) == (200, "success")
    assert reachable() is False
    assert served.bot.heard == []
    served.post(event_xml(patron, "subscribe", "", created=1_700_000_500))
    served.settle()
    assert reachable() is True


def test_buttons_become_numbered_options_the_patron_can_type() -> None:
    messages = [
        {"text": "Choose:", "buttons": [{"title": "Opening hours", "payload": "/ask_hours"}]},
        {"text": "Or:", "buttons": [{"title": "Wi-Fi", "payload": "/ask_wifi"}]},
    ]
    assert reply_text(messages) == "Choose:\n1. Opening hours\n\nOr:\n2. Wi-Fi"
    buttons = [button for message in messages for button in message["buttons"]]
    assert numbered_payload("2", buttons) == "/ask_wifi"
    assert numbered_payload("１。", buttons) == "/ask_hours"
    assert numbered_payload("3", buttons) is None
    assert numbered_payload("12 books", buttons) is None


@dataclass
class Tracker:
    events: list[Any]


@dataclass
class TrackerStore:
    trackers: dict[str, Tracker]

    async def retrieve(self, sender_id: str) -> Tracker | None:
        return self.trackers.get(sender_id)


def test_a_typed_option_number_or_title_is_the_buttons_payload(served: Served) -> None:
    patron = openid()
    offered = {
        "event": "bot",
        "text": "Choose:",
        "data": {
            "buttons": [
                {"title": "Opening hours", "payload": "/ask_hours"},
                {"title": "Wi-Fi", "payload": "/ask_wifi"},
            ]
        },
    }
    store = TrackerStore({f"wechat:{patron}": Tracker([{"event": "user", "text": "menu"}, offered])})
    served.app.ctx.agent = type("Agent", (), {"tracker_store": store})()
    served.post(text_xml(patron, 6001, "2"))
    served.post(text_xml(patron, 6002, "opening hours"))
    served.post(text_xml(patron, 6003, "7"))
    assert [(text, meta) for _, text, meta in served.bot.heard] == [
        ("/ask_wifi", {"typed": "2"}),
        ("/ask_hours", {"typed": "opening hours"}),
        ("7", {}),
    ]


def test_a_push_left_unhandled_by_a_process_that_died_is_taken_over(
    wechat_crm: Engine, fake: FakeWeChatApi, request: pytest.FixtureRequest
) -> None:
    patron = openid()
    body = text_xml(patron, 6100, "are you there").decode()
    record_update(engine=wechat_crm, channel="wechat", key="6100", sender=f"wechat:{patron}", body=body)
    with session_scope(wechat_crm) as session:  # its process died: the lease ran out
        session.execute(
            update(ChannelUpdate).values(claimed_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    served: Served = request.getfixturevalue("served")
    deadline = time.monotonic() + 20  # the sweeper looks at start-up: its turn is then in flight
    while not fake.messages_to(patron) and time.monotonic() < deadline:
        served.run(asyncio.sleep(0.05))
        served.settle()
    assert fake.messages_to(patron) == ["bot: are you there"]
    assert served.post(text_xml(patron, 6100, "are you there")).text == "success"
    with Session(wechat_crm, future=True) as session:
        row = session.get(ChannelUpdate, ("wechat", "6100"))
        assert row is not None
        assert row.handled_at is not None


def test_a_taken_over_push_whose_turn_happened_gets_its_replies_without_a_second_turn(
    wechat_crm: Engine, fake: FakeWeChatApi, request: pytest.FixtureRequest
) -> None:
    """The process died after Rasa saved the turn (found by its message id) and before the reply went:
    the reply goes, and the turn (an interaction, a rating, a complaint) is not made twice."""
    patron = openid()
    body = text_xml(patron, 6200, "where is the library").decode()
    record_update(engine=wechat_crm, channel="wechat", key="6200", sender=f"wechat:{patron}", body=body)
    with session_scope(wechat_crm) as session:
        session.execute(
            update(ChannelUpdate).values(claimed_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    turn = [
        UserUttered("earlier", message_id="wechat:6199"),
        BotUttered("earlier answer"),
        UserUttered("where is the library", message_id="wechat:6200"),
        BotUttered("On Main Street."),
        BotUttered("Open 8-22."),
    ]
    served: Served = request.getfixturevalue("served")
    served.app.ctx.agent = type(
        "Agent", (), {"tracker_store": TrackerStore({f"wechat:{patron}": Tracker(turn)})}
    )()
    deadline = time.monotonic() + 20
    while not fake.messages_to(patron) and time.monotonic() < deadline:
        served.run(asyncio.sleep(0.05))
        served.settle()
    assert fake.messages_to(patron) == ["On Main Street.\n\nOpen 8-22."]
    assert served.bot.heard == []


def test_a_push_reaches_rasa_with_its_msgid_as_the_message_id(served: Served) -> None:
    served.post(text_xml(openid(), 6300, "hello"))
    assert served.bot.message_ids == ["wechat:6300"]


def test_a_reply_that_holds_the_end_of_a_cdata_section_stays_whole(served: Served) -> None:
    answer = served.post(message_xml(openid(), 5001, "text", "<Content>a ]]&gt; b</Content>"))
    assert answer.status_code == 200
    from xml.etree import ElementTree

    assert ElementTree.fromstring(answer.text).findtext("Content") == "bot: a ]]> b"


# --- the access token ----------------------------------------------------------------------------------


def api_for(fake: FakeWeChatApi, url: str, **options: Any) -> tuple[WeChatApi, Engine]:
    engine = make_engine(url)
    return WeChatApi(
        engine=engine, appid=fake.appid, secret=fake.secret, base_url=fake.url, **options
    ), engine


def test_the_token_is_fetched_once_and_shared_by_every_process(
    crm_url: str, fake: FakeWeChatApi, crm: Engine
) -> None:
    first, engine_a = api_for(fake, crm_url)
    second, engine_b = api_for(fake, crm_url)
    assert first.send_text(openid="oA", text="one").outcome == "sent"
    assert second.send_text(openid="oB", text="two").outcome == "sent"
    assert fake.token_fetches == 1
    with Session(crm, future=True) as session:
        row = session.get(ChannelToken, f"wechat:{fake.appid}")
        assert row is not None
        assert row.value == fake.valid_token
    engine_a.dispose()
    engine_b.dispose()


def test_a_token_is_renewed_five_minutes_before_it_expires(
    crm_url: str, fake: FakeWeChatApi, crm: Engine
) -> None:
    api, engine = api_for(fake, crm_url)
    api.send_text(openid="oA", text="one")
    with session_scope(crm) as session:
        session.execute(
            update(ChannelToken).values(expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=4))
        )
    other, other_engine = api_for(fake, crm_url)  # a process that has no copy of its own
    assert other.send_text(openid="oA", text="two").outcome == "sent"
    assert fake.token_fetches == 2
    engine.dispose()
    other_engine.dispose()


def test_a_refused_token_is_renewed_once_and_the_call_retried(
    crm_url: str, fake: FakeWeChatApi, crm: Engine
) -> None:
    api, engine = api_for(fake, crm_url)
    api.send_text(openid="oA", text="one")
    fake.invalidate_token()  # someone fetched a token with the AppSecret elsewhere
    assert api.send_text(openid="oA", text="two").outcome == "sent"
    assert fake.token_fetches == 2
    fake.fail(CUSTOM_SEND, Fault(errcode=40001), Fault(errcode=40001), Fault(errcode=40001))
    attempt = api.send_text(openid="oA", text="three")
    assert (attempt.outcome, attempt.reason) == ("retry", "token_refused")
    assert fake.token_fetches == 3  # once, not once per refusal
    engine.dispose()


def test_two_processes_renewing_at_once_fetch_once(crm_url: str, fake: FakeWeChatApi, crm: Engine) -> None:
    seed, seed_engine = api_for(fake, crm_url)
    seed.send_text(openid="oA", text="one")
    with session_scope(crm) as session:
        session.execute(update(ChannelToken).values(expires_at=dt.datetime.now(dt.UTC)))
    fake.fail(TOKEN, Fault(delay=0.5))  # a slow fetch, so the other process surely waits for it
    apis = [api_for(fake, crm_url) for _ in range(2)]
    barrier = threading.Barrier(2)
    tokens: list[str] = []

    def renew(api: WeChatApi) -> None:
        barrier.wait()
        tokens.append(api.tokens.current())

    threads = [threading.Thread(target=renew, args=(api,)) for api, _ in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert fake.token_fetches == 2  # the seed's, and one renewal
    assert tokens == [fake.valid_token] * 2
    for _, engine in [*apis, (seed, seed_engine)]:
        engine.dispose()


# --- staff replies through the outbox -----------------------------------------------------------------


def patron_on_wechat(engine: Engine, external: str, *, last_wrote: dt.timedelta | None) -> int:
    with session_scope(engine) as session:
        person = Patron(language="zh")
        session.add(person)
        session.flush()
        session.add(ChannelIdentity(patron_id=person.id, channel="wechat", external_id=external))
        if last_wrote is not None:
            session.add(
                ChannelUpdate(
                    channel="wechat",
                    update_key=uuid.uuid4().hex,
                    sender=f"wechat:{external}",
                    received_at=dt.datetime.now(dt.UTC) - last_wrote,
                    handled_at=dt.datetime.now(dt.UTC),
                )
            )
        return int(person.id)


def staff_reply(engine: Engine, external: str, text: str) -> int:
    with session_scope(engine) as session:
        return send(
            session=session,
            channel="wechat",
            recipient=f"wechat:{external}",
            text=text,
            produced_by="staff:li",
        )


def dispatch(engine: Engine, fake: FakeWeChatApi, template_id: str = "", **options: Any) -> None:
    api = WeChatApi(engine=engine, appid=fake.appid, secret=fake.secret, base_url=fake.url, **options)
    outbox = Dispatcher(engine=engine)
    outbox.register("wechat", WeChatSender(api=api, engine=engine, template_id=template_id).send)
    asyncio.run(outbox.drain_once())


def outcome(engine: Engine, outbox_id: int) -> tuple[str, list[tuple[str, str | None]]]:
    with Session(engine, future=True) as session:
        message = session.get(OutboxMessage, outbox_id)
        assert message is not None
        attempts = session.execute(
            select(DeliveryAttempt.outcome, DeliveryAttempt.reason).where(
                DeliveryAttempt.outbox_id == outbox_id
            )
        ).all()
        return str(message.status), [(str(a), b) for a, b in attempts]


def test_a_staff_reply_within_the_window_is_a_customer_service_message(
    crm: Engine, fake: FakeWeChatApi
) -> None:
    patron_on_wechat(crm, "oWithin", last_wrote=dt.timedelta(hours=47))
    reply = staff_reply(crm, "oWithin", "您预约的书到了。")
    dispatch(crm, fake)
    assert fake.messages_to("oWithin") == ["您预约的书到了。"]
    assert outcome(crm, reply) == ("delivered", [("sent", None)])


def test_outside_the_window_a_staff_reply_is_skipped_and_never_attempted(
    crm: Engine, fake: FakeWeChatApi
) -> None:
    patron_on_wechat(crm, "oOld", last_wrote=WINDOW + dt.timedelta(minutes=5))
    patron_on_wechat(crm, "oNever", last_wrote=None)
    replies = [staff_reply(crm, "oOld", "Your book is here."), staff_reply(crm, "oNever", "Hello")]
    dispatch(crm, fake)
    assert [call.path for call in fake.calls] == []
    for reply in replies:
        assert outcome(crm, reply) == ("skipped", [("skipped", "window_closed")])


def test_outside_the_window_a_template_message_goes_when_one_is_set(crm: Engine, fake: FakeWeChatApi) -> None:
    patron_on_wechat(crm, "oOld", last_wrote=dt.timedelta(days=3))
    reply = staff_reply(crm, "oOld", "Your book is here.")
    dispatch(crm, fake, template_id="TPL-notice")
    [call] = fake.sent(TEMPLATE_SEND)
    assert call.body == {
        "touser": "oOld",
        "template_id": "TPL-notice",
        "data": {"content": {"value": "Your book is here."}},
    }
    assert fake.sent(CUSTOM_SEND) == []
    assert outcome(crm, reply) == ("delivered", [("sent", None)])


@pytest.mark.parametrize(
    ("fault", "status", "attempt"),
    [
        (Fault(errcode=45015), "skipped", ("skipped", "window_closed")),
        (Fault(errcode=43004), "failed", ("blocked", "unsubscribed")),
        (Fault(errcode=45047), "pending", ("retry", "quota_45047")),
        (Fault(status=502), "pending", ("retry", "http_502")),
        (Fault(errcode=-1), "pending", ("retry", "system_busy")),
        (Fault(delay=1.5), "unknown", ("unknown", "timeout")),
    ],
)
def test_wechats_answers_become_the_attempts_outcome(
    crm: Engine, fake: FakeWeChatApi, fault: Fault, status: str, attempt: tuple[str, str]
) -> None:
    patron_id = patron_on_wechat(crm, "oP", last_wrote=dt.timedelta(minutes=1))
    reply = staff_reply(crm, "oP", "Hello from the library")
    fake.fail(CUSTOM_SEND, fault)
    dispatch(crm, fake, timeout=(2.0, 0.5))
    assert outcome(crm, reply) == (status, [attempt])
    with Session(crm, future=True) as session:
        found = session.get(Patron, patron_id)
        assert found is not None
        assert found.reachable is (attempt[0] != "blocked")
    customer_service = [call for call in fake.calls if call.path == CUSTOM_SEND]
    assert len(customer_service) == 1  # never sent twice within one attempt
