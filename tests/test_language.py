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
    ],
)
def test_detect_language(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected
