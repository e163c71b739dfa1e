"""The questions the bot could not answer, clustered by meaning (multilingual-e5), for the knowledge base."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, aliased

from bot.crm.models import Interaction, utcnow
from bot.knowledge.encoders import Encoder, MultilingualEncoder
from bot.language import LANGUAGES, detect_language, is_payload

FALLBACK_INTENT = "nlu_fallback"
# What the bot's next message is `produced_by` (bot/ingest/events.py: the response's `utter_action`, else
# the last action) when it could not answer: the knowledge base's "I don't know" and "did you mean"
# (actions/knowledge.py), and the fallback's "please rephrase" and handoff (actions/handoff.py, and
# Rasa's own core fallback, which utters utter_default).
FALLBACK_PRODUCERS = (
    "utter_faq_unknown",
    "utter_faq_did_you_mean",
    "utter_default",
    "utter_fallback_handoff",
    "action_fallback",
    "action_default_fallback",
)
PERIOD_DAYS = 30
LATEST = 2000
EXAMPLES = 5
BATCH = 64

# Two questions (or groups of them) join when the mean cosine between their members' vectors, each with
# its language's mean direction taken away, is at least JOIN_AT; a pair in two languages counts
# ACROSS_LANGUAGES more. e5's raw cosines say more about the language than the meaning: "我的卡丢了" is
# closer to "打印机坏了" (0.875) than to "I lost my library card". Without the language direction, and
# with cross-language pairs (which still score lower than same-language paraphrases) raised, they come
# together. Chosen on two sets of library questions of our own (none from the evaluation sets): 14 and
# 8 topics, each in two Chinese and two English phrasings. Average linkage here gave adjusted Rand
# indexes of 0.87 and 0.62 (raw cosines: 0.42 and 0.45 at best), and the only choices that did better
# on one set did worse on the other or kept "几点关门" apart from "what time do you close".
JOIN_AT = 0.42
ACROSS_LANGUAGES = 0.15

# Everyday library questions in each language, on topics of their own: their mean vector is the
# language's direction in e5's space (what every sentence in that language shares, whatever it says).
LANGUAGE_REFERENCE = {
    "zh": (
        "怎么续借图书", "借书可以借多久", "逾期罚款怎么交", "研讨室怎么预约", "馆际互借怎么申请",
        "数据库在校外怎么访问", "怎么找参考咨询馆员", "还书可以放在还书箱吗", "怎么推荐图书馆买书",
        "自习座位怎么预约", "图书馆在哪里", "电子书怎么下载", "怎么查找期刊文章", "预约的书到了吗",
        "可以借多少本书", "怎么联系图书馆",
    ),
    "en": (
        "how do I renew a book", "how long can I borrow a book", "how do I pay an overdue fine",
        "how do I book a study room", "how do I request an interlibrary loan",
        "how can I access databases off campus", "how can I talk to a reference librarian",
        "can I use the book drop", "how do I suggest a book for the library to buy",
        "how do I reserve a study seat", "where is the library", "how do I download an ebook",
        "how do I find journal articles", "is my hold ready", "how many books can I borrow",
        "how do I contact the library",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class UnansweredQuestion:
    """One patron message the bot could not answer."""

    interaction_id: int
    patron_id: int
    text: str
    language: str | None
    occurred_at: dt.datetime


@dataclass(frozen=True)
class QuestionCluster:
    """Patrons' questions that mean the same, with the phrasing closest to their centre."""

    representative: str
    language: str | None  # the representative's
    count: int  # messages
    patrons: int  # distinct patrons
    languages: tuple[str, ...]
    examples: tuple[str, ...]  # distinct phrasings, the representative first, most asked next
    alternatives: tuple[str, ...]  # the other examples in the representative's language
    first_seen: dt.datetime
    last_seen: dt.datetime
    shown_patrons: tuple[int, ...]  # whose words the examples are


def unanswered_questions(
    *, session: Session, days: int = PERIOD_DAYS, limit: int = LATEST, now: dt.datetime | None = None
) -> list[UnansweredQuestion]:
    """The latest `limit` patron messages of the last `days` the bot could not answer, newest first:
    the bot's next message in the conversation was a fallback (`FALLBACK_PRODUCERS`), or the NLU could
    not place the message and the bot said nothing after it. A message the NLU could not place but a
    form took as its answer (a feedback comment) was answered. Purged texts are left out."""
    since = (now or utcnow()) - dt.timedelta(days=days)
    asked, reply = Interaction, aliased(Interaction)
    next_reply = (
        select(reply.produced_by)
        .where(
            reply.conversation_id == asked.conversation_id,
            reply.direction == "out",
            or_(
                reply.occurred_at > asked.occurred_at,
                and_(reply.occurred_at == asked.occurred_at, reply.id > asked.id),
            ),
        )
        .order_by(reply.occurred_at, reply.id)
        .limit(1)
        .correlate(asked)
        .scalar_subquery()
    )
    query = (
        select(asked.id, asked.patron_id, asked.text, asked.language, asked.occurred_at)
        .where(
            asked.direction == "in",
            asked.text.is_not(None),
            asked.occurred_at >= since,
            or_(
                next_reply.in_(FALLBACK_PRODUCERS),
                and_(asked.intent == FALLBACK_INTENT, next_reply.is_(None)),
            ),
        )
        .order_by(asked.occurred_at.desc(), asked.id.desc())
        .limit(limit)
    )
    return [
        UnansweredQuestion(
            interaction_id=int(row.id),
            patron_id=int(row.patron_id),
            text=str(row.text),
            language=row.language,
            occurred_at=row.occurred_at,
        )
        for row in session.execute(query)
        if str(row.text).strip() and not is_payload(str(row.text))
    ]


class RememberingEncoder:
    """Remembers the query vectors of the last `size` texts it encoded, so the page shown again encodes
    only the questions asked since."""

    def __init__(self, encoder: Encoder, *, size: int = 20_000) -> None:
        self.encoder = encoder
        self.size = size
        self._vectors: OrderedDict[str, NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()

    def encode_queries(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        for start in range(0, len(missing), BATCH):
            batch = missing[start : start + BATCH]
            vectors = self.encoder.encode_queries(batch)
            with self._lock:
                for text, vector in zip(batch, vectors, strict=True):
                    self._vectors[text] = np.asarray(vector, dtype=np.float32)
        with self._lock:
            found = {text: self._vectors[text] for text in texts if text in self._vectors}
            for text in found:
                self._vectors.move_to_end(text)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        missed = [text for text in texts if text not in found]  # evicted meanwhile by another thread
        if missed:
            found |= dict(zip(missed, self.encoder.encode_queries(missed), strict=True))
        return np.stack([found[text] for text in texts]) if texts else np.zeros((0, 0), np.float32)

    def encode_passages(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.encoder.encode_passages(texts)


_SHARED: list[RememberingEncoder] = []
_SHARED_LOCK = threading.Lock()


def shared_encoder() -> RememberingEncoder:
    """One multilingual-e5 for the process's clustering (loaded on first use), remembering vectors."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(RememberingEncoder(MultilingualEncoder()))
        return _SHARED[0]


def _key(text: str) -> str:
    """Phrasings that differ only in case and spacing are one."""
    return " ".join(text.split()).casefold()


def _language(question: UnansweredQuestion) -> str | None:
    return question.language if question.language in LANGUAGES else detect_language(question.text)


def meaning_vectors(
    texts: Sequence[str], languages: Sequence[str | None], *, encoder: Encoder
) -> NDArray[np.float32]:
    """Unit e5 query vectors with each text's language direction taken away (`LANGUAGE_REFERENCE`; both
    languages' for a text in neither), so that what is left is mostly what the text means."""
    names = list(LANGUAGE_REFERENCE)
    reference = encoder.encode_queries([text for name in names for text in LANGUAGE_REFERENCE[name]])
    means, start = {}, 0
    for name in names:
        end = start + len(LANGUAGE_REFERENCE[name])
        means[name] = reference[start:end].mean(axis=0)
        start = end
    neither = np.mean(list(means.values()), axis=0)
    vectors = encoder.encode_queries(list(texts))
    centred = vectors - np.stack([means.get(language or "", neither) for language in languages])
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.asarray(centred / np.maximum(norms, 1e-12), dtype=np.float32)


def group_by_meaning(
    vectors: NDArray[np.float32], languages: Sequence[str | None], *, join_at: float = JOIN_AT
) -> list[int]:
    """Each vector's group number: average-linkage clustering, cut where the mean similarity between two
    groups (cosine, plus ACROSS_LANGUAGES for two languages) falls below `join_at`."""
    if len(vectors) < 2:
        return [0] * len(vectors)
    from sklearn.cluster import AgglomerativeClustering

    spoken = np.array([language or "" for language in languages])
    similarity = vectors @ vectors.T + ACROSS_LANGUAGES * (spoken[:, None] != spoken[None, :])
    distances = np.clip(1.0 - similarity, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    grouping = AgglomerativeClustering(
        n_clusters=None, affinity="precomputed", linkage="average", distance_threshold=1.0 - join_at
    )
    return [int(group) for group in grouping.fit_predict((distances + distances.T) / 2)]


def cluster_questions(
    questions: Sequence[UnansweredQuestion], *, encoder: Encoder, join_at: float = JOIN_AT
) -> list[QuestionCluster]:
    """The questions grouped by meaning, the most asked group first. Each distinct phrasing is encoded
    once (in batches); a group's representative is its phrasing closest to the group's centre."""
    phrasings: dict[str, list[UnansweredQuestion]] = {}
    for question in questions:
        phrasings.setdefault(_key(question.text), []).append(question)
    keys = list(phrasings)
    if not keys:
        return []
    texts = [phrasings[key][0].text.strip() for key in keys]
    languages = [_language(phrasings[key][0]) for key in keys]
    vectors = meaning_vectors(texts, languages, encoder=encoder)
    members: dict[int, list[int]] = {}
    for index, group in enumerate(group_by_meaning(vectors, languages, join_at=join_at)):
        members.setdefault(group, []).append(index)
    clusters = [
        _cluster([phrasings[keys[i]] for i in indexes], [texts[i] for i in indexes], vectors[indexes])
        for indexes in members.values()
    ]
    clusters.sort(
        key=lambda cluster: (-cluster.count, -cluster.last_seen.timestamp(), cluster.representative)
    )
    return clusters


def _cluster(
    asked: list[list[UnansweredQuestion]],
    texts: list[str],
    vectors: NDArray[np.float32],
) -> QuestionCluster:
    centre = vectors.mean(axis=0)
    closeness = vectors @ centre
    counts = [len(messages) for messages in asked]
    central = max(range(len(texts)), key=lambda i: (closeness[i], counts[i]))
    others = sorted((i for i in range(len(texts)) if i != central), key=lambda i: (-counts[i], -closeness[i]))
    shown = [central, *others][:EXAMPLES]
    every = [question for messages in asked for question in messages]
    language = _language(asked[central][0])
    spoken = Counter(_language(question) or "" for question in every)
    return QuestionCluster(
        representative=texts[central],
        language=language,
        count=len(every),
        patrons=len({question.patron_id for question in every}),
        languages=tuple(sorted(name for name in spoken if name)),
        examples=tuple(texts[i] for i in shown),
        alternatives=tuple(texts[i] for i in shown[1:] if _language(asked[i][0]) == language),
        first_seen=min(question.occurred_at for question in every),
        last_seen=max(question.occurred_at for question in every),
        shown_patrons=tuple(sorted({question.patron_id for i in shown for question in asked[i]})),
    )


def unanswered_clusters(
    *,
    session: Session,
    days: int = PERIOD_DAYS,
    limit: int = LATEST,
    encoder: Encoder | None = None,
    now: dt.datetime | None = None,
) -> list[QuestionCluster]:
    """The period's unanswered questions clustered by meaning (`encoder`: e5 by default)."""
    questions = unanswered_questions(session=session, days=days, limit=limit, now=now)
    return cluster_questions(questions, encoder=encoder or shared_encoder())
