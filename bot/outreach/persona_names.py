"""Naming personas: the topics and the words in both languages that set a group of patrons apart."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.models import Interaction
from bot.thread import TOPIC_INTENTS

# The topics a patron asks about: the questions the bot answers (greetings, thanks, consent, feedback
# and the like say nothing about what a patron needs). Sorted: the order of a centroid's topic part.
TOPICS: tuple[str, ...] = tuple(sorted(TOPIC_INTENTS))
# How a topic reads in a persona's name: (English, Chinese). A topic missing here reads as its intent.
TOPIC_LABELS: dict[str, tuple[str, str]] = {
    "ask_contact": ("contact", "联系方式"),
    "ask_hours": ("opening hours", "开放时间"),
    "borrowing_rules": ("borrowing rules", "借阅规则"),
    "card_account": ("library card", "读者证"),
    "e_resources": ("e-resources", "电子资源"),
    "events": ("events", "活动"),
    "fines_lost": ("fines", "罚款"),
    "holds": ("holds", "预约"),
    "interlibrary_loan": ("interlibrary loan", "馆际互借"),
    "renewal": ("renewals", "续借"),
    "research_help": ("research help", "科研支持"),
    "returns": ("returns", "还书"),
    "study_spaces": ("study spaces", "学习空间"),
    "tech_services": ("printing & IT", "打印与技术服务"),
}
NAME_TOPICS = 3
NAME_WORDS = 5
# A word names a persona only when this many of its patrons used it: one patron's words (a name, a
# title they asked for) never appear in a persona's name.
MIN_WORD_PATRONS = 2


def _wordlist(text: str) -> frozenset[str]:
    return frozenset(text.split())


_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")
# Words that name no need: function words, and the library itself (every patron says it).
ENGLISH_STOPWORDS = _wordlist(
    """
    a about after again all also am an and any are as at be been before being but by can could did do
    does doing don done for from get got had has have having he her here hers him his how i if in into
    is it its just know let like me might more most much must my need no not now of off ok okay on once
    one only or other our out over please really same she should so some still such than thank thanks
    that the their them then there these they this those through to too up us very want was we were
    what when where which while who whom why will with would yes you your yours hello hi hey library
    libraries help tell there's i'm i'd it's can't don't what's
    """
)
CHINESE_STOPWORDS = _wordlist(
    """
    请问 你好 您好 谢谢 可以 怎么 怎么样 怎样 什么 为什么 哪里 哪儿 如何 我们 你们 他们 现在 今天 明天
    一下 一个 这个 那个 还是 就是 如果 需要 想要 知道 是否 没有 能否 能不能 可不可以 是不是 有没有 吗 呢
    图书馆 麻烦 几点 多少 多久 哪些 怎么办 时候 已经 然后 但是 因为 所以 这里 那里 自己
    """
)


def patron_terms(*, session: Session, ids: Sequence[int]) -> dict[int, dict[str, Counter[str]]]:
    """The English and Chinese words each patron used in their inbound messages, with how often (purged
    texts are None)."""
    terms = {patron_id: {"en": Counter[str](), "zh": Counter[str]()} for patron_id in ids}
    rows = session.execute(
        select(Interaction.patron_id, Interaction.text).where(
            Interaction.direction == "in", Interaction.text.is_not(None)
        )
    )
    for patron_id, text in rows:
        found = terms.get(int(patron_id))
        if found is not None:
            english, chinese = message_terms(str(text))
            found["en"].update(english)
            found["zh"].update(chinese)
    return terms


def message_terms(text: str) -> tuple[list[str], list[str]]:
    """The English and Chinese words of a message that can name a persona: lowercase English words and
    jieba's words of its Chinese runs (with the library's dictionary), of two or more letters or
    characters, without stopwords or digits."""
    from bot.knowledge.text import words as chinese_words

    normalised = unicodedata.normalize("NFKC", text).lower()
    english = [
        _singular(word)
        for word in _LATIN_WORD.findall(normalised)
        if len(word) >= 3 and word not in ENGLISH_STOPWORDS  # "pc", "id": too short to name a group
    ]
    chinese = [
        word
        for run in _HAN_RUN.findall(normalised)
        for word in chinese_words(run)
        if len(word) >= 2 and word not in CHINESE_STOPWORDS
    ]
    return english, chinese


def _singular(word: str) -> str:
    """ "books" and "book" are one word to a persona: a plain plural loses its ending."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _idf(used_by: int, patrons: int) -> float:
    # Unsmoothed at the top: a word or topic every patron uses scores 0 and names no persona.
    return math.log((1 + patrons) / (1 + used_by))


def distinctive_topics(shares: NDArray[np.float64], groups: Sequence[Sequence[int]]) -> list[list[str]]:
    """Each group's topics by distinctiveness: its members' mean share of the topic x the topic's IDF
    over all clustered patrons; ties by topic name."""
    n = len(shares)
    asked_by = (shares > 0).sum(axis=0)
    ranked: list[list[str]] = []
    for group in groups:
        mean = shares[list(group)].mean(axis=0)
        scored = [(float(mean[j]) * _idf(int(asked_by[j]), n), topic) for j, topic in enumerate(TOPICS)]
        ranked.append([topic for score, topic in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0])
    return ranked


def distinctive_words(groups: Sequence[Sequence[Counter[str]]]) -> list[list[str]]:
    """Each group's words by distinctiveness: the share of its patrons who used the word x the word's
    IDF over all clustered patrons, counting each patron once (one talkative patron cannot name a
    group); words fewer than MIN_WORD_PATRONS of the group used are left out; ties go to the word said
    more often in the group, then alphabetically."""
    patrons = sum(len(group) for group in groups)
    used_by: Counter[str] = Counter(word for group in groups for words in group for word in words)
    ranked: list[list[str]] = []
    for group in groups:
        in_group: Counter[str] = Counter(word for words in group for word in words)
        mentions: Counter[str] = sum(group, Counter())
        scored = [
            (round(count / len(group) * _idf(used_by[word], patrons), 9), mentions[word], word)
            for word, count in in_group.items()
            if count >= MIN_WORD_PATRONS
        ]
        ordered = sorted(scored, key=lambda s: (-s[0], -s[1], s[2]))
        ranked.append([word for score, _, word in ordered if score > 0][:NAME_WORDS])
    return ranked
