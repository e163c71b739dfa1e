"""A fake WeChat API: a real local HTTP server issuing access tokens (each fetch invalidates the last, as
WeChat does) and taking customer-service and template messages; it records every call and can answer
with an errcode, an HTTP error, a slow answer or none at all."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "/cgi-bin/token"
CUSTOM_SEND = "/cgi-bin/message/custom/send"
TEMPLATE_SEND = "/cgi-bin/message/template/send"


@dataclass
class Call:
    """One request the fake received, and what it answered."""

    path: str
    query: dict[str, str]
    body: Any
    status: int = 200
    answer: Any = None

    @property
    def errcode(self) -> int | None:
        return self.answer.get("errcode") if isinstance(self.answer, dict) else None


@dataclass
class Fault:
    """An injected answer for the next call to a path: an errcode, an HTTP status, a delay (longer than
    the client's timeout: a timeout after the request was sent), and whether the message still counts
    as delivered (a slow success)."""

    errcode: int | None = None
    status: int = 200
    delay: float = 0.0


@dataclass
class FakeWeChatApi:
    """Serve on 127.0.0.1 on a free port; `url` is the base (PATRONBOT_WECHAT_API_URL)."""

    appid: str = "wx-test-app"
    secret: str = "test-secret"
    expires_in: int = 7200
    calls: list[Call] = field(default_factory=list)
    token_fetches: int = 0
    valid_token: str | None = None
    # Each answer of every call is delayed this long (a slow API), unless a fault says otherwise.
    delay: float = 0.0
    _faults: dict[str, deque[Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "the fake is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeWeChatApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self, body=None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw.decode("utf-8")) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                fake._serve(self, body=body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-wechat").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def fail(self, path: str, *faults: Fault) -> None:
        """Answer the next calls to `path` with these faults, in order."""
        with self._lock:
            self._faults.setdefault(path, deque()).extend(faults)

    def invalidate_token(self) -> None:
        """WeChat forgets the current token (another client fetched one, or it expired early)."""
        with self._lock:
            self.valid_token = None

    def sent(self, path: str = CUSTOM_SEND) -> list[Call]:
        """The calls to `path` that WeChat took (errcode 0)."""
        with self._lock:
            return [call for call in self.calls if call.path == path and call.errcode == 0]

    def messages_to(self, openid: str) -> list[str]:
        """The texts of customer-service messages taken for `openid`, in order."""
        return [call.body["text"]["content"] for call in self.sent() if call.body.get("touser") == openid]

    def _serve(self, handler: BaseHTTPRequestHandler, *, body: Any) -> None:
        parts = urlsplit(handler.path)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        call = Call(path=parts.path, query=query, body=body)
        with self._lock:
            queued = self._faults.get(parts.path)
            fault = queued.popleft() if queued else None
            self.calls.append(call)
        pause = fault.delay if fault is not None and fault.delay else self.delay
        if pause:
            time.sleep(pause)
        if fault is not None and fault.status != 200:
            call.status, call.answer = fault.status, {"error": "injected"}
        elif fault is not None and fault.errcode is not None:
            call.answer = {"errcode": fault.errcode, "errmsg": "injected"}
        else:
            call.answer = self._answer(parts.path, query, body)
        payload = json.dumps(call.answer, ensure_ascii=False).encode("utf-8")
        try:
            handler.send_response(call.status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up waiting (a timeout it asked for)
            pass

    def _answer(self, path: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if path == TOKEN:
            if query.get("grant_type") != "client_credential":
                return {"errcode": 40002, "errmsg": "invalid grant_type"}
            if query.get("appid") != self.appid:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            if query.get("secret") != self.secret:
                return {"errcode": 40125, "errmsg": "invalid appsecret"}
            with self._lock:
                self.token_fetches += 1
                self.valid_token = f"token-{self.token_fetches}-{secrets.token_hex(8)}"
                return {"access_token": self.valid_token, "expires_in": self.expires_in}
        if path not in (CUSTOM_SEND, TEMPLATE_SEND):
            return {"errcode": 40066, "errmsg": "invalid url"}
        with self._lock:
            if not query.get("access_token") or query.get("access_token") != self.valid_token:
                return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        if not isinstance(body, dict) or not body.get("touser"):
            return {"errcode": 44002, "errmsg": "empty post data"}
        if path == TEMPLATE_SEND:
            if not body.get("template_id") or not isinstance(body.get("data"), dict):
                return {"errcode": 40037, "errmsg": "invalid template_id"}
            return {"errcode": 0, "errmsg": "ok", "msgid": secrets.randbelow(10**12)}
        if body.get("msgtype") != "text" or not (body.get("text") or {}).get("content"):
            return {"errcode": 40008, "errmsg": "invalid message type"}
        return {"errcode": 0, "errmsg": "ok"}
