"""The web chat channel in a real Sanic server in the test's event loop, and a socket.io client that
speaks as the rasa-webchat widget does (session_request, session_confirm, user_uttered, bot_uttered)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio
import websockets
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from connectors.webchat import SOCKET_PATH, URL_PREFIX, WebChatInput

Handler = Callable[[UserMessage], Awaitable[Any]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    channel: WebChatInput
    app: Sanic
    url: str


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Served]:
    """WebChatInput's blueprint on a free port, as Rasa registers it, until the block ends."""
    Sanic.test_mode = True  # several apps in one process (as sanic-testing does): Sanic rewrites methods once
    channel = WebChatInput()
    app = Sanic(f"webchat_test_{uuid.uuid4().hex[:10]}")
    app.blueprint(channel.blueprint(handler), url_prefix=URL_PREFIX)
    port = _free_port()
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield Served(channel=channel, app=app, url=f"http://127.0.0.1:{port}")
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


class Widget:
    """A socket.io client sending what rasa-webchat 1.0.1 sends, and collecting what it is sent.

    Over the websocket transport it speaks engine.io 4 / socket.io 5 itself (through `websockets`),
    because python-socketio's own async websocket client needs a newer aiohttp than Rasa allows; over
    long-polling it is python-socketio's AsyncClient."""

    EVENTS = ("session_confirm", "bot_uttered", "patronbot_error")

    def __init__(self) -> None:
        self.received: dict[str, asyncio.Queue[Any]] = {event: asyncio.Queue() for event in self.EVENTS}
        self.session_id: str | None = None
        self._websocket: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._polling: socketio.AsyncClient | None = None

    async def connect(self, url: str, *, transport: str = "websocket") -> None:
        if transport == "polling":
            self._polling = socketio.AsyncClient(reconnection=False)
            for event in self.EVENTS:
                self._polling.on(event, functools.partial(self._collect, event))
            await self._polling.connect(
                url, socketio_path=SOCKET_PATH, transports=["polling"], wait_timeout=10
            )
            return
        address = url.replace("http://", "ws://") + SOCKET_PATH + "/?EIO=4&transport=websocket"
        self._websocket = await websockets.connect(address, max_size=2**22)
        opened = await self._websocket.recv()
        assert opened.startswith("0{"), opened  # engine.io open
        await self._websocket.send("40")  # socket.io connect to "/"
        connected = await self._websocket.recv()
        assert connected.startswith("40"), connected
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for packet in self._websocket:
                if packet == "2":
                    await self._websocket.send("3")  # pong
                elif packet.startswith("42"):
                    event, *data = json.loads(packet[2:])
                    await self._collect(event, *data)

    async def _collect(self, event: str, data: Any = None) -> None:
        if event in self.received:
            await self.received[event].put(data)

    async def emit(self, event: str, data: Any) -> None:
        if self._polling is not None:
            await self._polling.emit(event, data)
        else:
            await self._websocket.send("42" + json.dumps([event, data]))

    async def open(self, url: str, *, session_id: object = None, transport: str = "websocket") -> str:
        """Connect and ask for a session as the widget does (with the id it kept, if any)."""
        await self.connect(url, transport=transport)
        await self.emit("session_request", {"session_id": session_id})
        confirmed = await self.next("session_confirm")
        self.session_id = confirmed if isinstance(confirmed, str) else confirmed["session_id"]
        return str(self.session_id)

    async def say(self, message: object, *, custom: object = None, session_id: object = ...) -> None:
        await self.emit(
            "user_uttered",
            {
                "message": message,
                "customData": {"source": "test-page"} if custom is None else custom,
                "session_id": self.session_id if session_id is ... else session_id,
            },
        )

    async def next(self, event: str, timeout: float = 10) -> Any:
        return await asyncio.wait_for(self.received[event].get(), timeout=timeout)

    async def close(self) -> None:
        if self._polling is not None:
            # Not waiting for the long-poll under way: engine.io would hold it until the next ping (25 s).
            await self._polling.eio.disconnect(abort=True)
        if self._websocket is not None:
            await self._websocket.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
