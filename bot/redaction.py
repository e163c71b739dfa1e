"""Keeping secrets and patrons' words out of logs and error messages."""

from __future__ import annotations

import re
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
