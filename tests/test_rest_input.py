"""The REST channel: every bad request gets a 400 reason, good ones pass whole, staff messages come first."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import OutboxMessage, Patron
from bot.outbound.outbox import send
from bot.settings import get_settings
from connectors.rest import BadRequestError, RestInput, TooLargeError, crm_engine, parse_request


def body(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


def test_good_request_is_kept_exactly() -> None:
    text = "图书馆 wifi 密码? <script>alert(1)</script> ' OR 1=1 --"
    message = parse_request(body({"sender": "abc", "message": text}), max_chars=100)
    assert (message.sender, message.text, message.metadata) == ("abc", text, {})


def test_only_the_metadata_the_channel_uses_is_kept() -> None:
    """Rasa stores a message's metadata in its tracker store and broker with every user event."""
    metadata = {"source": "poster-qr-3", "k": 1, "profile": {"name": "Alice Smith"}}
    message = parse_request(body({"sender": "abc", "message": "hi", "metadata": metadata}), max_chars=100)
    assert message.metadata == {"source": "poster-qr-3"}


def test_numeric_sender_is_accepted_as_text() -> None:
    assert parse_request(body({"sender": 4242, "message": "hi"}), max_chars=100).sender == "4242"


def test_nul_characters_are_removed_because_no_database_stores_them() -> None:
    assert parse_request(body({"sender": "a", "message": "hi\u0000there"}), max_chars=100).text == "hithere"


def test_ten_thousand_characters_are_accepted_under_the_default_limit() -> None:
    text = "书" * 10_000
    assert parse_request(body({"sender": "a", "message": text}), max_chars=20_000).text == text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "the body must be JSON"),
        (b"", "the body must be JSON"),
        (b"\xff\xfe", "the body must be JSON"),
        (body(["sender", "message"]), "must be a JSON object"),
        (body({"message": "hi"}), "'sender' is required"),
        (body({"sender": "", "message": "hi"}), "'sender' is required"),
        (body({"sender": True, "message": "hi"}), "'sender' is required"),
        (body({"sender": "x" * 201, "message": "hi"}), "'sender' is longer than 200"),
        (body({"sender": "\u0000", "message": "hi"}), "'sender' is required"),
        (body({"sender": " \u0000\u0000 ", "message": "hi"}), "'sender' is required"),
        (body({"sender": "a"}), "'message' is required"),
        (body({"sender": "a", "message": 5}), "'message' is required"),
        (body({"sender": "a", "message": "   "}), "'message' is empty"),
        (body({"sender": "a", "message": "\u0000"}), "'message' is empty"),
        (body({"sender": "a", "message": "x" * 101}), "'message' is longer than 100"),
        (body({"sender": "a", "message": "hi", "metadata": [1]}), "'metadata', when given, must be"),
        (
            body({"sender": "a", "message": "hi", "metadata": {"k": "x" * 3000}}),
            "'metadata' is larger than 2048",
        ),
        (
            body({"sender": "a", "message": "hi", "metadata": {"a": {"b": {"c": {"d": 1}}}}}),
            "nested deeper than 3",
        ),
        (
            body({"sender": "a", "message": "hi", "metadata": {"source": 7}}),
            "'metadata.source' must be a string",
        ),
        (
            body({"sender": "a", "message": "hi", "metadata": {"source": "s" * 201}}),
            "'metadata.source' must be",
        ),
    ],
)
def test_bad_requests_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequestError, match=reason):
        parse_request(raw, max_chars=100)


async def _echo(message: UserMessage) -> None:
    await message.output_channel.send_text_message(message.sender_id, f"bot: {message.text}")


async def _exchange(
    requests: list[tuple[str, str, dict[str, Any]]],
    bot: Callable[[UserMessage], Awaitable[None]] = _echo,
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> list[httpx.Response]:
    """Send requests to a Sanic app serving the REST channel, whose bot answers "bot: TEXT"."""

    Sanic.test_mode = True  # as sanic-testing does: Sanic's start-up rewriting is then safe to repeat
    app = Sanic(f"rest_{uuid.uuid4().hex[:8]}")
    app.blueprint(RestInput().blueprint(bot), url_prefix="/webhooks/rest")
    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(event: dict[str, str]) -> None:
        if event["type"] == "lifespan.startup.complete":
            started.set()

    await lifespan.put({"type": "lifespan.startup"})
    server = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lifespan_send))
    await asyncio.wait_for(started.wait(), 10)
    try:
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
            return [await http.request(method, path, **options) for method, path, options in requests]
    finally:
        server.cancel()


@pytest.fixture
def channel_crm(crm: Engine, crm_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The REST channel's CRM is the test database."""
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", crm_url)
    get_settings.cache_clear()
    crm_engine.cache_clear()
    yield crm
    crm_engine(crm_url).dispose()
    crm_engine.cache_clear()


def queue(engine: Engine, recipient: str, *texts: str) -> None:
    with session_scope(engine) as session:
        patron = Patron(language="en")
        session.add(patron)
        session.flush()
        for text in texts:
            send(
                session=session,
                channel="rest",
                recipient=recipient,
                text=text,
                produced_by="staff:li",
                patron_id=patron.id,
            )


def test_waiting_staff_messages_come_before_the_bots_replies_once(channel_crm: Engine) -> None:
    queue(channel_crm, "rest:alice", "Librarian here.", "Your card is renewed.")
    queue(channel_crm, "rest:bob", "Not for alice")
    first, second = asyncio.run(
        _exchange(
            [
                ("POST", "/webhooks/rest/webhook", {"json": {"sender": "alice", "message": "thanks"}}),
                ("POST", "/webhooks/rest/webhook", {"json": {"sender": "alice", "message": "bye"}}),
            ]
        )
    )
    assert first.status_code == 200
    assert first.json() == [
        {"recipient_id": "alice", "text": "Librarian here."},
        {"recipient_id": "alice", "text": "Your card is renewed."},
        {"recipient_id": "alice", "text": "bot: thanks"},
    ]
    assert second.json() == [{"recipient_id": "alice", "text": "bot: bye"}]
    with Session(channel_crm, future=True) as session:
        pending = session.execute(select(OutboxMessage.text).where(OutboxMessage.delivered_at.is_(None)))
        assert list(pending.scalars()) == ["Not for alice"]


def test_a_widget_polls_the_outbox_and_gets_each_message_once(channel_crm: Engine) -> None:
    queue(channel_crm, "rest:alice", "Librarian here.")
    responses = asyncio.run(
        _exchange(
            [
                ("GET", "/webhooks/rest/outbox", {"params": {"sender": "alice"}}),
                ("GET", "/webhooks/rest/outbox", {"params": {"sender": "alice"}}),
                ("GET", "/webhooks/rest/outbox", {}),
                ("GET", "/webhooks/rest/outbox", {"params": {"sender": "x" * 201}}),
            ]
        )
    )
    assert [r.status_code for r in responses] == [200, 200, 400, 400]
    assert responses[0].json() == [{"recipient_id": "alice", "text": "Librarian here."}]
    assert responses[1].json() == []
    assert "'sender' is required" in responses[2].json()["error"]
    assert "'sender' is longer than 200" in responses[3].json()["error"]


def test_a_broken_crm_does_not_break_the_patrons_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database without the schema: every outbox query fails.
    monkeypatch.setenv("PATRONBOT_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    crm_engine.cache_clear()
    turn, poll = asyncio.run(
        _exchange(
            [
                ("POST", "/webhooks/rest/webhook", {"json": {"sender": "alice", "message": "hello"}}),
                ("GET", "/webhooks/rest/outbox", {"params": {"sender": "alice"}}),
            ]
        )
    )
    crm_engine.cache_clear()
    assert (turn.status_code, turn.json()) == (200, [{"recipient_id": "alice", "text": "bot: hello"}])
    assert poll.status_code == 503
    assert "could not be read" in caplog.text
    assert "alice" not in caplog.text


def test_the_longest_message_is_accepted_however_the_client_escapes_it() -> None:
    for text in ("书" * 100, "😀" * 100):
        escaped = json.dumps({"sender": "s" * 200, "message": text, "metadata": {"source": "网" * 200}})
        assert parse_request(escaped.encode("ascii"), max_chars=100).text == text


def test_a_body_larger_than_any_acceptable_request_gets_a_413_before_it_is_parsed() -> None:
    huge = body({"sender": "alice", "message": "hi", "metadata": {"blob": "x" * 300_000}})
    with pytest.raises(TooLargeError, match="larger than"):
        parse_request(huge, max_chars=20_000)
    [answer] = asyncio.run(
        _exchange(
            [
                (
                    "POST",
                    "/webhooks/rest/webhook",
                    {"content": huge * 10, "headers": {"Content-Type": "application/json"}},
                )
            ]
        )
    )
    assert answer.status_code == 413
    assert "larger than" in answer.json()["error"]


def test_a_staff_reply_whose_response_never_left_goes_back_to_the_outbox(
    channel_crm: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The patron's client goes away (the connection is reset) after the librarian's reply was taken
    from the outbox for its response: the reply must wait for the next request, not be lost."""
    import socket
    import struct
    import time

    import connectors.rest as rest

    queue(channel_crm, "rest:alice", "Librarian here.")
    taking = rest.pending_replies

    def slowly(**options: Any) -> Any:
        claimed = taking(**options)
        time.sleep(0.5)  # the client resets the connection meanwhile
        return claimed

    monkeypatch.setattr(rest, "pending_replies", slowly)

    async def reset_mid_response() -> None:
        Sanic.test_mode = True
        app = Sanic(f"rest_{uuid.uuid4().hex[:8]}")
        app.blueprint(RestInput().blueprint(_echo), url_prefix="/webhooks/rest")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True)
        assert server is not None
        await server.startup()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            payload = json.dumps({"sender": "alice", "message": "hi"}).encode()
            head = "POST /webhooks/rest/webhook HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
            writer.write(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
            await asyncio.sleep(0.2)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()  # a reset, as a phone that lost its network
            await asyncio.sleep(1.0)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(reset_mid_response())
    monkeypatch.setattr(rest, "pending_replies", taking)
    with Session(channel_crm, future=True) as session:
        pending = session.execute(select(OutboxMessage.text).where(OutboxMessage.delivered_at.is_(None)))
        assert list(pending.scalars()) == ["Librarian here."]
    [again] = asyncio.run(
        _exchange([("POST", "/webhooks/rest/webhook", {"json": {"sender": "alice", "message": "hello?"}})])
    )
    assert again.json()[0] == {"recipient_id": "alice", "text": "Librarian here."}


def _heard() -> tuple[list[str], Callable[[UserMessage], Awaitable[None]]]:
    heard: list[str] = []

    async def bot(message: UserMessage) -> None:
        heard.append(message.sender_id)
        await _echo(message)

    return heard, bot


def test_without_a_token_only_this_machine_may_speak_as_a_patron(channel_crm: Engine) -> None:
    """A sender id is what "delete my data" trusts: without PATRONBOT_REST_TOKEN a request from
    elsewhere is refused before anything is read, and this machine (the website backend beside it, the
    terminal chat) is served."""
    heard, bot = _heard()
    say = ("POST", "/webhooks/rest/webhook", {"json": {"sender": "alice", "message": "delete my data"}})
    outbox = ("GET", "/webhooks/rest/outbox", {"params": {"sender": "alice"}})
    refused = asyncio.run(_exchange([say, outbox], bot, client=("203.0.113.5", 4000)))
    assert [r.status_code for r in refused] == [403, 403]
    assert "PATRONBOT_REST_TOKEN" in refused[0].json()["error"]
    assert heard == []
    for local in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        (served,) = asyncio.run(_exchange([say], bot, client=(local, 4000)))
        assert served.status_code == 200, local
    assert heard == ["rest:alice"] * 3


def test_with_a_token_every_request_must_bring_it(
    channel_crm: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "s3cret-token-for-the-website-backend"
    monkeypatch.setenv("PATRONBOT_REST_TOKEN", token)
    get_settings.cache_clear()
    heard, bot = _heard()
    message = {"json": {"sender": "alice", "message": "hi"}}
    requests = [
        ("POST", "/webhooks/rest/webhook", message),
        ("POST", "/webhooks/rest/webhook", {**message, "headers": {"Authorization": "Bearer wrong"}}),
        ("POST", "/webhooks/rest/webhook", {**message, "headers": {"Authorization": f"Basic {token}"}}),
        ("GET", "/webhooks/rest/outbox", {"params": {"sender": "alice"}}),
        ("POST", "/webhooks/rest/webhook", {**message, "headers": {"Authorization": f"Bearer {token}"}}),
    ]
    # Even from this machine: the token, once set, is the rule.
    answers = asyncio.run(_exchange(requests, bot))
    assert [r.status_code for r in answers] == [401, 401, 401, 401, 200]
    assert answers[0].headers["www-authenticate"].startswith("Bearer")
    assert heard == ["rest:alice"]
    (remote,) = asyncio.run(_exchange(requests[-1:], bot, client=("203.0.113.5", 4000)))
    assert remote.status_code == 200


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    authorization=st.one_of(
        st.none(),
        st.text(max_size=80),
        st.builds(lambda t: f"Bearer {t}", st.text(max_size=60)),
        st.just("Bearer  s3cret-token-for-the-website-backend-x"),
        st.just("bearer s3cret-token-for-the-website-backend"),
    ),
    body=st.one_of(st.binary(max_size=300), st.just(b'{"sender": "alice", "message": "hi"}')),
)
def test_fuzzed_headers_and_bodies_never_reach_the_bot_without_the_token(
    authorization: str | None, body: bytes
) -> None:
    """Whatever a stranger sends, without the exact token nothing reaches the bot and nothing is a 5xx;
    with it, a bad body is a 4xx with a reason."""
    token = "s3cret-token-for-the-website-backend"
    heard, bot = _heard()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATRONBOT_REST_TOKEN", token)
        get_settings.cache_clear()
        headers = {"Content-Type": "application/json"}
        if authorization is not None and authorization.isascii() and "\n" not in authorization:
            headers["Authorization"] = authorization
        (answer,) = asyncio.run(
            _exchange([("POST", "/webhooks/rest/webhook", {"content": body, "headers": headers})], bot)
        )
        get_settings.cache_clear()
    assert answer.status_code < 500
    allowed = headers.get("Authorization", "").partition(" ")
    if not (allowed[0].lower() == "bearer" and allowed[2].strip() == token):
        assert answer.status_code == 401
        assert heard == []
    elif answer.status_code == 200:
        assert heard == ["rest:alice"]
    else:
        assert answer.status_code in (400, 413)
        assert heard == []
