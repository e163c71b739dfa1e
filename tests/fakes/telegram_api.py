"""A fake Telegram Bot API: a real local HTTP server (aiohttp, in its own thread) that PTB reaches through its
base URL, records every call, serves queued updates to getUpdates, and injects failures and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 777000, "is_bot": True, "first_name": "Library", "username": "LibraryTestBot"}


@dataclass
class Call:
    """One request the fake received: the method, its parameters, when, and the HTTP status answered."""

    method: str
    params: dict[str, Any]
    at: float
    status: int = 200

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        try:
            return int(value) if value is not None else None
        except (TypeError, ValueError):
            return None


@dataclass
class Fault:
    """A failure answered to the next `count` calls of `method` (None: any method)."""

    kind: str  # "429", "403", "400", "500", "timeout" (no answer), "slow", "409"
    method: str | None = "sendMessage"
    count: int = 1
    retry_after: int = 1
    delay: float = 0.0


@dataclass
class RateLimit:
    """Telegram's limits as the fake enforces them: 429 beyond `per_second` overall or one message a
    second per chat (sendMessage only)."""

    per_second: float = 30.0
    per_chat_seconds: float = 1.0
    tokens: float = 30.0
    last: float = field(default_factory=time.monotonic)
    chat_last: dict[int, float] = field(default_factory=dict)

    def admit(self, chat_id: int | None, now: float) -> bool:
        self.tokens = min(self.per_second, self.tokens + (now - self.last) * self.per_second)
        self.last = now
        if chat_id is not None and now - self.chat_last.get(chat_id, -1e9) < self.per_chat_seconds:
            return False
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        if chat_id is not None:
            self.chat_last[chat_id] = now
        return True


class FakeTelegramAPI:
    """Start with `with FakeTelegramAPI() as api:`; point PTB at `api.url` (PATRONBOT_TELEGRAM_API_URL)."""

    def __init__(self, *, token: str = "123456:TEST-token") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.rate_limit: RateLimit | None = None
        self.delay = 0.0  # every answer this much later (slow answers)
        self.rejected_429 = 0
        self.webhook: dict[str, Any] | None = None
        self._updates: deque[dict[str, Any]] = deque()
        self._message_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_update: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    # --- running -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Bot API base URL PTB appends the token to."""
        return f"http://127.0.0.1:{self.port}/bot"

    def __enter__(self) -> FakeTelegramAPI:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> FakeTelegramAPI:
        self._thread = threading.Thread(target=self._serve, name="fake-telegram-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Telegram Bot API did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._new_update = asyncio.Event()
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        loop.run_forever()
        loop.close()

    # --- what tests do -------------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def limit(self, *, per_second: float = 30.0, per_chat_seconds: float = 1.0) -> None:
        """Answer 429 (retry_after 1) to sendMessage beyond these rates, as Telegram does."""
        self.rate_limit = RateLimit(
            per_second=per_second, per_chat_seconds=per_chat_seconds, tokens=per_second
        )

    def push_update(self, update: dict[str, Any]) -> None:
        """Queue an update for getUpdates."""
        with self._lock:
            self._updates.append(update)
        if self._loop is not None and self._new_update is not None:
            self._loop.call_soon_threadsafe(self._new_update.set)

    def sent(self, chat_id: int | None = None) -> list[Call]:
        """The sendMessage calls answered 200 (to one chat if given)."""
        return [
            call
            for call in list(self.calls)
            if call.method == "sendMessage"
            and call.status == 200
            and (chat_id is None or call.chat_id == chat_id)
        ]

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in list(self.calls) if call.method == method]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.05)
        return condition()

    # --- the API -------------------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method != "POST" or not request.can_read_body:
            return params
        if request.content_type == "application/json":
            body = await request.json()
            return params | (body if isinstance(body, dict) else {})
        form = await request.post()  # PTB sends form-encoded parameters (multipart with files)
        for name, value in form.items():
            text = value if isinstance(value, str) else ""
            with contextlib.suppress(ValueError):
                if text[:1] in "[{":
                    params[name] = json.loads(text)
                    continue
            params[name] = text
        return params

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method in (None, method) and fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method=method, params=params, at=time.monotonic())
        self.calls.append(call)
        if request.match_info["token"] != self.token:
            call.status = 401
            return _error(401, "Unauthorized")
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self._take_fault(method)
        if fault is not None:
            answer = await self._fault(call, fault)
            if answer is not None:
                return answer
        limited = method == "sendMessage" and self.rate_limit is not None
        if limited and not self.rate_limit.admit(call.chat_id, time.monotonic()):  # type: ignore[union-attr]
            self.rejected_429 += 1
            call.status = 429
            return _error(429, "Too Many Requests: retry after 1", retry_after=1)
        return await self._answer(call)

    async def _fault(self, call: Call, fault: Fault) -> web.StreamResponse | None:
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "timeout":  # the request arrived; no answer comes
            await asyncio.sleep(fault.delay or 30)
            call.status = 0
            return _error(504, "Gateway Timeout")
        call.status = int(fault.kind)
        descriptions = {
            429: f"Too Many Requests: retry after {fault.retry_after}",
            403: "Forbidden: bot was blocked by the user",
            400: "Bad Request: chat not found",
            409: "Conflict: terminated by other getUpdates request",
            500: "Internal Server Error",
        }
        retry = fault.retry_after if call.status == 429 else None
        return _error(call.status, descriptions.get(call.status, "Error"), retry_after=retry)

    async def _answer(self, call: Call) -> web.StreamResponse:
        method, params = call.method, call.params
        if method == "getMe":
            return _ok(BOT_USER)
        if method == "sendMessage":
            chat_id = call.chat_id or 0
            message: dict[str, Any] = {
                "message_id": next(self._message_ids),
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group"},
                "from": BOT_USER,
                "text": str(params.get("text") or ""),
            }
            if isinstance(params.get("reply_markup"), dict):
                message["reply_markup"] = params["reply_markup"]
            return _ok(message)
        if method in {"answerCallbackQuery", "deleteWebhook", "setWebhook", "close", "logOut"}:
            if method == "setWebhook":
                self.webhook = params
            elif method == "deleteWebhook":
                self.webhook = None
            return _ok(True)
        if method == "getWebhookInfo":
            return _ok({"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                        "pending_update_count": len(self._updates)})  # fmt: skip
        if method == "getUpdates":
            return _ok(await self._get_updates(params))
        call.status = 404
        return _error(404, "Not Found")

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Updates from `offset` on (those before it are confirmed and dropped); waits up to `timeout`."""
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + timeout
        assert self._new_update is not None
        while True:
            with self._lock:
                while self._updates and offset and self._updates[0]["update_id"] < offset:
                    self._updates.popleft()
                ready = [update for update in self._updates if update["update_id"] >= offset][:limit]
                self._new_update.clear()
            left = deadline - time.monotonic()
            if ready or left <= 0:
                return ready
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), timeout=left)


def _ok(result: object) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, *, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


# --- updates as Telegram sends them --------------------------------------------------------------------


def user(chat_id: int, language_code: str | None = "en") -> dict[str, Any]:
    found: dict[str, Any] = {"id": chat_id, "is_bot": False, "first_name": "Pat"}
    if language_code:
        found["language_code"] = language_code
    return found


def text_update(
    update_id: int, chat_id: int, text: str, *, language_code: str | None = "en"
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Pat"},
            "from": user(chat_id, language_code),
            "text": text,
        },
    }


def callback_update(
    update_id: int, chat_id: int, data: str, *, title: str = "Yes", language_code: str | None = "en"
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "callback_query": {
            "id": f"cq{update_id}",
            "from": user(chat_id, language_code),
            "chat_instance": "1",
            "data": data,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "text": "?",
                "reply_markup": {"inline_keyboard": [[{"text": title, "callback_data": data}]]},
            },
        },
    }
