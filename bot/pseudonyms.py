"""Keyed pseudonyms of patrons' ids: HMAC with the installation's secret."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

from bot.settings import ENV_PREFIX, MIN_SECRET_KEY_CHARS, Settings, SettingsError, get_settings

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


def key_path(*, settings: Settings) -> Path:
    """Where the installation's secret is kept when `PATRONBOT_SECRET_KEY` is not set."""
    return settings.data_path / KEY_FILE


def load_key(*, settings: Settings) -> bytes:
    """The installation's secret: `PATRONBOT_SECRET_KEY`, or the key file, made on first need.

    The file's text and the setting give the same key, so an installation that grows to several
    instances copies the file's contents into the setting of each."""
    return _load(_setting(settings), key_path(settings=settings))


def installation_key() -> bytes:
    """The key of the process's settings (`get_settings()`), read once."""
    settings = get_settings()
    return _load_once(_setting(settings), key_path(settings=settings))


def _setting(settings: Settings) -> str | None:
    return settings.secret_key.get_secret_value() if settings.secret_key is not None else None


def _load(setting: str | None, path: Path) -> bytes:
    if setting is not None:
        return setting.encode("utf-8")
    if not path.exists():
        _create_key_file(path)
    return _read_key_file(path)


# Keyed by the setting and the file's path, so the key follows the settings the process reads.
_load_once = functools.lru_cache(maxsize=8)(_load)


def _create_key_file(path: Path) -> None:
    """Write a new key beside `path` (0600, synced) and publish it with a hard link, which fails if
    another process has published one first: a reader never sees a half-written key, and an existing
    key is never replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            return  # another process made it first: its key is the installation's
        log.info("made the installation's secret %s: back it up with the CRM database", path)
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def _read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not text"
        raise SettingsError(f"{path}: cannot read the installation's secret ({reason})") from None
    if len(text) < MIN_SECRET_KEY_CHARS:
        # Never replaced: a new key would stop matching the pseudonyms already stored.
        state = "is empty" if not text else f"holds fewer than {MIN_SECRET_KEY_CHARS} characters"
        raise SettingsError(
            f"{path}: the installation's secret {state}; restore it from the backup, or set"
            f" {ENV_PREFIX}SECRET_KEY to the other instances' key (deleting it makes a new key:"
            " see 'rotating' in docs/privacy.md)"
        )
    return text.encode("utf-8")


def keyed_digest(value: str, *, key: bytes) -> str:
    """HMAC-SHA256 of `value` with `key`, as 64 hex characters."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def fingerprint(value: str) -> str:
    """A short stable pseudonym of a sender id, safe to log: without the installation's secret it
    cannot be traced back to the id, even by trying every likely id."""
    return keyed_digest(value, key=installation_key())[:12]
