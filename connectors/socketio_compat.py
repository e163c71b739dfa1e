"""Fixes that make Rasa 3.6's socket.io channel work with this stack's Sanic, python-socketio and Python.

Each fix is named, says what breaks without it, and has a test in tests/test_socketio_compat.py that
fails when the fix is taken away. Remove a fix only when the library it works around is fixed in the
lock (the test then passes without it).

1. `patch_sanic_websocket_wait` (Sanic 21.12.2 on Python 3.11): `sanic.server.websockets.impl` calls
   `asyncio.wait((self.recv_cancel, self.assembler.get(timeout)))` in `recv` and `recv_burst`. The second
   item is a bare coroutine, which Python 3.11 refuses (`TypeError: Passing coroutines is forbidden`), so
   every websocket upgrade dies and engine.io falls back to answering long-polling requests with no-ops.
   Rasa pins sanic<21.13 and no 21.12 release fixes it. The fix gives that one module an `asyncio` whose
   `wait()` wraps each argument with `asyncio.ensure_future` first: a Future (Sanic's `recv_cancel`) is
   returned unchanged, so Sanic's `done_task is self.recv_cancel` check still holds.
2. `enter_room` (python-socketio 5.10 and later): `AsyncServer.enter_room` became a coroutine; Rasa's
   `SocketIOInput` calls it without `await`, so the client never joins its session's room and every
   `bot_uttered` sent to the session reaches nobody (Python only warns "coroutine was never awaited").
   The fix is a helper that awaits the call when it returns an awaitable, used by `connectors.webchat`
   wherever a client joins or leaves a room.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Awaitable, Iterable
from typing import Any

from socketio import AsyncServer  # type: ignore[import-untyped]

_PATCHED = "_patronbot_wait_accepts_coroutines"


def _wait_accepting_coroutines(
    tasks: Iterable[Awaitable[Any]], *args: Any, **kwargs: Any
) -> Awaitable[tuple[set[asyncio.Future[Any]], set[asyncio.Future[Any]]]]:
    """`asyncio.wait` as Python 3.10 had it: bare coroutines are scheduled as tasks first."""
    return asyncio.wait([asyncio.ensure_future(task) for task in tasks], *args, **kwargs)


def _asyncio_with_lenient_wait() -> types.ModuleType:
    """A stand-in for the `asyncio` module: every name is asyncio's, except `wait`."""
    module = types.ModuleType("asyncio", "asyncio, with a wait() that accepts bare coroutines")
    module.__dict__.update({name: getattr(asyncio, name) for name in dir(asyncio) if name[:2] != "__"})
    module.wait = _wait_accepting_coroutines  # type: ignore[attr-defined]
    setattr(module, _PATCHED, True)
    return module


def patch_sanic_websocket_wait() -> bool:
    """Fix 1: let Sanic's websocket implementation wait on bare coroutines (see the module docstring).

    Changes only `sanic.server.websockets.impl`'s reference to asyncio, once; returns True if this call
    installed it, False if it was already installed."""
    from sanic.server.websockets import impl

    if getattr(vars(impl)["asyncio"], _PATCHED, False):
        return False
    vars(impl)["asyncio"] = _asyncio_with_lenient_wait()
    return True


def sanic_websocket_wait_is_patched() -> bool:
    from sanic.server.websockets import impl

    return bool(getattr(vars(impl)["asyncio"], _PATCHED, False))


async def enter_room(sio: AsyncServer, sid: str, room: str, *, namespace: str | None = None) -> None:
    """Fix 2: put the client `sid` in `room`, awaiting python-socketio 5.10+'s coroutine (and working
    with the older plain function too)."""
    joined = sio.enter_room(sid, room, namespace=namespace)
    if inspect.isawaitable(joined):
        await joined


async def leave_room(sio: AsyncServer, sid: str, room: str, *, namespace: str | None = None) -> None:
    """Fix 2, for leaving a room: `leave_room` became a coroutine in the same release."""
    left = sio.leave_room(sid, room, namespace=namespace)
    if inspect.isawaitable(left):
        await left
