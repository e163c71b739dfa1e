"""Telling Chinese from English, including mixed-script messages."""

from __future__ import annotations

import pytest

from bot.language import detect_language


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("图书馆几点开门？", "zh"),
        ("When do you open on Saturday?", "en"),
        ("图书馆 wifi 密码", "zh"),
        ("请问 library hours", "zh"),
        ("What does 续借 mean?", "en"),
        ("🙂🙂", None),
        ("", None),
        ("12345", None),
        ("？？", "zh"),
        # Words Chinese-speaking patrons type too: no language, so the conversation keeps its own.
        ("ok", None),
        ("5 stars", None),
        ("WiFi", None),
        ("PDF?", None),
        ("wifi password", "en"),
        ("ok thanks", "en"),
    ],
)
def test_detect_language(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected
