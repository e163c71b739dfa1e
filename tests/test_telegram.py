"""The Telegram channel against the fake Bot API: the webhook's checks, once-only handling, turns and
their replies, takeover of abandoned updates, polling, and staff replies through the dispatcher."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import socket
import threading
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
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.channels.updates import record_update
from bot.crm.database import session_scope
from bot.crm.models import ChannelUpdate, DeliveryAttempt, OutboxMessage, Patron
from bot.crm.patrons import PatronKey, get_or_create_patron
from bot.outbound.outbox import send
from bot.settings import get_settings
from connectors.telegram import TelegramInput
from connectors.telegram_send import attempt_for, inline_keyboard, make_bot, outbox_sender
from connectors.telegram_updates import (
    MAX_BODY_BYTES,
    BadUpdateError,
    callback_data,
    parse_body,
    payload_of_key,
    read_update,
)
from tests.fakes.telegram_api import FakeTelegramAPI, Fault, callback_update, text_update

SECRET = "s3cret-token_for-tests"
TOKEN = "123456:TEST-token"
LONG_PAYLOAD = '/give_feedback{"rating": "5", "topic": "a long topic name that makes this payload too long"}'


# --- reading updates -----------------------------------------------------------------------------------


def test_start_with_a_deep_link_payload_is_a_greeting_with_its_source() -> None:
    incoming = read_update(text_update(1, 42, "/start poster-east_2026", language_code="zh-hans"))
    assert (incoming.kind, incoming.text, incoming.sender) == ("turn", "/greet", "telegram:42")
    assert incoming.metadata == {"language": "zh", "source": "poster-east_2026"}


def test_a_start_payload_telegram_would_not_send_is_not_kept() -> None:
    for payload in ("a b", "x" * 65, "<script>", "海报"):
        incoming = read_update(text_update(1, 42, f"/start {payload}"))
        assert incoming.text == "/greet"
        assert "source" not in incoming.metadata


def test_help_and_stop_are_the_greeting_and_the_opt_out() -> None:
    assert read_update(text_update(1, 42, "/help@LibraryBot")).text == "/greet"
    assert read_update(text_update(1, 42, "/stop")).text == "/unsubscribe"
    # Any other slash is read as words, never as an intent a patron could trigger by name.
    assert read_update(text_update(1, 42, "/privacy_delete")).text == "privacy delete"
    assert read_update(text_update(1, 42, '/greet{"x": 1}')).text == 'greet{"x": 1}'


def test_app_language_is_zh_for_any_chinese_code_else_en() -> None:
    assert read_update(text_update(1, 42, "hi", language_code="zh-TW")).metadata == {"language": "zh"}
    assert read_update(text_update(1, 42, "hi", language_code="de")).metadata == {"language": "en"}
    assert read_update(text_update(1, 42, "hi", language_code=None)).metadata == {}


def test_groups_channels_edits_and_unknown_updates_are_ignored() -> None:
    group = text_update(1, 42, "hi")
    group["message"]["chat"] = {"id": -100, "type": "supergroup"}
    edited = {"update_id": 2, "edited_message": text_update(2, 42, "hi")["message"]}
    post = {"update_id": 3, "channel_post": {"message_id": 1, "chat": {"id": -5, "type": "channel"}}}
    for ignored in (group, edited, post, {"update_id": 4, "poll": {}}, {"update_id": 5, "message": "x"}):
        assert read_update(ignored).kind == "ignored"


def test_photos_stickers_and_locations_get_the_text_only_answer() -> None:
    for key in ("photo", "sticker", "voice", "location", "document"):
        update = text_update(1, 42, "x")
        del update["message"]["text"]
        update["message"][key] = {}
        assert read_update(update).kind == "media"


def test_a_blocked_bot_is_a_kicked_member_update() -> None:
    kicked = {
        "update_id": 9,
        "my_chat_member": {"chat": {"id": 42, "type": "private"}, "new_chat_member": {"status": "kicked"}},
    }
    assert read_update(kicked).kind == "kicked"


def test_a_long_button_payload_travels_as_a_key_that_maps_back() -> None:
    key = callback_data(LONG_PAYLOAD)
    assert len(key.encode()) <= 64
    assert key != LONG_PAYLOAD
    assert payload_of_key(key, ["/affirm", LONG_PAYLOAD]) == LONG_PAYLOAD
    assert callback_data("/affirm") == "/affirm"
    markup = inline_keyboard(
        [{"title": "Rate", "payload": LONG_PAYLOAD}, {"title": "Yes", "payload": "/affirm"}]
    )
    assert markup is not None
    assert [row[0].callback_data for row in markup.inline_keyboard] == [key, "/affirm"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[1, 2]", "object"),
        (b'{"update_id": "7"}', "update_id"),
        (b'{"update_id": -1}', "update_id"),
        (b'{"update_id": true}', "update_id"),
    ],
)
def test_a_body_that_is_not_an_update_is_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadUpdateError, match=reason):
        parse_body(body)


# --- what a failed send means for the outbox -------------------------------------------------------------


def _caused(error: NetworkError, cause: BaseException) -> NetworkError:
    error.__cause__ = cause
    return error


def test_send_failures_map_to_outbox_outcomes() -> None:
    request = httpx.Request("POST", "http://x")
    assert attempt_for(RetryAfter(7)).outcome == "retry"
    assert attempt_for(RetryAfter(7)).retry_after == 7
    assert attempt_for(Forbidden("blocked")).outcome == "blocked"
    assert attempt_for(BadRequest("chat not found")).outcome == "failed"
    assert attempt_for(_caused(TimedOut(), httpx.ReadTimeout("t", request=request))).outcome == "unknown"
    assert attempt_for(_caused(TimedOut(), httpx.ConnectTimeout("t", request=request))).outcome == "retry"
    assert (
        attempt_for(_caused(NetworkError("x"), httpx.ConnectError("x", request=request))).outcome == "retry"
    )
    assert attempt_for(_caused(NetworkError("x"), httpx.ReadError("x", request=request))).outcome == "unknown"
    assert attempt_for(NetworkError("Internal Server Error (500)")).outcome == "retry"


# --- a served channel ----------------------------------------------------------------------------------


@dataclass
class FakeTracker:
    events: list[Any] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)

    def get_slot(self, name: str) -> Any:
        return self.slots.get(name)


class FakeStore:
    def __init__(self) -> None:
        self.trackers: dict[str, FakeTracker] = {}

    async def retrieve(self, sender: str) -> FakeTracker | None:
        return self.trackers.get(sender)

    async def retrieve_full_tracker(self, sender: str) -> FakeTracker | None:
        return self.trackers.get(sender)


@dataclass
class FakeAgent:
    """Stands in for Rasa: each message becomes a user event (with its message id) and a reply
    "bot: TEXT"; "buttons" is answered with two buttons."""

    tracker_store: FakeStore = field(default_factory=FakeStore)
    messages: list[UserMessage] = field(default_factory=list)

    async def handle(self, message: UserMessage) -> None:
        self.messages.append(message)
        await asyncio.sleep(0.01)
        tracker = self.tracker_store.trackers.setdefault(message.sender_id, FakeTracker())
        tracker.events.append(UserUttered(message.text, message_id=message.message_id))
        buttons = [{"title": "Yes", "payload": "/affirm"}, {"title": "Rate", "payload": LONG_PAYLOAD}]
        data = {"buttons": buttons} if message.text == "buttons" else {}
        tracker.events.append(BotUttered(f"bot: {message.text}", data=data))
        assert message.output_channel is not None
        if data:
            await message.output_channel.send_text_with_buttons(
                message.sender_id, f"bot: {message.text}", buttons
            )
        else:
            await message.output_channel.send_text_message(message.sender_id, f"bot: {message.text}")


@dataclass
class Served:
    url: str
    api: FakeTelegramAPI
    agent: FakeAgent
    engine: Engine
    loop: asyncio.AbstractEventLoop

    def post(self, update: object, *, secret: str | None = SECRET, **options: Any) -> httpx.Response:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        content = update if isinstance(update, bytes) else json.dumps(update).encode()
        return httpx.post(
            f"{self.url}/webhooks/telegram/webhook", content=content, headers=headers, **options
        )

    def rows(self) -> list[ChannelUpdate]:
        with Session(self.engine) as session:
            return list(session.execute(select(ChannelUpdate)).scalars())

    def handled(self, count: int) -> bool:
        return sum(1 for row in self.rows() if row.handled_at is not None) >= count


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(engine: Engine, api: FakeTelegramAPI, agent: FakeAgent) -> Iterator[Served]:
    """The Telegram channel on a real Sanic server, in a thread with its own event loop."""
    Sanic.test_mode = True
    app = Sanic(f"telegram_{uuid.uuid4().hex[:8]}")
    app.ctx.agent = agent
    app.blueprint(TelegramInput().blueprint(agent.handle), url_prefix="/webhooks/telegram")
    port = _free_port()
    loop = asyncio.new_event_loop()
    ready, done = threading.Event(), threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
            assert server is not None
            await server.startup()
            await server.before_start()
            await server.after_start()
            holder["server"] = server

        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(20)
    try:
        yield Served(url=f"http://127.0.0.1:{port}", api=api, agent=agent, engine=engine, loop=loop)
    finally:

        async def stop() -> None:
            server = holder["server"]
            await server.before_stop()
            server.close()
            await server.wait_closed()
            await server.after_stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        assert done.wait(10)


@pytest.fixture
def api() -> Iterator[FakeTelegramAPI]:
    with FakeTelegramAPI(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def telegram_env(crm_url: str, api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    monkeypatch.setenv("PATRONBOT_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("PATRONBOT_TELEGRAM_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("PATRONBOT_TELEGRAM_API_URL", api.url)
    get_settings.cache_clear()


@pytest.fixture
def served(telegram_env: None, crm: Engine, api: FakeTelegramAPI) -> Iterator[Served]:
    yield from serve(crm, api, FakeAgent())


def test_wrong_or_missing_secret_is_refused_and_nothing_is_stored(served: Served) -> None:
    for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
        answer = served.post(text_update(1, 42, "hello"), secret=secret)
        assert answer.status_code == 403
    assert served.rows() == []
    assert served.agent.messages == []


def test_bad_bodies_get_a_4xx_and_nothing_is_stored(served: Served) -> None:
    assert served.post(b"{not json").status_code == 400
    assert served.post(b"\xff\xfe\x00").status_code == 400
    assert served.post(b'{"message": {}}').status_code == 400
    assert served.post(b"x" * (MAX_BODY_BYTES + 1)).status_code == 413
    unknown = served.post({"update_id": 5, "message_reaction": {"chat": {"id": 42}}})
    assert unknown.status_code == 200
    assert served.rows() == []
    assert served.agent.messages == []


def test_text_is_recorded_answered_and_replied_once(served: Served) -> None:
    update = text_update(100, 42, "When do you open?", language_code="en-GB")
    answers = [served.post(update) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert served.api.wait_for(lambda: served.handled(1), 10)
    [message] = served.agent.messages
    assert (message.sender_id, message.text, message.message_id) == (
        "telegram:42",
        "When do you open?",
        "telegram:100",
    )
    assert message.metadata == {"language": "en"}
    [sent] = served.api.sent()
    assert sent.chat_id == 42
    assert sent.params["text"] == "bot: When do you open?"
    [row] = served.rows()
    assert row.sender == "telegram:42"
    assert row.body is None


def test_concurrent_duplicates_make_one_turn_and_one_reply(served: Served) -> None:
    updates = [text_update(200 + n, 50 + n % 3, f"question {n}") for n in range(12)]
    deliveries = [update for update in updates for _ in range(3)]

    async def deliver_all() -> list[int]:
        async with httpx.AsyncClient() as client:
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            url = f"{served.url}/webhooks/telegram/webhook"
            answers = await asyncio.gather(
                *(client.post(url, json=update, headers=headers) for update in deliveries)
            )
            return [answer.status_code for answer in answers]

    assert set(asyncio.run(deliver_all())) == {200}
    assert served.api.wait_for(lambda: served.handled(12), 20)
    assert sorted(message.text for message in served.agent.messages) == sorted(
        f"question {n}" for n in range(12)
    )
    assert sorted(call.params["text"] for call in served.api.sent()) == sorted(
        f"bot: question {n}" for n in range(12)
    )


def test_buttons_are_an_inline_keyboard_and_a_tap_is_its_payload(served: Served) -> None:
    assert served.post(text_update(300, 42, "buttons")).status_code == 200
    assert served.api.wait_for(lambda: len(served.api.sent()) == 1, 10)
    keyboard = served.api.sent()[0].params["reply_markup"]["inline_keyboard"]
    assert [row[0]["text"] for row in keyboard] == ["Yes", "Rate"]
    long_key = keyboard[1][0]["callback_data"]
    assert served.post(callback_update(301, 42, long_key, title="Rate")).status_code == 200
    assert served.api.wait_for(lambda: served.handled(2), 10)
    [answered] = served.api.calls_of("answerCallbackQuery")
    assert answered.params["callback_query_id"] == "cq301"
    tap = served.agent.messages[-1]
    assert tap.text == LONG_PAYLOAD
    assert tap.metadata == {"language": "en", "typed": "Rate"}


def test_a_photo_gets_the_text_only_answer_in_the_app_language_and_no_turn(served: Served) -> None:
    update = text_update(400, 42, "x", language_code="zh-hans")
    del update["message"]["text"]
    update["message"]["photo"] = [{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]
    assert served.post(update).status_code == 200
    assert served.api.wait_for(lambda: served.handled(1), 10)
    assert served.agent.messages == []
    [sent] = served.api.sent()
    assert "文字" in sent.params["text"]
    assert "text" not in sent.params["text"]


def test_start_gives_the_first_conversation_the_app_language(served: Served) -> None:
    assert served.post(text_update(500, 42, "/start library-web", language_code="zh")).status_code == 200
    assert served.api.wait_for(lambda: served.handled(1), 10)
    [message] = served.agent.messages
    assert message.text == '/greet{"language": "zh"}'
    assert message.metadata == {"language": "zh", "source": "library-web"}


def test_blocking_the_bot_marks_the_patron_unreachable(served: Served) -> None:
    with session_scope(served.engine) as session:
        patron_id = get_or_create_patron(session=session, key=PatronKey("telegram", "42"))
    kicked = {
        "update_id": 600,
        "my_chat_member": {
            "chat": {"id": 42, "type": "private"},
            "from": {"id": 42, "is_bot": False, "first_name": "Pat"},
            "date": 0,
            "old_chat_member": {"status": "member", "user": {"id": 1, "is_bot": True, "first_name": "B"}},
            "new_chat_member": {"status": "kicked", "user": {"id": 1, "is_bot": True, "first_name": "B"}},
        },
    }
    assert served.post(kicked).status_code == 200
    assert served.api.wait_for(lambda: served.handled(1), 10)
    with Session(served.engine) as session:
        assert session.get(Patron, patron_id).reachable is False  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    secret=st.one_of(
        st.none(), st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
    ),
    body=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda value: json.dumps(value).encode(),
            st.recursive(
                st.none() | st.integers() | st.text(),
                lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                max_leaves=8,
            ),
        ),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "", "multipart/form-data; boundary=x"]),
)
def test_fuzzed_requests_never_get_a_5xx_and_bad_ones_store_nothing(
    fuzz_served: Served, secret: str | None, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    answer = httpx.post(f"{fuzz_served.url}/webhooks/telegram/webhook", content=body, headers=headers)
    assert answer.status_code < 500
    if answer.status_code != 200:
        assert fuzz_served.rows() == []


@pytest.fixture(scope="module")
def fuzz_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One served channel for every fuzzed request (SQLite): wrong secrets mostly, some right."""
    from bot.crm.database import make_engine
    from bot.crm.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'crm.db'}"
    upgrade(url=url)
    engine = make_engine(url)
    with pytest.MonkeyPatch.context() as patch, FakeTelegramAPI(token=TOKEN) as fake:
        patch.setenv("PATRONBOT_DATABASE_URL", url)
        patch.setenv("PATRONBOT_TELEGRAM_TOKEN", TOKEN)
        patch.setenv("PATRONBOT_TELEGRAM_WEBHOOK_SECRET", "a")  # hypothesis finds one-letter secrets
        patch.setenv("PATRONBOT_TELEGRAM_API_URL", fake.url)
        get_settings.cache_clear()
        yield from serve(engine, fake, FakeAgent())
    get_settings.cache_clear()
    engine.dispose()


# --- takeover ----------------------------------------------------------------------------------------


def _abandon(engine: Engine, update: dict[str, Any]) -> None:
    """An update recorded by a process that died before handling it (its lease ran out)."""
    key = str(update["update_id"])
    assert record_update(
        engine=engine, channel="telegram", key=key, sender="telegram:42", body=json.dumps(update)
    )
    with session_scope(engine) as session:
        session.execute(update_statement(key, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))


def update_statement(key: str, until: dt.datetime) -> Any:
    return (
        update(ChannelUpdate)
        .where(ChannelUpdate.update_key == key)
        .values(claimed_until=until)
        .execution_options(synchronize_session=False)
    )


def test_an_abandoned_update_is_taken_over_and_a_finished_turn_is_not_run_again(
    telegram_env: None, crm: Engine, api: FakeTelegramAPI
) -> None:
    _abandon(crm, text_update(700, 42, "never handled"))
    _abandon(crm, text_update(701, 42, "handled, reply lost"))
    _abandon(crm, text_update(702, 42, "handled, first reply sent") | {"_patronbot_sent": 1})
    agent = FakeAgent()
    tracker = agent.tracker_store.trackers.setdefault("telegram:42", FakeTracker())
    tracker.events += [
        UserUttered("handled, reply lost", message_id="telegram:701"),
        BotUttered("bot: earlier"),
        UserUttered("handled, first reply sent", message_id="telegram:702"),
        BotUttered("bot: went before the crash"),
        BotUttered("bot: still to send"),
    ]
    for server in serve(crm, api, agent):
        assert api.wait_for(functools.partial(server.handled, 3), 15)
    assert [message.text for message in agent.messages] == ["never handled"]
    sent = sorted(call.params["text"] for call in api.sent())
    assert sent == ["bot: earlier", "bot: never handled", "bot: still to send"]


# --- polling -----------------------------------------------------------------------------------------


def test_polling_records_each_update_once_and_deletes_the_webhook(
    crm_url: str, crm: Engine, api: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    monkeypatch.setenv("PATRONBOT_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("PATRONBOT_TELEGRAM_API_URL", api.url)
    get_settings.cache_clear()
    api.webhook = {"url": "https://old.example/hook"}
    for n in range(5):
        api.push_update(text_update(800 + n, 42, f"polled {n}"))
    api.push_update(text_update(802, 42, "polled 2"))  # a redelivery
    agent = FakeAgent()
    for server in serve(crm, api, agent):
        assert api.wait_for(functools.partial(server.handled, 5), 20)
        assert server.post(text_update(900, 42, "by webhook")).status_code == 403  # no secret: no webhook
    assert api.calls_of("deleteWebhook")
    assert api.webhook is None
    assert sorted(message.text for message in agent.messages) == [f"polled {n}" for n in range(5)]
    assert len(api.sent()) == 5


# --- staff replies -------------------------------------------------------------------------------------


def _staff_reply(engine: Engine, chat_id: int, text: str) -> tuple[int, int]:
    with session_scope(engine) as session:
        patron_id = get_or_create_patron(session=session, key=PatronKey("telegram", str(chat_id)))
        outbox_id = send(
            session=session,
            channel="telegram",
            recipient=f"telegram:{chat_id}",
            text=text,
            produced_by="staff:test",
            patron_id=patron_id,
        )
    return patron_id, outbox_id


def _attempts(engine: Engine, outbox_id: int) -> list[tuple[str, str | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(DeliveryAttempt.outcome, DeliveryAttempt.reason)
            .where(DeliveryAttempt.outbox_id == outbox_id)
            .order_by(DeliveryAttempt.id)
        )
        return [(str(outcome), reason) for outcome, reason in rows]


def test_a_staff_reply_reaches_the_chat_and_its_attempt_is_recorded(served: Served) -> None:
    _, outbox_id = _staff_reply(served.engine, 4242, "Your book is ready at the desk.")
    assert served.api.wait_for(lambda: len(served.api.sent(4242)) == 1, 10)
    assert served.api.sent(4242)[0].params["text"] == "Your book is ready at the desk."
    assert served.api.wait_for(lambda: _attempts(served.engine, outbox_id) == [("sent", None)], 5)


def test_a_blocked_bot_marks_the_patron_unreachable_and_is_not_retried(served: Served) -> None:
    served.api.inject(Fault("403"))
    patron_id, outbox_id = _staff_reply(served.engine, 4343, "Hello again")
    assert served.api.wait_for(lambda: _attempts(served.engine, outbox_id) == [("blocked", "http_403")], 10)
    with Session(served.engine) as session:
        assert session.get(Patron, patron_id).reachable is False  # type: ignore[union-attr]
        assert session.get(OutboxMessage, outbox_id).status == "failed"  # type: ignore[union-attr]
    assert served.api.sent(4343) == []


def test_a_429_waits_its_retry_after_and_then_sends_once(served: Served) -> None:
    served.api.inject(Fault("429", retry_after=1))
    _, outbox_id = _staff_reply(served.engine, 4444, "Sorry for the wait")
    assert served.api.wait_for(lambda: len(served.api.sent(4444)) == 1, 15)
    refused, accepted = served.api.calls_of("sendMessage")[-2:]
    assert (refused.status, accepted.status) == (429, 200)
    assert accepted.at - refused.at >= 1.0
    assert served.api.wait_for(
        lambda: [o for o, _ in _attempts(served.engine, outbox_id)][-1:] == ["sent"], 10
    )
    assert len(served.api.sent(4444)) == 1


def test_no_answer_after_the_request_is_an_unknown_outcome_never_resent(api: FakeTelegramAPI) -> None:
    api.inject(Fault("timeout", delay=3))

    async def once() -> str:
        bot = make_bot(token=TOKEN, api_url=api.url, read_timeout=0.5)
        async with bot:
            message = OutboxMessage(id=1, channel="telegram", recipient="telegram:4545", text="hi")
            return (await outbox_sender(bot)(message)).outcome

    assert asyncio.run(once()) == "unknown"
    assert len(api.calls_of("sendMessage")) == 1


def test_rows_are_kept_only_for_updates_that_were_recorded(served: Served) -> None:
    served.post(text_update(1000, 42, "hello"))
    served.post(b"{}")
    assert served.api.wait_for(lambda: served.handled(1), 10)
    with Session(served.engine) as session:
        assert session.execute(select(func.count()).select_from(ChannelUpdate)).scalar_one() == 1


def test_the_app_language_is_the_first_guess_when_nothing_else_tells() -> None:
    from rasa_sdk import Tracker

    from actions.language import patron_language

    def tracker(text: str, slot: str | None) -> Tracker:
        latest = {"text": text, "metadata": {"language": "en"}}
        return Tracker("telegram:42", {"language": slot}, latest, [], False, None, {}, "telegram")

    assert patron_language(tracker("👍", None)) == "en"  # nothing in the words, no conversation yet
    assert patron_language(tracker("👍", "zh")) == "zh"  # the conversation's language comes first
    assert patron_language(tracker("你好", None)) == "zh"  # the words come first
