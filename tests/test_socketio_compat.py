"""The socket.io compatibility fixes (connectors/socketio_compat.py): each test fails without its fix."""

from __future__ import annotations

import asyncio
import types
import warnings
from typing import Any

import pytest
from sanic.server.websockets import impl
from sanic.server.websockets.impl import WebsocketImplProtocol
from socketio import AsyncServer
from websockets.connection import OPEN

from connectors.socketio_compat import (
    enter_room,
    leave_room,
    patch_sanic_websocket_wait,
    sanic_websocket_wait_is_patched,
)


class _Assembler:
    """Sanic's frame assembler as recv() uses it: `get` is a coroutine function, as in Sanic 21.12."""

    def __init__(self, message: str | None, *, delay: float = 0.0) -> None:
        self.message = message
        self.delay = delay

    async def get(self, timeout: float | None = None) -> str | None:
        await asyncio.sleep(self.delay)
        return self.message


def _websocket(assembler: _Assembler) -> Any:
    """The state WebsocketImplProtocol.recv reads, around its real code."""
    return types.SimpleNamespace(
        recv_lock=asyncio.Lock(),
        connection=types.SimpleNamespace(state=OPEN),
        assembler=assembler,
        recv_cancel=None,
    )


def test_the_fix_is_installed_once_and_only_in_sanics_websocket_module() -> None:
    patch_sanic_websocket_wait()
    assert sanic_websocket_wait_is_patched()
    assert patch_sanic_websocket_wait() is False  # already there: nothing changes
    assert impl.asyncio is not asyncio
    assert impl.asyncio.Future is asyncio.Future  # everything else is asyncio's own
    assert asyncio.wait is not impl.asyncio.wait  # the rest of the process keeps the real one


def test_sanic_websocket_recv_returns_a_message_on_python_311() -> None:
    """Without fix 1, Sanic's recv hands asyncio.wait a bare coroutine: TypeError on Python 3.11."""
    patch_sanic_websocket_wait()

    async def scenario() -> Any:
        return await WebsocketImplProtocol.recv(_websocket(_Assembler('42["session_request",{}]')), timeout=5)

    assert asyncio.run(scenario()) == '42["session_request",{}]'


def test_sanic_websocket_recv_is_still_cancellable() -> None:
    """Sanic tells a cancel from a message by `done_task is self.recv_cancel`: the fix keeps the Future."""
    patch_sanic_websocket_wait()

    async def scenario() -> None:
        websocket = _websocket(_Assembler("late", delay=30))
        receiving = asyncio.ensure_future(WebsocketImplProtocol.recv(websocket, timeout=None))
        while websocket.recv_cancel is None:
            await asyncio.sleep(0)
        websocket.recv_cancel.set_result(None)
        with pytest.raises(asyncio.CancelledError):
            await receiving

    asyncio.run(scenario())


def test_sanic_websocket_recv_burst_collects_messages_on_python_311() -> None:
    patch_sanic_websocket_wait()

    class _Burst(_Assembler):
        def __init__(self) -> None:
            super().__init__(None)
            self.left = ["2", "3probe"]

        async def get(self, timeout: float | None = None) -> str | None:
            return self.left.pop(0) if self.left else None

    async def scenario() -> Any:
        websocket = _websocket(_Burst())
        websocket.can_pause = True
        websocket.connection.state = OPEN
        websocket.resume_reading = lambda: None
        return await WebsocketImplProtocol.recv_burst(websocket)

    assert asyncio.run(scenario()) == ["2", "3probe"]


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_the_unfixed_module_refuses_the_coroutine_so_the_fix_is_still_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If this fails, Sanic or Python no longer needs fix 1: remove it."""
    monkeypatch.setattr(impl, "asyncio", asyncio)

    async def scenario() -> Any:
        return await WebsocketImplProtocol.recv(_websocket(_Assembler("hello")), timeout=5)

    with pytest.raises(TypeError, match="coroutines is forbidden"):
        asyncio.run(scenario())


def test_enter_room_puts_the_client_in_the_room() -> None:
    """Fix 2: python-socketio 5.10+'s enter_room is a coroutine; the helper awaits it."""

    async def scenario() -> tuple[list[str], list[str]]:
        sio = AsyncServer(async_mode="asgi")
        sid = await sio.manager.connect("engine-io-sid", "/")
        await enter_room(sio, sid, "webchat:abc")
        joined = list(sio.manager.get_rooms(sid, "/"))
        await leave_room(sio, sid, "webchat:abc")
        return joined, list(sio.manager.get_rooms(sid, "/"))

    joined, left = asyncio.run(scenario())
    assert "webchat:abc" in joined
    assert "webchat:abc" not in left


def test_rasas_unawaited_enter_room_leaves_the_client_out_so_the_fix_is_still_needed() -> None:
    """What Rasa 3.6 does (`sio.enter_room(sid, room)` without await): if this fails, python-socketio
    went back to a plain function and fix 2 can go."""

    async def scenario() -> list[str]:
        sio = AsyncServer(async_mode="asgi")
        sid = await sio.manager.connect("engine-io-sid", "/")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine was never awaited"
            sio.enter_room(sid, "webchat:abc")
        return list(sio.manager.get_rooms(sid, "/"))

    assert "webchat:abc" not in asyncio.run(scenario())
