"""Telling Chinese from English, including mixed-script messages."""

from __future__ import annotations

import pytest

from bot.language import detect_language, is_question


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
        ("wifi login", "en"),
        ("ok thanks", "en"),
    ],
)
def test_detect_language(text: str, expected: str | None) -> None:
    assert detect_language(text) == expected


@pytest.mark.parametrize(
    "text",
    ["how do I renew?", "how do I renew", "Is the library open on Sunday", "wifi login", "续借",
     "怎么续借", "续借怎么办理", "图书馆几点开门", "可以续借吗", "请问打印在哪里", "能不能多开几个座位"],
)  # fmt: skip
def test_a_question_asks(text: str) -> None:
    assert is_question(text)


@pytest.mark.parametrize(
    "text",
    ["the online renewal never works for me", "why is the wifi always down", "The printer ate my money",
     "续借系统老是出错", "为什么续借总失败", "打印机怎么又坏了", "书怎么还没到", "阅览室太吵了", ""],
)  # fmt: skip
def test_a_statement_tells(text: str) -> None:
    assert not is_question(text)
