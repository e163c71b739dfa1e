"""End to end: a real `patronbot run` with WeChat on, against the fake WeChat API: every MsgId handled
once however often WeChat delivers it, sources recorded, staff replies sent within the 48-hour window."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from wechatpy.utils import WeChatSigner

from bot.crm.database import make_engine, session_scope
from bot.crm.models import ChannelIdentity, ChannelUpdate, DeliveryAttempt, Interaction, OutboxMessage
from bot.outbound.outbox import send
from tests.e2e.conftest import RunningBot, start_bot, stop_bot
from tests.fakes.wechat_api import FakeWeChatApi

pytestmark = pytest.mark.rasa

SERVER_TOKEN = "e2e-wechat-server-token"
ACCOUNT = "gh_e2e_library"
# MsgIds in the reliability run, over this many patrons (PATRONBOT_TEST_WECHAT_UPDATES=1000 for the
# issue's full run; the default keeps it to a minute or two on 2 cores).
UPDATES = int(os.environ.get("PATRONBOT_TEST_WECHAT_UPDATES", "120"))
PATRONS = max(1, UPDATES // 20)
QUESTIONS = [
    "图书馆几点开门",
    "What time does the library close",
    "怎么续借图书",
    "How do I renew a book",
    "wifi 密码是什么",
    "Can I print in the library",
    "借书要带什么",
    "谢谢",
]


def signed_url(base: str) -> str:
    stamp, nonce = str(int(time.time())), f"n{random.randrange(10**9)}"
    signer = WeChatSigner()
    signer.add_data(SERVER_TOKEN, stamp, nonce)
    return f"{base}?{urlencode({'signature': signer.signature, 'timestamp': stamp, 'nonce': nonce})}"


def push(base: str, body: str) -> tuple[int, str]:
    request = urllib.request.Request(signed_url(base), data=body.encode("utf-8"), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def text_xml(openid: str, msg_id: int, content: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def event_xml(openid: str, event: str, key: str) -> str:
    return (
        f"<xml><ToUserName>{ACCOUNT}</ToUserName><FromUserName>{openid}</FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType>event</MsgType><Event>{event}</Event>"
        f"<EventKey>{key}</EventKey></xml>"
    )


def wait_for(check: object, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWeChatApi]:
    api = FakeWeChatApi().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def wechat_bot(
    trained_model: Path, tmp_path_factory: pytest.TempPathFactory, fake: FakeWeChatApi
) -> Iterator[RunningBot]:
    env = {
        "PATRONBOT_WECHAT_TOKEN": SERVER_TOKEN,
        "PATRONBOT_WECHAT_APPID": fake.appid,
        "PATRONBOT_WECHAT_SECRET": fake.secret,
        "PATRONBOT_WECHAT_API_URL": fake.url,
    }
    bot = start_bot(tmp_path_factory.mktemp("wechat-bot"), trained_model, env)
    assert "WeChat: http://" in bot.log.read_text(errors="replace")
    yield bot
    assert stop_bot(bot) == 0, bot.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def crm(wechat_bot: RunningBot) -> Iterator[Engine]:
    engine = make_engine(wechat_bot.crm_url)
    yield engine
    engine.dispose()


def webhook(bot: RunningBot) -> str:
    return bot.webhook.replace("/webhooks/rest/webhook", "/webhooks/wechat/webhook")


def inbound_texts(crm: Engine, openid: str) -> list[str]:
    with Session(crm, future=True) as session:
        return [
            str(text)
            for text in session.execute(
                select(Interaction.text)
                .join(ChannelIdentity, ChannelIdentity.patron_id == Interaction.patron_id)
                .where(
                    ChannelIdentity.channel == "wechat",
                    ChannelIdentity.external_id == openid,
                    Interaction.direction == "in",
                )
            ).scalars()
        ]


def test_every_msgid_gets_one_turn_and_one_reply_however_often_wechat_delivers_it(
    wechat_bot: RunningBot, fake: FakeWeChatApi, crm: Engine
) -> None:
    rng = random.Random(24)
    base = webhook(wechat_bot)
    openids = [f"oE2E{index:04d}reliability{rng.randrange(10**6):06d}" for index in range(PATRONS)]
    sent: dict[int, tuple[str, str]] = {}
    deliveries: list[int] = []
    for number in range(UPDATES):
        msg_id = 7_000_000_000 + number
        sent[msg_id] = (openids[number % PATRONS], f"{rng.choice(QUESTIONS)} ({number})")
        deliveries += [msg_id] * rng.choice((1, 1, 2, 3))
    rng.shuffle(deliveries)
    # Some redeliveries at the same moment as the first: a burst of one MsgId side by side.
    for msg_id in list(sent)[:: max(1, UPDATES // 10)]:
        deliveries += [msg_id, msg_id]

    def deliver(msg_id: int) -> tuple[int, int, str]:
        openid, text = sent[msg_id]
        status, body = push(base, text_xml(openid, msg_id, text))
        return msg_id, status, body

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(deliver, deliveries))
    assert {status for _, status, _ in answers} == {200}
    passive: Counter[str] = Counter()
    for _, _, body in answers:
        if body != "success":
            reply = ElementTree.fromstring(body)
            assert reply.findtext("FromUserName") == ACCOUNT
            passive[str(reply.findtext("ToUserName"))] += 1
    expected = Counter(openid for openid, _ in sent.values())

    def replied() -> Counter[str]:
        return passive + Counter({openid: len(fake.messages_to(openid)) for openid in openids})

    wait_for(lambda: replied() == expected, "one reply per MsgId (passive or through the API)")
    for openid in openids:
        wanted = sorted(text for who, text in sent.values() if who == openid)
        wait_for(
            lambda openid=openid, wanted=wanted: sorted(inbound_texts(crm, openid)) == wanted, "the CRM rows"
        )
    with Session(crm, future=True) as session:
        handled = session.execute(
            select(func.count())
            .select_from(ChannelUpdate)
            .where(ChannelUpdate.channel == "wechat", ChannelUpdate.handled_at.is_not(None))
        ).scalar_one()
    assert handled == UPDATES
    assert replied() == expected  # still once each, after everything settled


def test_a_qr_code_follow_is_greeted_and_its_scene_becomes_the_source(
    wechat_bot: RunningBot, crm: Engine
) -> None:
    openid = "oE2Eposter000000000000000001"
    status, body = push(webhook(wechat_bot), event_xml(openid, "subscribe", "qrscene_poster-east-gate"))
    assert status == 200
    assert ElementTree.fromstring(body).findtext("Content")

    def source() -> str | None:
        with Session(crm, future=True) as session:
            return session.execute(
                select(ChannelIdentity.source).where(
                    ChannelIdentity.channel == "wechat", ChannelIdentity.external_id == openid
                )
            ).scalar_one_or_none()

    wait_for(lambda: source() == "poster-east-gate", "the source in the CRM")


def test_a_staff_reply_is_sent_within_the_window_and_skipped_outside_it(
    wechat_bot: RunningBot, fake: FakeWeChatApi, crm: Engine
) -> None:
    base = webhook(wechat_bot)
    recent, lapsed = "oE2Estaffreply0000000000recent", "oE2Estaffreply0000000000lapsed"
    for number, openid in enumerate((recent, lapsed)):
        status, _ = push(base, text_xml(openid, 8_000_000_000 + number, "我想问个问题"))
        assert status == 200
        wait_for(
            lambda openid=openid: inbound_texts(crm, openid) == ["我想问个问题"], "the patron in the CRM"
        )
    with session_scope(crm) as session:  # the second patron last wrote three days ago
        session.execute(
            update(ChannelUpdate)
            .where(ChannelUpdate.sender == f"wechat:{lapsed}")
            .values(received_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))
        )
    with session_scope(crm) as session:
        ids = [
            send(
                session=session,
                channel="wechat",
                recipient=f"wechat:{who}",
                text=text,
                produced_by="staff:li",
            )
            for who, text in (
                (recent, "馆员回复：书已为您预留。"),
                (lapsed, "Librarian: your book is ready."),
            )
        ]
    wait_for(
        lambda: fake.messages_to(recent)[-1:] == ["馆员回复：书已为您预留。"], "the staff reply at WeChat"
    )

    def outcomes() -> list[tuple[str, str, str | None]]:
        with Session(crm, future=True) as session:
            return [
                (str(status), str(outcome), reason)
                for status, outcome, reason in session.execute(
                    select(OutboxMessage.status, DeliveryAttempt.outcome, DeliveryAttempt.reason)
                    .join(DeliveryAttempt, DeliveryAttempt.outbox_id == OutboxMessage.id)
                    .where(OutboxMessage.id.in_(ids))
                    .order_by(OutboxMessage.id)
                ).all()
            ]

    wait_for(lambda: len(outcomes()) == 2, "both attempts recorded")
    assert outcomes() == [("delivered", "sent", None), ("skipped", "skipped", "window_closed")]
    assert "Librarian: your book is ready." not in [
        call.body.get("text", {}).get("content") for call in fake.calls if isinstance(call.body, dict)
    ]


# The kill run: MsgIds over KILL_PATRONS patrons, the Rasa server SIGKILLed once mid-run.
KILL_UPDATES, KILL_PATRONS = 40, 8


def push_until_answered(base: str, body: str, deadline: float) -> tuple[int, str]:
    """A push as WeChat sends it: asked again while no answer comes (the server is down, say)."""
    while time.monotonic() < deadline:
        try:
            status, text = push(base, body)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status, text = 0, ""
        if status == 200:
            return status, text
        time.sleep(0.5)
    raise AssertionError("a push was never answered 200")


def turns_by_message_id(bot: RunningBot) -> Counter[str]:
    with sqlite3.connect(bot.data_dir / "rasa-tracker.db") as connection:
        rows = connection.execute("SELECT data FROM events WHERE type_name = 'user'").fetchall()
    return Counter(str(json.loads(row[0]).get("message_id")) for row in rows)


def test_no_push_answered_200_is_lost_or_turned_twice_when_the_server_is_killed(
    wechat_bot: RunningBot, fake: FakeWeChatApi, crm: Engine
) -> None:
    """The server is killed with pushes in flight: every MsgId still gets exactly one turn (a push taken
    over finds a turn Rasa saved before the kill) and one interaction, and every patron gets a reply for
    each (passive or through the API; one in flight at the kill may come twice, none is lost)."""
    rng = random.Random(51)
    base = webhook(wechat_bot)
    openids = [f"oE2Ekill{index:04d}x{rng.randrange(10**6):06d}" for index in range(KILL_PATRONS)]
    sent = {
        9_000_000_000 + number: (openids[number % KILL_PATRONS], f"{rng.choice(QUESTIONS)} [{number}]")
        for number in range(KILL_UPDATES)
    }
    deliveries = [msg_id for msg_id in sent for _ in range(rng.choice((1, 1, 2)))]
    rng.shuffle(deliveries)
    deadline = time.monotonic() + 300
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = []
        for index, msg_id in enumerate(deliveries):
            if index == len(deliveries) // 2:
                os.kill(wechat_bot.child_pid("--model", wait=120), signal.SIGKILL)
            openid, text = sent[msg_id]
            futures.append(pool.submit(push_until_answered, base, text_xml(openid, msg_id, text), deadline))
            time.sleep(0.05)
        answers = [future.result() for future in futures]
    keys = [str(msg_id) for msg_id in sent]

    def all_handled() -> bool:
        with Session(crm, future=True) as session:
            handled = session.execute(
                select(func.count())
                .select_from(ChannelUpdate)
                .where(
                    ChannelUpdate.channel == "wechat",
                    ChannelUpdate.update_key.in_(keys),
                    ChannelUpdate.handled_at.is_not(None),
                )
            ).scalar_one()
        return int(handled) == KILL_UPDATES

    # Pushes the killed process held are taken over once their lease (60 s) runs out.
    wait_for(all_handled, "every push handled", timeout=240)
    turns = turns_by_message_id(wechat_bot)
    assert {turns[f"wechat:{msg_id}"] for msg_id in sent} == {1}
    expected = Counter(openid for openid, _ in sent.values())
    passive = Counter(
        str(ElementTree.fromstring(body).findtext("ToUserName")) for _, body in answers if body != "success"
    )

    def replied() -> Counter[str]:
        return passive + Counter({openid: len(fake.messages_to(openid)) for openid in openids})

    wait_for(lambda: not expected - replied(), "a reply for every MsgId", timeout=60)
    assert sum((replied() - expected).values()) <= 6, "more replies sent twice than pushes in flight"
    wanted = sorted(sent.values())

    def recorded() -> list[tuple[str, str]]:
        return sorted((openid, text) for openid in openids for text in inbound_texts(crm, openid))

    deadline = time.monotonic() + 90
    while recorded() != wanted and time.monotonic() < deadline:
        time.sleep(0.5)
    assert recorded() == wanted  # one interaction per MsgId: none lost, none twice
