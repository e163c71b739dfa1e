"""Logging for patronbot's processes: one format, and credentials scrubbed from every line."""

from __future__ import annotations

import logging

from bot.redaction import redact_text


class RedactingFilter(logging.Filter):
    """Replaces passwords inside URLs in any log message (a driver error quoting a DSN, say)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


RECORD_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TerminalFormatter(logging.Formatter):
    """A step as an operator reads it in the terminal: the time, the level unless INFO, the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        if record.levelno != logging.INFO:
            record.message = f"{record.levelname.lower()}: {record.message}"
        return super().formatMessage(record)


QUIET_LOGGERS = ("alembic", "httpx", "httpcore")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(RECORD_FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Libraries that say too much at INFO keep to warnings, in every process (the Rasa server and the
    action server configure their own logging, so the connectors call this when they load)."""
    # Alembic narrates every plugin and migration step at INFO; operators need only its warnings.
    # httpx and httpcore log every request's full URL at INFO: Telegram's carries the bot token, and
    # a channel's URL can carry a patron's id.
    level = max(logging.WARNING, logging.getLogger().level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)


def log_steps_to_terminal(*, extra: logging.Handler | None = None) -> None:
    """`patronbot run`: its own records as short steps in the terminal, and in full to `extra` (the log
    file beside its processes' output)."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(TerminalFormatter())
    if extra is not None:
        extra.setFormatter(logging.Formatter(RECORD_FORMAT))
        extra.addFilter(RedactingFilter())
        root.addHandler(extra)
