"""The web chat channel in a real Sanic server: issued sessions, turns, bad input, staff replies pushed."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.channels.quiet import QUIET
from bot.crm.database import session_scope
from bot.crm.models import DeliveryAttempt, OutboxMessage, Patron
from bot.outbound.dispatcher import claim_due
from bot.outbound.outbox import send
from bot.pseudonyms import load_key
from bot.settings import get_settings
from connectors.outbound import dispatcher
from connectors.replies import APOLOGY
from connectors.webchat import SOCKET_PATH
from connectors.webchat_sessions import issue_session, sender_of
from scripts import fetch_webchat
from tests.webchat_server import Served, Widget, serving

MAX_CHARS = 50


@pytest.fixture(autouse=True)
def _crm_settings(monkeypatch: pytest.MonkeyPatch, crm_url: str) -> Iterator[None]:
    """The channel's dispatcher reads a migrated CRM; messages are at most MAX_CHARS long."""
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    monkeypatch.setenv("PATRONBOT_MAX_MESSAGE_CHARS", str(MAX_CHARS))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class Rasa:
    """Stands in for Rasa's agent: records each message and answers through the channel's output."""

    def __init__(self, *, fail: bool = False) -> None:
        self.messages: list[UserMessage] = []
        self.fail = fail

    async def __call__(self, message: UserMessage) -> None:
        self.messages.append(message)
        if self.fail:
            raise RuntimeError("the tracker store is down")
        if message.text == "are you there?":  # a librarian has the conversation: the bot says nothing
            await message.output_channel.send_response(message.sender_id, {"custom": QUIET})
            return
        answer: dict[str, Any] = {"text": f"echo: {message.text}"}
        if message.text == "offer buttons":
            answer["buttons"] = [
                {"title": "好的 / Yes", "payload": "/affirm"},
                {"title": "No", "payload": "/deny"},
            ]
        await message.output_channel.send_response(message.sender_id, answer)


def run(scenario: Callable[[Served, Widget], Awaitable[None]], rasa: Rasa | None = None) -> None:
    async def whole() -> None:
        async with serving(rasa or Rasa()) as served:
            widget = Widget()
            try:
                await scenario(served, widget)
            finally:
                await widget.close()

    asyncio.run(whole())


def test_a_new_browser_gets_a_server_issued_session_and_speaks_as_it() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        session_id = await widget.open(served.url)
        sender = sender_of(session_id, key=served.channel.key)
        assert sender is not None
        assert sender.startswith("webchat:")
        assert len(sender.removeprefix("webchat:")) == 32  # 128 random bits, hex
        await widget.say("图书馆几点开门？")
        assert await widget.next("bot_uttered") == {"text": "echo: 图书馆几点开门？"}
        [message] = rasa.messages
        assert (message.sender_id, message.input_channel, message.text) == (
            sender,
            "webchat",
            "图书馆几点开门？",
        )
        assert message.metadata == {"source": "test-page"}
        assert session_id.split(".")[1] not in sender  # the tag stays between the browser and the server

    run(scenario, rasa)


def test_a_returning_browser_keeps_its_conversation() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        first = await widget.open(served.url)
        await widget.say("hello")
        await widget.next("bot_uttered")
        await widget.close()
        again = Widget()
        try:
            assert await again.open(served.url, session_id=first) == first
            await again.say("and on Sunday?")
            assert await again.next("bot_uttered") == {"text": "echo: and on Sunday?"}
        finally:
            await again.close()
        assert rasa.messages[0].sender_id == rasa.messages[1].sender_id

    run(scenario, rasa)


def _forged(key: bytes) -> list[object]:
    issued = issue_session(key=key)
    random_part, tag = issued.split(".")
    return [
        "alice",
        random_part,  # no tag
        f"{random_part}.{'0' * 32}",  # a made-up tag
        f"{random_part}.{tag[::-1]}",
        issue_session(key=b"another installation's secret key"),
        issued.upper(),
        issued + "0",
        12345,
        {"session_id": issued},
        ["x"],
    ]


def test_an_id_the_server_did_not_issue_gets_a_new_session() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        for given in _forged(served.channel.key):
            fresh = Widget()
            try:
                confirmed = await fresh.open(served.url, session_id=given)
            finally:
                await fresh.close()
            assert confirmed != given
            assert sender_of(confirmed, key=served.channel.key) is not None

    run(scenario)


def test_buttons_reach_the_widget_as_quick_replies_and_a_tap_sends_the_payload() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        await widget.say("offer buttons")
        offered = await widget.next("bot_uttered")
        assert offered["text"] == "echo: offer buttons"
        assert offered["quick_replies"] == [
            {"content_type": "text", "title": "好的 / Yes", "payload": "/affirm"},
            {"content_type": "text", "title": "No", "payload": "/deny"},
        ]
        await widget.say(offered["quick_replies"][0]["payload"])  # what the widget sends on a tap
        assert await widget.next("bot_uttered") == {"text": "echo: /affirm"}

    run(scenario, rasa)
    assert rasa.messages[-1].text == "/affirm"


def test_the_polling_transport_works_as_well_as_the_websocket() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url, transport="polling")
        await widget.say("hello")
        assert await widget.next("bot_uttered") == {"text": "echo: hello"}

    run(scenario)


BAD_MESSAGES: list[tuple[dict[str, Any], str]] = [
    ({"message": 42}, "bad_message"),
    ({"message": None}, "bad_message"),
    ({"message": ["hello"]}, "bad_message"),
    ({"message": "x" * (MAX_CHARS + 1)}, "too_long"),
    ({"message": "hi", "session_id": None}, "wrong_session"),
    ({"message": "hi", "session_id": "alice"}, "wrong_session"),
    ({"message": "hi", "custom": {"source": "s" * 201}}, "bad_custom_data"),
    ({"message": "hi", "custom": {"source": 7}}, "bad_custom_data"),
    ({"message": "hi", "custom": {"a": {"b": {"c": {"d": 1}}}}}, "bad_custom_data"),
    ({"message": "hi", "custom": "{not json"}, "bad_custom_data"),
    ({"message": "hi", "custom": ["source"]}, "bad_custom_data"),
]


@pytest.mark.parametrize(("sent", "code"), BAD_MESSAGES)
def test_bad_input_gets_a_clear_error_and_the_channel_keeps_serving(sent: dict[str, Any], code: str) -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        extra = {"session_id": sent["session_id"]} if "session_id" in sent else {}
        await widget.say(sent["message"], custom=sent.get("custom"), **extra)
        refusal = await widget.next("patronbot_error")
        assert refusal["error"] == code
        assert refusal["message"]
        await widget.say("still there?")
        assert await widget.next("bot_uttered") == {"text": "echo: still there?"}

    run(scenario, rasa)
    assert [message.text for message in rasa.messages] == ["still there?"]


def test_another_browsers_session_id_cannot_be_spoken_for() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        someone_else = issue_session(key=served.channel.key)  # valid, but not this socket's
        await widget.say("read me her data", session_id=someone_else)
        assert (await widget.next("patronbot_error"))["error"] == "wrong_session"

    run(scenario, rasa)
    assert rasa.messages == []


def test_a_message_before_any_session_request_is_refused() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        await widget.connect(served.url)
        await widget.say("hi", session_id=issue_session(key=served.channel.key))
        assert (await widget.next("patronbot_error"))["error"] == "no_session"

    run(scenario, rasa)
    assert rasa.messages == []


def test_empty_and_nul_only_messages_are_ignored() -> None:
    rasa = Rasa()

    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        await widget.say("   ")
        await widget.say("\x00")
        await widget.say("real")
        assert await widget.next("bot_uttered") == {"text": "echo: real"}

    run(scenario, rasa)
    assert [message.text for message in rasa.messages] == ["real"]


def test_a_turn_the_bot_answers_with_silence_sends_nothing_not_an_apology() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        await widget.say("are you there?")
        await widget.say("real")
        assert await widget.next("bot_uttered") == {"text": "echo: real"}  # nothing came before it

    run(scenario)


def test_a_failed_turn_gets_an_apology_in_the_patrons_language() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        await widget.open(served.url)
        await widget.say("When do you open?")
        assert await widget.next("bot_uttered") == {"text": APOLOGY["en"]}
        await widget.say("几点开门？")
        assert await widget.next("bot_uttered") == {"text": APOLOGY["zh"]}

    run(scenario, Rasa(fail=True))


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


def _patron(crm: Engine) -> int:
    with session_scope(crm) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        return int(patron.id)


def _status(crm: Engine, outbox_id: int) -> str:
    with Session(crm, future=True) as session:
        message = session.get(OutboxMessage, outbox_id)
        return str(message.status) if message is not None else "missing"


def _queue_staff_reply(crm: Engine, *, patron_id: int, recipient: str, text: str) -> int:
    with session_scope(crm) as session:
        return send(
            session=session,
            channel="webchat",
            recipient=recipient,
            text=text,
            produced_by="staff:amy",
            patron_id=patron_id,
        )


def test_a_staff_reply_waits_while_no_widget_is_open_and_arrives_when_it_reconnects(crm: Engine) -> None:
    settings = get_settings()
    session_id = issue_session(key=load_key(settings=settings))
    sender = sender_of(session_id, key=load_key(settings=settings))
    assert sender is not None
    outbox_id = _queue_staff_reply(
        crm, patron_id=_patron(crm), recipient=sender, text="Alice here: it's on hold."
    )

    async def scenario(served: Served, widget: Widget) -> None:
        assert not served.channel.holds(sender)
        # The dispatcher does not claim it while no socket of the session is open in this process.
        assert claim_due(engine=crm, channel="webchat", holds=served.channel.holds) == []
        await widget.open(served.url, session_id=session_id)
        assert await widget.next("bot_uttered") == {"text": "Alice here: it's on hold."}
        await _until(lambda: _status(crm, outbox_id) == "delivered")  # the attempt is recorded after the push

    run(scenario)
    with Session(crm, future=True) as session:
        message = session.get(OutboxMessage, outbox_id)
        assert message is not None
        assert message.status == "delivered"
        outcomes = session.execute(
            select(DeliveryAttempt.outcome).where(DeliveryAttempt.outbox_id == outbox_id)
        )
        assert list(outcomes.scalars()) == ["sent"]


def test_a_staff_reply_is_pushed_to_an_open_widget_and_only_to_its_session(crm: Engine) -> None:
    patron_id = _patron(crm)

    async def scenario(served: Served, widget: Widget) -> None:
        session_id = await widget.open(served.url)
        bystander = Widget()
        try:
            await bystander.open(served.url)
            sender = sender_of(session_id, key=served.channel.key)
            assert sender is not None
            assert served.channel.holds(sender)
            await asyncio.to_thread(
                _queue_staff_reply, crm, patron_id=patron_id, recipient=sender, text="A librarian answers."
            )
            dispatcher(served.app).wake()
            assert await widget.next("bot_uttered") == {"text": "A librarian answers."}
            assert bystander.received["bot_uttered"].empty()
        finally:
            await bystander.close()

    run(scenario)


def test_the_widget_is_held_only_while_its_socket_is_open() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        sender = sender_of(await widget.open(served.url), key=served.channel.key)
        assert sender is not None
        assert served.channel.holds(sender)
        await widget.close()
        await _until(lambda: not served.channel.holds(sender))
        message = OutboxMessage(id=1, channel="webchat", recipient=sender, text="late")
        attempt = await served.channel.push(message)
        assert (attempt.outcome, attempt.reason) == ("retry", "no_open_widget")

    run(scenario)


def test_the_demo_page_and_the_widgets_files_are_served() -> None:
    async def scenario(served: Served, widget: Widget) -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{served.url}/webhooks/webchat/") as page:
                assert page.status == 200
                html = await page.text()
            assert 'lang="zh-CN"' in html
            assert 'lang="en"' in html
            assert "/webhooks/webchat/static/embed.js" in html
            for name, kind in [
                ("embed.js", "javascript"),
                ("webchat.css", "text/css"),
                ("rasa-webchat.js", "javascript"),
                ("LICENSE-rasa-webchat.txt", "text/plain"),
            ]:
                async with http.get(f"{served.url}/webhooks/webchat/static/{name}") as answer:
                    assert answer.status == 200, f"{name}: {await answer.text()} (run `make install`)"
                    assert kind in answer.headers["Content-Type"]
            async with http.get(f"{served.url}/webhooks/webchat/static/rasa-webchat.js") as answer:
                bundle = await answer.read()
            assert b"fonts.googleapis.com" not in bundle  # no third party learns who opens the page
            for name in ["demo.html", "..%2F..%2Fwebchat.py", "vendor", "secret.key"]:
                async with http.get(f"{served.url}/webhooks/webchat/static/{name}") as answer:
                    assert answer.status == 404

    run(scenario)


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_fetch_script_refuses_a_tarball_that_does_not_match_the_integrity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vendor = tmp_path / "vendor"
    tampered = _tarball(
        {"package/lib/index.js": b"alert('x')" + fetch_webchat.FONT_IMPORT, "package/LICENSE": b"x"}
    )
    monkeypatch.setattr(fetch_webchat, "VENDOR", vendor)
    monkeypatch.setattr(fetch_webchat, "published_integrity", lambda: fetch_webchat.INTEGRITY)
    monkeypatch.setattr(fetch_webchat, "fetch_tarball", lambda workdir: tampered)
    assert fetch_webchat.main(["--force"]) == 1
    assert not vendor.exists()


def test_the_fetch_script_installs_the_checked_bundle_without_the_font_import(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    vendor = tmp_path / "vendor"
    package = _tarball(
        {
            "package/lib/index.js": b"a" + fetch_webchat.FONT_IMPORT + b"b",
            "package/LICENSE": b"Apache License",
        }
    )
    monkeypatch.setattr(fetch_webchat, "VENDOR", vendor)
    monkeypatch.setattr(fetch_webchat, "INTEGRITY", fetch_webchat.integrity_of(package))
    monkeypatch.setattr(fetch_webchat, "published_integrity", lambda: fetch_webchat.integrity_of(package))
    monkeypatch.setattr(fetch_webchat, "fetch_tarball", lambda workdir: package)
    assert fetch_webchat.main([]) == 0
    assert (vendor / "rasa-webchat.js").read_bytes() == fetch_webchat.CHANGE_NOTICE + b"ab"
    assert (vendor / "LICENSE").read_bytes() == b"Apache License"
    record = json.loads((vendor / "rasa-webchat.json").read_text(encoding="utf-8"))
    assert record["integrity"] == fetch_webchat.integrity_of(package)
    assert fetch_webchat.installed_matches()
    monkeypatch.setattr(fetch_webchat, "published_integrity", lambda: "sha512-something-else")
    assert fetch_webchat.main(["--force"]) == 1  # the registry disagrees with the pin: refused


async def _handshake(url: str, origin: str) -> int:
    """The status of engine.io's first long-polling request sent by a page of `origin`."""
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{url}{SOCKET_PATH}/?EIO=4&transport=polling", headers={"Origin": origin}) as answer,
    ):
        return answer.status


@pytest.mark.parametrize(
    ("setting", "statuses"),
    [
        ("*", {"https://library.example.edu": 200, "https://elsewhere.example": 200}),
        (
            "https://library.example.edu, https://www.library.example.edu/",
            {
                "https://library.example.edu": 200,
                "https://www.library.example.edu": 200,
                "https://elsewhere.example": 400,
                "http://library.example.edu": 400,
            },
        ),
    ],
)
def test_only_the_pages_the_library_names_may_open_the_socket(
    monkeypatch: pytest.MonkeyPatch, setting: str, statuses: dict[str, int]
) -> None:
    monkeypatch.setenv("PATRONBOT_WEBCHAT_ORIGINS", setting)
    get_settings.cache_clear()

    async def scenario(served: Served, _: Widget) -> None:
        seen = {origin: await _handshake(served.url, origin) for origin in statuses}
        assert seen == statuses

    run(scenario)


@pytest.mark.parametrize(
    "setting", ["library.example.edu", "https://library.example.edu/chat", "ftp://x.edu"]
)
def test_an_origin_setting_that_is_not_an_origin_is_refused_with_the_rule(
    monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    monkeypatch.setenv("PATRONBOT_WEBCHAT_ORIGINS", setting)
    get_settings.cache_clear()
    with pytest.raises(Exception, match=r"origins like https://library\.example\.edu"):
        get_settings()
