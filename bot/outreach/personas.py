"""Personas: patrons clustered by the topics they ask about and their interests, named in both languages."""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot.crm.database import session_scope
from bot.crm.models import Consent, Interaction, Patron, PatronInterest, Persona
from bot.crm.models.base import utcnow
from bot.thread import TOPIC_INTENTS

log = logging.getLogger(__name__)

# A persona is a profile of the patron: only patrons whose `profiling` consent is in force are placed
# in one (docs/privacy.md), as only they are in rule-made segments.
CONSENT_PURPOSE = "profiling"
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
# The number of personas tried when none is asked for: the one with the best silhouette is kept.
AUTO_CLUSTERS = range(3, 9)
# The topic part's share of a patron's squared distance to another; the interest vector has the rest.
TOPIC_WEIGHT = 0.5
# A new cluster whose centroid is at least this close (cosine) to an old persona's keeps its key.
KEEP_KEY_SIMILARITY = 0.9
NAME_TOPICS = 3
NAME_WORDS = 5
# A word names a persona only when this many of its patrons used it: one patron's words (a name, a
# title they asked for) never appear in a persona's name.
MIN_WORD_PATRONS = 2
# Above this many patrons, the number of personas is chosen on a fixed-seed sample of them.
CHOICE_SAMPLE = 5000
# Silhouette scores are quadratic in the number of patrons: above this many, a fixed-seed sample.
SILHOUETTE_SAMPLE = 3000
_UPDATE_CHUNK = 500


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


class PersonaError(Exception):
    """Personas cannot be built as asked (too few patrons, a bad number of clusters); one line."""


@dataclass(frozen=True)
class PersonaSummary:
    """A persona as staff see it: its key, its names, its top topics and words, and how many patrons."""

    key: str
    name_en: str
    name_zh: str
    topics: list[str] = field(default_factory=list)
    words: dict[str, list[str]] = field(default_factory=dict)
    size: int = 0


@dataclass
class _Patrons:
    """What clustering reads of the patrons who can be placed, in patron id order."""

    ids: list[int]
    topics: NDArray[np.float64]  # (n, len(TOPICS)): each patron's share of each topic
    vectors: NDArray[np.float64]  # (n, dims): interest vectors, zeros where absent


def build_personas(
    *, engine: Engine, clusters: int | None = None, min_messages: int = 3, seed: int = 0
) -> list[PersonaSummary]:
    """Cluster the patrons who asked at least `min_messages` times (and allow profiling) into personas,
    name them and store them in place of the old ones, largest first.

    `clusters` fixes their number; without it the best of 3 to 8 by silhouette score is kept. The same
    data and seed give the same personas. Refuses (PersonaError), changing nothing, when there are too
    few patrons to cluster."""
    if clusters is not None and clusters < 2:
        raise PersonaError(f"--clusters must be at least 2, not {clusters}")
    if min_messages < 1:
        raise PersonaError(f"--min-messages must be at least 1, not {min_messages}")
    with session_scope(engine) as session:
        patrons = _read_patrons(session=session, min_messages=min_messages)
        old = [(str(key), bytes(centroid)) for key, centroid in session.execute(_OLD_CENTROIDS) if centroid]
    features = _features(patrons)
    labels, centroids = _cluster(features, clusters=clusters, seed=seed, min_messages=min_messages)
    k = len(centroids)
    sizes = np.bincount(labels, minlength=k)
    # Largest first; ties in the order KMeans gave the centroids.
    order = sorted(range(k), key=lambda c: (-int(sizes[c]), c))
    keys = _keys([centroids[c] for c in order], old)
    members = [[patrons.ids[i] for i in np.flatnonzero(labels == c)] for c in order]
    with session_scope(engine) as session:
        terms = _patron_terms(session=session, ids=patrons.ids)
    index = {patron_id: i for i, patron_id in enumerate(patrons.ids)}
    topic_scores = _distinctive_topics(patrons.topics, [[index[p] for p in group] for group in members])
    word_scores = {
        language: _distinctive_words([[terms[p][language] for p in group] for group in members])
        for language in ("en", "zh")
    }
    summaries = [
        _summary(
            key=keys[n],
            topics=topic_scores[n],
            words={language: word_scores[language][n] for language in ("en", "zh")},
            size=len(members[n]),
        )
        for n in range(k)
    ]
    with session_scope(engine) as session:
        _store(session=session, summaries=summaries, centroids=[centroids[c] for c in order], members=members)
    log.info("built %d personas from %d patrons", k, len(patrons.ids))
    return summaries


def list_personas(*, session: Session) -> list[PersonaSummary]:
    """The stored personas, largest first."""
    rows = session.execute(select(Persona).order_by(Persona.size.desc(), Persona.key)).scalars()
    return [
        PersonaSummary(
            key=str(row.key),
            name_en=str(row.name_en),
            name_zh=str(row.name_zh),
            topics=list(row.topics or []),
            words={language: list((row.words or {}).get(language, [])) for language in ("en", "zh")},
            size=int(row.size or 0),
        )
        for row in rows
    ]


_OLD_CENTROIDS = select(Persona.key, Persona.centroid).order_by(Persona.key)


def _read_patrons(*, session: Session, min_messages: int) -> _Patrons:
    """The patrons with enough inbound messages and profiling consent, with their topic shares and
    interest vectors; those with neither a topic nor a vector are left out (nothing places them)."""
    counts = session.execute(
        select(Interaction.patron_id)
        .where(Interaction.direction == "in")
        .group_by(Interaction.patron_id)
        .having(func.count() >= min_messages)
    ).scalars()
    consenting = _consenting(session=session)
    candidates = sorted(int(patron_id) for patron_id in counts if patron_id in consenting)
    position = {patron_id: i for i, patron_id in enumerate(candidates)}
    topics = np.zeros((len(candidates), len(TOPICS)))
    topic_column = {topic: j for j, topic in enumerate(TOPICS)}
    asked = session.execute(
        select(Interaction.patron_id, Interaction.intent, func.count())
        .where(Interaction.direction == "in", Interaction.intent.in_(TOPICS))
        .group_by(Interaction.patron_id, Interaction.intent)
    )
    for patron_id, intent, count in asked:
        if patron_id in position:
            topics[position[patron_id], topic_column[str(intent)]] = float(count)
    totals = topics.sum(axis=1, keepdims=True)
    topics = np.divide(topics, totals, out=np.zeros_like(topics), where=totals > 0)
    vectors = _interest_vectors(session=session, position=position)
    placed = np.flatnonzero((totals[:, 0] > 0) | vectors.any(axis=1))
    return _Patrons(ids=[candidates[i] for i in placed], topics=topics[placed], vectors=vectors[placed])


def _consenting(*, session: Session) -> set[int]:
    """The patrons whose latest profiling decision grants it (its default is no)."""
    latest: dict[int, bool] = {}
    rows = session.execute(
        select(Consent.patron_id, Consent.granted)
        .where(Consent.purpose == CONSENT_PURPOSE)
        .order_by(Consent.patron_id, Consent.recorded_at, Consent.id)
    )
    for patron_id, granted in rows:
        latest[int(patron_id)] = bool(granted)
    return {patron_id for patron_id, granted in latest.items() if granted}


def _interest_vectors(*, session: Session, position: Mapping[int, int]) -> NDArray[np.float64]:
    """The patrons' interest vectors of the encoder most of them have (vectors of two encoders never
    mix), L2-normalised; a row of zeros for a patron without one. No columns when nobody has one."""
    rows = [
        (int(patron_id), bytes(vector), int(dims), str(model))
        for patron_id, vector, dims, model in session.execute(
            select(PatronInterest.patron_id, PatronInterest.vector, PatronInterest.dims, PatronInterest.model)
        )
        if patron_id in position and len(vector) == 4 * dims > 0
    ]
    if not rows:
        return np.zeros((len(position), 0))
    encoders = Counter((model, dims) for _, _, dims, model in rows)
    (model, dims), _ = min(encoders.items(), key=lambda item: (-item[1], item[0]))
    vectors = np.zeros((len(position), dims))
    for patron_id, vector, row_dims, row_model in rows:
        if (row_model, row_dims) == (model, dims):
            vectors[position[patron_id]] = np.frombuffer(vector, dtype=np.float32)
    return _unit_rows(vectors)


def _unit_rows(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def _features(patrons: _Patrons) -> NDArray[np.float64]:
    """One row per patron: topic shares weighted by rarity, and the interest vector, each scaled to unit
    length and then by the square root of its weight, so that the squared distance KMeans minimises is
    TOPIC_WEIGHT x the topic part's plus the rest x the vector part's, whatever their dimensions."""
    n = len(patrons.ids)
    # Topics most patrons ask about (opening hours) tell groups apart less than rare ones (smoothed IDF).
    asked_by = (patrons.topics > 0).sum(axis=0)
    idf = np.log((1 + n) / (1 + asked_by)) + 1
    topic_part = _unit_rows(patrons.topics * idf) * math.sqrt(TOPIC_WEIGHT)
    vector_part = patrons.vectors * math.sqrt(1 - TOPIC_WEIGHT)
    return np.hstack([topic_part, vector_part])


def _cluster(
    features: NDArray[np.float64], *, clusters: int | None, seed: int, min_messages: int
) -> tuple[NDArray[np.int_], list[NDArray[np.float64]]]:
    """Labels and centroids: KMeans with `clusters`, or the best of AUTO_CLUSTERS by silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(features)
    distinct = len(np.unique(features.round(9), axis=0)) if n else 0
    who = f"patrons with at least {min_messages} messages, profiling consent and a topic or interest"
    if clusters is not None:
        if distinct < clusters:
            raise PersonaError(
                f"{clusters} personas need at least {clusters} {who}; there are {n}"
                + (f" ({distinct} different)" if distinct < n else "")
                + ": nothing was changed"
            )
        candidates = [clusters]
    else:
        # A silhouette needs at least one cluster with two patrons.
        candidates = [k for k in AUTO_CLUSTERS if k <= min(distinct, n - 1)]
        if not candidates:
            raise PersonaError(
                f"choosing the number of personas needs at least {AUTO_CLUSTERS.start + 1} {who}; there are"
                f" {n}: nothing was changed (or give --clusters)"
            )
    if len(candidates) > 1:
        # The number is chosen on a fixed-seed sample of a large population (each try is ten KMeans
        # fits); the chosen number is then fitted on everyone.
        sample = features
        if n > CHOICE_SAMPLE:
            sample = features[np.sort(np.random.default_rng(seed).choice(n, CHOICE_SAMPLE, replace=False))]
        best: tuple[float, int] | None = None
        for k in candidates:
            labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(sample).labels_
            score = float(
                silhouette_score(
                    sample, labels, sample_size=min(len(sample), SILHOUETTE_SAMPLE), random_state=seed
                )
            )
            log.info("personas: k=%d silhouette %.4f", k, score)
            if best is None or score > best[0]:  # ties keep the fewer personas
                best = (score, k)
        assert best is not None
        candidates = [best[1]]
    model = KMeans(n_clusters=candidates[0], n_init=10, random_state=seed).fit(features)
    labels = np.asarray(model.labels_, dtype=np.int_)
    return labels, [np.asarray(centre, dtype=np.float64) for centre in model.cluster_centers_]


def _keys(centroids: Sequence[NDArray[np.float64]], old: Sequence[tuple[str, bytes]]) -> list[str]:
    """Keys for the new clusters (largest first): a cluster close to an old persona keeps its key, so a
    segment naming it still means the same patrons; the others get numbers after every old key, so an
    old key is never given to a different group."""
    keys: list[str | None] = [None] * len(centroids)
    pairs: list[tuple[float, int, str]] = []
    for key, blob in old:
        previous = np.frombuffer(blob, dtype=np.float32).astype(np.float64)
        for n, centroid in enumerate(centroids):
            if len(previous) == len(centroid):
                similarity = _cosine(previous, centroid)
                if similarity >= KEEP_KEY_SIMILARITY:
                    pairs.append((similarity, n, key))
    taken: set[str] = set()
    for _, n, key in sorted(pairs, key=lambda pair: (-pair[0], pair[1], pair[2])):
        if keys[n] is None and key not in taken:
            keys[n] = key
            taken.add(key)
    numbers = [int(key[1:]) for key, _ in old if re.fullmatch(r"p\d+", key)]
    following = max(numbers, default=0) + 1
    chosen: list[str] = []
    for kept in keys:
        if kept is not None:
            chosen.append(kept)
        else:
            chosen.append(f"p{following}")
            following += 1
    return chosen


def _cosine(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norms if norms > 0 else 0.0


def _patron_terms(*, session: Session, ids: Sequence[int]) -> dict[int, dict[str, Counter[str]]]:
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


def _distinctive_topics(shares: NDArray[np.float64], groups: Sequence[Sequence[int]]) -> list[list[str]]:
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


def _distinctive_words(groups: Sequence[Sequence[Counter[str]]]) -> list[list[str]]:
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


def _summary(*, key: str, topics: list[str], words: dict[str, list[str]], size: int) -> PersonaSummary:
    """Named by its top topics in each language; a group with none (placed by interest alone) by its
    top words, those of the other language where its own has none."""
    top = topics[:NAME_TOPICS]
    names = []
    for index, language in enumerate(("en", "zh")):
        parts = [TOPIC_LABELS.get(topic, (topic, topic))[index] for topic in top]
        if not parts:
            other = "zh" if language == "en" else "en"
            parts = (words[language] or words[other])[:NAME_TOPICS]
        names.append(" · ".join(parts) or (f"group {key}" if language == "en" else f"群体 {key}"))
    return PersonaSummary(key=key, name_en=names[0], name_zh=names[1], topics=top, words=words, size=size)


def _store(
    *,
    session: Session,
    summaries: Sequence[PersonaSummary],
    centroids: Sequence[NDArray[np.float64]],
    members: Sequence[Iterable[int]],
) -> None:
    """Replace every persona, and every patron's place in one, in the session's transaction."""
    session.execute(
        update(Patron)
        .where(Patron.persona_id.is_not(None))
        .values(persona_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(delete(Persona).execution_options(synchronize_session=False))
    session.flush()  # the old keys are gone before the new rows reuse them
    now = utcnow()
    for summary, centroid, patron_ids in zip(summaries, centroids, members, strict=True):
        persona = Persona(
            key=summary.key,
            name_en=summary.name_en[:200],
            name_zh=summary.name_zh[:200],
            topics=summary.topics,
            words=summary.words,
            size=summary.size,
            centroid=np.asarray(centroid, dtype=np.float32).tobytes(),
            created_at=now,
        )
        session.add(persona)
        session.flush()
        chosen = sorted(patron_ids)
        for start in range(0, len(chosen), _UPDATE_CHUNK):
            session.execute(
                update(Patron)
                .where(Patron.id.in_(chosen[start : start + _UPDATE_CHUNK]))
                .values(persona_id=persona.id)
                .execution_options(synchronize_session=False)
            )
