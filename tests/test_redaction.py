"""Passwords never reach logs or messages."""

from __future__ import annotations

import logging

import pytest

from bot.redaction import redact_text, redact_url
from bot.runtime.logs import RedactingFilter


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://lib:s3cret@db:5432/crm") == "postgresql://lib:***@db:5432/crm"
    assert redact_url("sqlite:///var/patronbot.db") == "sqlite:///var/patronbot.db"


def test_redact_text_hides_passwords_inside_any_text() -> None:
    text = 'could not connect to "postgresql://lib:s3cret@db/crm" and amqp://guest:guest@mq:5672/'
    cleaned = redact_text(text)
    assert "s3cret" not in cleaned
    assert "guest@" not in cleaned
    assert "lib:***@db" in cleaned


def test_log_records_are_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("connecting to %s", "postgresql://lib:s3cret@db/crm")
    assert "s3cret" not in caplog.text
    assert "lib:***@db" in caplog.text
