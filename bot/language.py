"""Which of the library's languages (Chinese or English) a patron's message is written in."""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")

# CJK Unified Ideographs (with extension A and compatibility ideographs) and CJK punctuation.
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_PUNCTUATION = re.compile(r"[\u3000-\u303f\uff01-\uff0f\uff1a-\uff20]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
# Latin words that Chinese-speaking patrons type as often as English speakers do: a message of only
# these ("ok", "wifi", "PDF", "5 stars") says nothing about the patron's language, so it does not switch
# a Chinese conversation to English.
NEUTRAL_WORDS = frozenset(
    {
        "ok", "okay", "wifi", "wi", "fi", "pdf", "app", "vpn", "id", "email", "ppt", "ipad", "usb",
        "cnki", "sci", "ssci", "doi", "isbn", "star", "stars", "vip", "qq", "wechat", "apa", "mla",
        "ebsco", "jstor", "ieee", "kindle", "pc", "mac", "ai", "gpt", "chatgpt", "emm", "hmm", "xd",
    }
)  # fmt: skip


def detect_language(text: str) -> Language | None:
    """The language of a message, or None when it has no letters to tell by (emoji, digits, empty).

    A message that mixes scripts ("图书馆 wifi 密码") counts as Chinese when it has at least as many
    Han characters as Latin words: Chinese-speaking patrons borrow English keywords far more often
    than English speakers write Chinese. A message whose only words are NEUTRAL_WORDS ("ok", "wifi")
    tells nothing either.
    """
    han = len(_HAN.findall(text))
    words = _LATIN_WORD.findall(text)
    latin_words = len(words)
    if han == 0 and all(word.lower() in NEUTRAL_WORDS for word in words):
        latin_words = 0
    if han == 0 and latin_words == 0:
        return "zh" if _CJK_PUNCTUATION.search(text) else None
    return "zh" if han >= latin_words else "en"
