"""The web chat widget's session ids: issued by the server, 128 random bits plus an HMAC tag.

A session id is `<32 hex: 128 random bits>.<32 hex: HMAC-SHA256 tag, keyed with the installation's
secret>`. The browser keeps it (the widget's local storage) and shows it when it comes back; the
server accepts it only if the tag is right, so no browser can choose or forge a conversation, and the
server stores nothing to know which ids it issued. The conversation's Rasa sender id is
`webchat:<the random part>`: the tag never leaves the browser and the server, so a sender id read in
the CRM or an export cannot be turned back into a session id without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SESSION_BYTES = 16  # 128 random bits
TAG_HEX = 32  # 128 bits of the tag
_DOMAIN = b"patronbot webchat session\x00"  # keeps these tags apart from other uses of the same key
_SESSION = re.compile(rf"([0-9a-f]{{{2 * SESSION_BYTES}}})\.([0-9a-f]{{{TAG_HEX}}})")
CHANNEL = "webchat"


def _tag(random_part: str, *, key: bytes) -> str:
    return hmac.new(key, _DOMAIN + random_part.encode("ascii"), hashlib.sha256).hexdigest()[:TAG_HEX]


def issue_session(*, key: bytes) -> str:
    """A new session id for a browser that has none (or brought one the server did not issue)."""
    random_part = secrets.token_hex(SESSION_BYTES)
    return f"{random_part}.{_tag(random_part, key=key)}"


def sender_of(session_id: object, *, key: bytes) -> str | None:
    """The Rasa sender id (`webchat:<random part>`) of a session id this server issued; None for
    anything else (not a string, the wrong shape, a tag that does not match)."""
    if not isinstance(session_id, str) or len(session_id) != 2 * SESSION_BYTES + 1 + TAG_HEX:
        return None
    found = _SESSION.fullmatch(session_id)
    if found is None:
        return None
    random_part, tag = found.groups()
    if not hmac.compare_digest(tag, _tag(random_part, key=key)):
        return None
    return f"{CHANNEL}:{random_part}"
