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
        "stop", "td",
    }
)  # fmt: skip
# In a message that mixes scripts, the words that carry its grammar say which language it is written
# in, not the names in it: "Please buy the novel 百年孤独" is English, "我想借 Introduction to
# Algorithms" Chinese.
_ENGLISH_FUNCTION_WORDS = frozenset(
    {
        "the", "a", "an", "please", "can", "could", "would", "will", "i", "you", "me", "my", "we", "our",
        "is", "are", "was", "do", "does", "did", "to", "of", "for", "with", "and", "or", "in", "on", "at",
        "it", "this", "that", "there", "your", "be", "not", "how", "what", "where", "when", "which",
        "want", "like", "buy", "borrow", "have", "has", "about", "from", "any", "some",
    }
)  # fmt: skip
_CHINESE_FUNCTION_CHARACTERS = re.compile(r"[的了吗呢吧我你您是在有想要请能把被给和就都也还很这那哪怎么什]")
# A patron asking for a language: "English please", "可以说中文吗", "请用英文回答".
_ASKS_ENGLISH = re.compile(
    r"(?:用|说|讲|改成|改用|换成|切换成?|切到|回复|回答)\s*(?:英文|英语)|(?:英文|英语)(?:回答|回复|交流|聊|说|吧)"
    r"|\b(?:in|speak|use|switch to|reply in|answer in|talk in)\s+english\b|^\s*english(?:\s+please)?[\s.!]*$",
    re.IGNORECASE,
)
_ASKS_CHINESE = re.compile(
    r"(?:用|说|讲|改成|改用|换成|切换成?|切到|回复|回答)\s*(?:中文|汉语|普通话)|(?:中文|汉语)(?:回答|回复|交流|聊|说|吧)"
    r"|\b(?:in|speak|use|switch to|reply in|answer in|talk in)\s+(?:chinese|mandarin)\b"
    r"|^\s*(?:chinese|中文)(?:\s+please)?[\s.!]*$",
    re.IGNORECASE,
)


def requested_language(text: str) -> Language | None:
    """The language a patron asks the bot to use ("English please", "可以说中文吗"), if they ask."""
    english, chinese = bool(_ASKS_ENGLISH.search(text)), bool(_ASKS_CHINESE.search(text))
    if english == chinese:
        return None
    return "en" if english else "zh"


_PAYLOAD = re.compile(r"/[A-Za-z_]\w*(?:\{.*\})?", re.DOTALL)


def is_payload(text: str) -> bool:
    """Whether a message is a button's payload (`/subscribe`, `/give_feedback{...}`): a tap, which says
    nothing about the patron's language."""
    return _PAYLOAD.fullmatch(text.strip()) is not None


def detect_language(text: str) -> Language | None:
    """The language of a message, or None when it has no letters to tell by (emoji, digits, empty).

    A patron who asks for a language ("English please", "请用英文回答") gets it. A message that mixes
    scripts is in the language of its grammar words ("Please buy the novel 百年孤独" is English); where
    those do not tell ("图书馆 wifi 密码"), it counts as Chinese when it has at least as many Han
    characters as Latin words: Chinese-speaking patrons borrow English keywords far more often than
    English speakers write Chinese. A message whose only words are NEUTRAL_WORDS ("ok", "wifi",
    "stop"), or a button's payload, tells nothing either.
    """
    requested = requested_language(text)
    if requested is not None:
        return requested
    if is_payload(text):
        return None
    han = len(_HAN.findall(text))
    words = _LATIN_WORD.findall(text)
    latin_words = len(words)
    if han == 0 and all(word.lower() in NEUTRAL_WORDS for word in words):
        latin_words = 0
    if han == 0 and latin_words == 0:
        return "zh" if _CJK_PUNCTUATION.search(text) else None
    if han and latin_words:
        english = sum(1 for word in words if word.lower() in _ENGLISH_FUNCTION_WORDS)
        chinese = len(_CHINESE_FUNCTION_CHARACTERS.findall(text))
        if english != chinese:
            return "en" if english > chinese else "zh"
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


# Praise for the library or its staff, which a classifier may take for a complaint or a request for a
# librarian ("the librarian at the desk was super helpful today", "馆员今天特别耐心"): kind words, and
# nothing that finds fault.
_PRAISE = re.compile(
    r"\b(?:helpful|kind|patient|great|wonderful|brilliant|amazing|friendly|excellent|thanks?|thank you|"
    r"appreciate\w*|lovely|awesome|fantastic|superb|nice)\b|耐心|热情|帮了|感谢|谢谢|点赞|好评|态度好|态度真好|"
    r"服务好|服务真好|太好了|很好|真好|棒|细心|友好|贴心|周到",
    re.IGNORECASE,
)
_FAULT = re.compile(
    r"\b(?:not|never|no|but|however|broken|rude|slow|bad|terrible|awful|wrong|problem|issue|complain\w*|"
    r"fix|dirty|noisy|cold|hot|unhelpful|impatient)\b|n't|不(?!错)|没|坏|差|慢|吵|脏|冷|热|但是|可是|投诉|问题|故障|"
    r"乱|糟",
    re.IGNORECASE,
)


def is_praise(text: str) -> bool:
    """Whether a message praises (kind words, and nothing that finds fault)."""
    return bool(_PRAISE.search(text)) and not _FAULT.search(text)


_REQUEST = re.compile(
    r"\b(?:please|can you|could you|would you|will you|fix|repair|turn|change|open|close|add|buy)\b"
    r"|\b(?:order|more copies|(?:can|could|would|will) (?:the library|they|we))\b"
    r"|能不能|能否|可以|可不可以|麻烦|请|希望|建议|修|调|换|加|开|关|采购|购买|买|订|多(?:放|采|订|开|加|配)",
    re.IGNORECASE,
)


def asks_about_it(text: str) -> bool:
    """Whether a message that reports a fault asks about it rather than reports it or asks for something
    to be done: "My friend said the printers are broken, is that true?", "打印机是不是坏了？" ask; "why is
    the wifi always down", "能不能把空调调高一点？", "经济学教材能多采购几本吗" (a purchase asked for)
    do not."""
    return is_question(text, keywords_ask=False) and not _REQUEST.search(text)


# A short acknowledgement after an answer ("ok", "alright then", "好的", "嗯嗯"): thanks, not goodbye.
_ACKNOWLEDGEMENTS = {"ok", "okay", "k", "alright", "all right", "right", "sure", "fine", "got it", "i see",
                     "understood", "noted", "cool", "好", "好的", "好滴", "嗯", "嗯嗯", "哦", "噢", "知道了",
                     "明白了", "明白", "了解", "收到", "行", "可以"}  # fmt: skip
_THEN = re.compile(r"\s*(?:then|thanks?|呢|啦|了|吧|哈)$")


# Words that, with an acknowledgement, still only acknowledge: "ok great", "got it thanks", "嗯嗯好".
_ACKNOWLEDGING = re.compile(
    r"\b(?:ok(?:ay)?|alright|all right|right|sure|fine|got it|i see|understood|noted|cool|great|perfect|"
    r"nice|good|thanks?|thank you|then|so)\b|好的|好滴|好|嗯|哦|噢|知道了|明白了|明白|了解|收到|行|可以|"
    r"谢谢|多谢|啦|了|吧|哈|呢|啊|呀|[\s.!。！,，~～]",
    re.IGNORECASE,
)


def is_acknowledgement(text: str) -> bool:
    """Whether a message only acknowledges what the bot said ("ok", "alright then", "好的呢", "ok great",
    "嗯嗯好"): at least one acknowledgement and nothing else but thanks, praise words and particles."""
    cleaned = " ".join(text.casefold().split()).strip(" .!。！,，~～")
    if cleaned in _ACKNOWLEDGEMENTS or _THEN.sub("", cleaned).strip(" ,，") in _ACKNOWLEDGEMENTS:
        return True
    has_one = any(word in cleaned for word in _ACKNOWLEDGEMENTS if len(word) > 1 or word >= "\u4e00")
    return has_one and not _ACKNOWLEDGING.sub("", cleaned)


# A complaint or suggestion left for a rating: "actually I'd rather just give feedback", "我还是打个分吧".
_RATE_INSTEAD = re.compile(
    r"\b(?:rather|instead|just)\b.*\b(?:feedback|rate|rating|review)\b"
    r"|\b(?:feedback|rate|rating|review)\b.*\binstead\b|(?:还是|只想|就|改成).{0,4}(?:评价|打分|打个分|评个分|反馈)",
    re.IGNORECASE,
)


def wants_to_rate_instead(text: str) -> bool:
    """Whether the patron says they would rather rate or give feedback than report something."""
    return bool(_RATE_INSTEAD.search(text))
