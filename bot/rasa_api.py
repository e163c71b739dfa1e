"""Rasa's HTTP API, as patronbot uses it: the shared token, and handing a conversation back to the bot."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from bot.redaction import fingerprint
from bot.settings import ENV_PREFIX, Settings, SettingsError

log = logging.getLogger(__name__)

TOKEN_FILE = "rasa-api-token"  # noqa: S105 (the file name, not a token)
TIMEOUT_SECONDS = 10.0


def api_token(*, settings: Settings) -> str:
    """The token Rasa's HTTP API is started with: the setting, or one generated for this installation.

    The generated token lives in `{data_dir}/rasa-api-token` (owner-only), so that `patronbot run`
    and a staff member's `patronbot escalations resolve` agree on it without configuration.
    """
    configured = settings.rasa_api_token.get_secret_value().strip()
    if configured:
        return configured
    path = settings.data_path / TOKEN_FILE
    if not path.exists():
        _write_new_token(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SettingsError(f"{path}: cannot read Rasa's API token ({error.strerror})") from None
    if not token:
        raise SettingsError(f"{path} is empty: delete it, or set {ENV_PREFIX}RASA_API_TOKEN")
    return token


def _write_new_token(path: Path) -> None:
    """Create the token file atomically: of two processes starting at once, one token wins for both."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process wrote it first: use theirs
            os.link(draft, path)
    finally:
        draft.unlink(missing_ok=True)


def resume_conversation(*, settings: Settings, rasa_sender_id: str) -> bool:
    """Tell Rasa the staff handoff is over (slot `handoff_active` false); False if Rasa cannot be told.

    The escalation is resolved in the CRM whatever this returns: the bot's relay action also clears
    the slot itself when it finds the escalation resolved.
    """
    query = urlencode({"include_events": "NONE", "token": api_token(settings=settings)})
    url = f"{settings.rasa_url}/conversations/{quote(rasa_sender_id, safe='')}/tracker/events?{query}"
    body = json.dumps([{"event": "slot", "name": "handoff_active", "value": False}]).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 (an http:// URL built from the settings)
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    conversation = fingerprint(rasa_sender_id)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as error:
        # The URL holds the token: log only the status.
        log.warning("Rasa refused to resume conversation %s: HTTP %s", conversation, error.code)
        return False
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        log.warning("Rasa is not reachable to resume conversation %s: %s", conversation, reason)
        return False
    log.info("conversation %s handed back to the bot", conversation)
    return True
