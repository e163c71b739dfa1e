"""`patronbot` with PATRONBOT_TELEGRAM_RATE allowed above Telegram's 30 a second, for tests and benchmarks
that raise the fake Bot API's limit so that a campaign to thousands of patrons is sent in seconds.

Everything else is the real command line (`python -m tests.fakes.scaled_patronbot sender`): only the
settings' check of that one value is relaxed, since the real one refuses a rate Telegram would refuse.
"""

from __future__ import annotations

import sys

from pydantic import validator

import bot.settings


class ScaledSettings(bot.settings.Settings):
    """The settings, with any positive Telegram rate (the fake Bot API's limit is the test's)."""

    @validator("telegram_rate", allow_reuse=True)
    def _rate(cls, value: float) -> float:  # noqa: N805 (pydantic validators take cls)
        if value <= 0:
            raise ValueError(f"must be more than 0, got {value}")
        return value


bot.settings.Settings = ScaledSettings  # type: ignore[misc]

if __name__ == "__main__":
    from bot.cli.main import main

    sys.exit(main())
