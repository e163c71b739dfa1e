"""Keeping secrets and patrons' words out of logs and error messages."""

from __future__ import annotations

import re
import traceback
from urllib.parse import urlsplit, urlunsplit

_URL_IN_TEXT = re.compile(r"([a-z][a-z0-9+.-]*://)([^:/@\s]+):([^@\s]+)@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL_IN_TEXT.sub(r"\1\2:***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def redact_text(text: str) -> str:
    """Any credentials inside URLs in free text (an exception message, say) replaced by ***."""
    return _URL_IN_TEXT.sub(r"\1\2:***@", text)


def describe_failure(error: BaseException) -> str:
    """An exception as a log line may show it: its kind, a database's error code, and where it was
    raised; never its message, which can quote a patron's words or ids (a database error quotes the
    statement's values, a library may quote the event it failed on)."""
    original = getattr(error, "orig", None)
    code = getattr(original, "pgcode", None) or getattr(original, "sqlite_errorname", None)
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {_short_path(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}{f' {code}' if code else ''}{where}"


def failure_stack(error: BaseException) -> str:
    """Where an exception and the ones that led to it were raised, as a traceback shows it but without
    any exception's message: the code's lines only."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    lines = []
    for failure in reversed(chain):
        lines.append(f"{type(failure).__name__} (message withheld), raised through:")
        lines += traceback.format_list(traceback.extract_tb(failure.__traceback__))
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).rstrip("\n")


def _short_path(filename: str) -> str:
    """A source file's path from its package down (site-packages/rasa/core/x.py -> rasa/core/x.py)."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return "/".join(parts[-3:])
