"""Personas: patrons clustered by the topics they ask about and their interests, named in both languages."""

from __future__ import annotations

import logging
import math
import re
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
from bot.outreach.persona_names import (
    CHINESE_STOPWORDS,
    ENGLISH_STOPWORDS,
    MIN_WORD_PATRONS,
    NAME_TOPICS,
    NAME_WORDS,
    TOPIC_LABELS,
    TOPICS,
    distinctive_topics,
    distinctive_words,
    message_terms,
    patron_terms,
)

# What personas offer; the naming part is in persona_names and read from here too.
__all__ = [
    "AUTO_CLUSTERS",
    "CHINESE_STOPWORDS",
    "CHOICE_SAMPLE",
    "CONSENT_PURPOSE",
    "ENGLISH_STOPWORDS",
    "KEEP_KEY_SIMILARITY",
    "MIN_WORD_PATRONS",
    "NAME_TOPICS",
    "NAME_WORDS",
    "SILHOUETTE_SAMPLE",
    "TOPICS",
    "TOPIC_LABELS",
    "TOPIC_WEIGHT",
    "PersonaError",
    "PersonaSummary",
    "build_personas",
    "list_personas",
    "message_terms",
]

log = logging.getLogger(__name__)

# A persona is a profile of the patron: only patrons whose `profiling` consent is in force are placed
# in one (docs/privacy.md), as only they are in rule-made segments.
CONSENT_PURPOSE = "profiling"
# The number of personas tried when none is asked for: the one with the best silhouette is kept.
AUTO_CLUSTERS = range(3, 9)
# The topic part's share of a patron's squared distance to another; the interest vector has the rest.
TOPIC_WEIGHT = 0.5
# A new cluster whose centroid is at least this close (cosine) to an old persona's keeps its key.
KEEP_KEY_SIMILARITY = 0.9
# Above this many patrons, the number of personas is chosen on a fixed-seed sample of them.
CHOICE_SAMPLE = 5000
# Silhouette scores are quadratic in the number of patrons: above this many, a fixed-seed sample.
SILHOUETTE_SAMPLE = 3000
_UPDATE_CHUNK = 500


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
        terms = patron_terms(session=session, ids=patrons.ids)
    index = {patron_id: i for i, patron_id in enumerate(patrons.ids)}
    topic_scores = distinctive_topics(patrons.topics, [[index[p] for p in group] for group in members])
    word_scores = {
        language: distinctive_words([[terms[p][language] for p in group] for group in members])
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
