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


def detect_language(text: str) -> Language | None:
    """The language of a message, or None when it has no letters to tell by (emoji, digits, empty).

    A message that mixes scripts ("图书馆 wifi 密码") counts as Chinese when it has at least as many
    Han characters as Latin words: Chinese-speaking patrons borrow English keywords far more often
    than English speakers write Chinese.
    """
    han = len(_HAN.findall(text))
    latin_words = len(_LATIN_WORD.findall(text))
    if han == 0 and latin_words == 0:
        return "zh" if _CJK_PUNCTUATION.search(text) else None
    return "zh" if han >= latin_words else "en"
