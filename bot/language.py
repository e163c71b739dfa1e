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


# How a message that asks is written: a question mark; English that opens with a question word or an
# inverted verb ("how do I ...", "can I ..."); Chinese that opens with 怎么 / 哪 / 能不能 ..., asks with
# 请问 / 如何 / 几点 / 是否 ... anywhere, or ends with 吗 / 呢. "Why", "为什么" and a rhetorical 怎么
# ("怎么又坏了") are left out: "why is the wifi always down" is a complaint, not a question to answer.
_QUESTION_MARK = re.compile(r"[?？]")
_ENGLISH_QUESTION = re.compile(
    r"^(?:please\s+)?(?:how|what|when|where|which|who|whom|whose|can|could|do|does|did|is|are|am|was|"
    r"were|will|would|should|shall|may|might|have|has|any)\b"
)
_CHINESE_QUESTION_START = re.compile(
    r"^(?:想问|我想问|问一下|怎么(?!又|老|总|还|这么|那么|回事)|怎样|哪|能不能|可不可以|有没有)"
)
# Anywhere in the message; not 怎么 or 有没有 in the middle, as often rhetorical ("打印机怎么又坏了").
_CHINESE_QUESTION_WORDS = re.compile(
    r"请问|如何|怎样|哪里|哪儿|几点|什么时候|多少钱|能不能|可不可以|是否"
    r"|怎么(?=办|用|借|还书|续|预约|申请|登|连|打印|找|查|弄|去|走|交|付|缴|开)"
)
_CHINESE_QUESTION_END = re.compile(r"(?:吗|嘛|呢|么|没有)[。.!！~～]*$")


def is_question(text: str, *, keywords_ask: bool = True) -> bool:
    """Whether a message asks rather than tells: "how do I renew", "续借怎么办理" ask; "renewal online
    never works", "续借系统老是出错" tell. A form that asked the patron what happened takes what they
    tell as the answer, and answers what they ask before asking again. A keyword query ("wifi
    password", "续借", "wifi密码": two words or four characters at most) asks too, unless
    ``keywords_ask`` is False (where a short answer is expected)."""
    cleaned = " ".join(text.strip().lower().split())
    if not cleaned:
        return False
    if keywords_ask and len(_HAN.findall(cleaned)) <= 4 and len(_LATIN_WORD.findall(cleaned)) <= 2:
        return True
    if _QUESTION_MARK.search(cleaned):
        return True
    if _HAN.search(cleaned):
        return bool(
            _CHINESE_QUESTION_START.match(cleaned)
            or _CHINESE_QUESTION_WORDS.search(cleaned)
            or _CHINESE_QUESTION_END.search(cleaned)
        )
    return bool(_ENGLISH_QUESTION.match(cleaned))
