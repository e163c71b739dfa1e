"""Refuses requests whose query or body text holds NUL, which PostgreSQL cannot store, with a 400."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM = "text may not contain NUL characters"
LARGEST_CHECKED = 1_000_000  # bytes; larger bodies are left to the handler's own limits


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds NUL in any string, key or value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def body_holds_nul(content_type: str, body: bytes) -> bool:
    """Whether a JSON or form body holds NUL once decoded (a raw NUL byte counts in any text body)."""
    if b"\x00" in body:
        return True
    if content_type.startswith("application/x-www-form-urlencoded"):
        return b"\x00" in unquote_to_bytes(body.replace(b"+", b" "))
    if "json" in content_type and b"\\u0000" in body.lower():
        try:
            return holds_nul(json.loads(body))
        except ValueError:
            return False  # the handler says what is wrong with it
    return False


class NulGuard:
    """An ASGI middleware: a NUL in the query string or in a JSON or form body is refused up front."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
            await _refusal(scope)(scope, receive, send)
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        read = await _read(receive)
        if read is None:
            return  # the client went away before sending its body
        body, finished = read
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        if finished and body_holds_nul(content_type, body):
            await _refusal(scope)(scope, receive, send)
            return
        await self.app(scope, _replay(body, finished, receive), send)


async def _read(receive: Receive) -> tuple[bytes, bool] | None:
    """The body up to LARGEST_CHECKED bytes and whether that was all of it; None if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > LARGEST_CHECKED:
            return b"".join(chunks), False


def _replay(body: bytes, finished: bool, receive: Receive) -> Receive:
    """Hands the handler the body already read, then whatever is still to come."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not finished}
        return await receive()

    return replayed


def _refusal(scope: Scope) -> Response:
    if str(scope.get("path", "")).startswith("/api/"):
        return JSONResponse({"error": PROBLEM}, status_code=400)
    return PlainTextResponse(PROBLEM, status_code=400)
