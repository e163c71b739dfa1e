"""The console API's JSON answers: datetimes as ISO 8601, errors as {"error": message}."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.responses import JSONResponse


def json_safe(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def answer(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(json_safe(data), status_code=status)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
