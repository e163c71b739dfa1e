"""One language's search index: each model's text vectors, the words' and characters' TF-IDF, and the
shortlist that keeps a large knowledge base fast."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.knowledge.encoders import Encoder
from bot.knowledge.entries import Entry
from bot.knowledge.text import normalise_query, words

# The signals an entry is scored by: two sentence models (meaning) and two lexical ones.
SENTENCE = "sentence"
MULTILINGUAL = (
    "multilingual"  # the same e5 model and "query:" encoding as the NLU's (bot.knowledge.query_vectors)
)
CHARACTERS = "characters"
WORDS = "words"


# Past this many texts in a language, a lookup has two stages. First every entry is scored roughly: the
# leading model's (the one weighted most) vectors projected on their REDUCED_DIMENSIONS main directions,
# plus the lexical signals, which are exact and cheap. Then every model scores only the SHORTLIST entries
# that scored best, exactly. One full dot product over 150,000 vectors reads 230 MB and is bound by memory
# bandwidth; the shortlist's vectors are 5 % of that. The size was chosen on 1,000 distinct synthetic
# entries per language (about 15,600 texts, each encoded by the models) and about 310 queries per
# language (the benchmark's and the dev and test splits'): a shortlist of 51 there (the share 512 is of
# 10,000) gave every query the decision and the best score of full scans, and the same three best
# scores to all but 2 English queries; a shortlist of 26 (256 of 10,000) changed one English query's
# best entry.
SHORTLIST_FROM_TEXTS = 20_000
REDUCED_DIMENSIONS = 64
SHORTLIST = 512


# An entry's score for a signal blends its best text's score with the mean over all its texts (question,
# alternatives, question with answer): an entry whose phrasings all come close is likelier the one
# meant than an entry with one lucky phrasing. The share was chosen on the dev split
# (knowledge/eval/queries_dev.jsonl, weights re-tuned for each share): top-1 English 0.905 -> 0.937,
# Chinese 0.921 -> 0.929, out-of-scope AUROC up in both; shares 0.3-0.6 all did about as well.
ENTRY_MEAN_SHARE = 0.5


def entry_score(text_scores: NDArray[Any], starts: NDArray[Any], lengths: NDArray[Any]) -> NDArray[Any]:
    """Each entry's score from its texts' scores (an entry's texts are consecutive, from `starts`)."""
    best = np.maximum.reduceat(text_scores, starts)
    mean = np.add.reduceat(text_scores, starts) / lengths
    result: NDArray[Any] = (1.0 - ENTRY_MEAN_SHARE) * best + ENTRY_MEAN_SHARE * mean
    return result


@dataclass(frozen=True)
class Texts:
    """Some entries' text vectors: consecutive per entry, from `starts`."""

    vectors: NDArray[np.float32]
    starts: NDArray[Any]
    lengths: NDArray[Any]

    def scores(self, query: NDArray[np.float32]) -> NDArray[Any]:
        """Each entry's score: `entry_score` of its texts' cosines with the query."""
        return entry_score(self.vectors @ query, self.starts, self.lengths)


class DenseIndex:
    """One model's vectors of one language's texts, and each entry's score for a query vector."""

    def __init__(self, vectors: NDArray[np.float32], starts: NDArray[Any], *, shortlist_from: int) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.starts = starts
        self.lengths = np.diff(np.r_[starts, len(self.vectors)])
        self.basis: NDArray[np.float32] | None = None
        self.reduced: NDArray[np.float32] | None = None
        rows, dimensions = self.vectors.shape if self.vectors.ndim == 2 else (0, 0)
        if rows >= shortlist_from and dimensions > REDUCED_DIMENSIONS and len(starts) > SHORTLIST:
            # The main directions (uncentred: dot products keep the direction all vectors share), from
            # an even sample of at most 20,000 texts.
            sample = self.vectors[np.linspace(0, rows - 1, min(rows, 20_000)).astype(np.int64)]
            _, _, directions = np.linalg.svd(sample, full_matrices=False)
            self.basis = np.ascontiguousarray(directions[:REDUCED_DIMENSIONS].T, dtype=np.float32)
            self.reduced = np.ascontiguousarray(self.vectors @ self.basis)

    @property
    def shortlists(self) -> bool:
        """Whether lookups shortlist entries by this model's reduced vectors (a large index)."""
        return self.basis is not None

    def approximate(self, query: NDArray[np.float32]) -> NDArray[Any]:
        """Every entry's score in the reduced space (a large index only)."""
        if self.basis is None or self.reduced is None:
            raise ValueError("only an index of SHORTLIST_FROM_TEXTS texts or more has reduced vectors")
        return entry_score(self.reduced @ (query @ self.basis), self.starts, self.lengths)

    def texts(self, entries: NDArray[Any] | None = None) -> Texts:
        """The `entries`' text vectors, in that order (a copy); every entry's when none are named."""
        if entries is None:
            return Texts(self.vectors, self.starts, self.lengths)
        lengths = self.lengths[entries]
        offsets = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) - np.repeat(offsets - self.starts[entries], lengths)
        return Texts(self.vectors[rows], offsets, lengths)

    def exact(self, query: NDArray[np.float32], entries: NDArray[Any] | None = None) -> NDArray[Any]:
        """The `entries`' scores (`entry_score` of their texts' cosines), in that order; every entry's
        when none are named."""
        return self.texts(entries).scores(query)


class LexicalIndex:
    """Sublinear TF-IDF vectors of texts (character n-grams or words), and each text's cosine with a query."""

    def __init__(self, texts: Sequence[str], vectorizer: Any) -> None:
        self.vectorizer = vectorizer
        # Column-major: a query has a few dozen terms, and only their columns are read (at 10,000
        # entries, 0.4 ms for a Chinese query and 6 ms for an English one, instead of 17 and 65 ms).
        self.matrix = vectorizer.fit_transform(texts).tocsc()

    def text_scores(self, query: str) -> NDArray[Any]:
        terms = self.vectorizer.transform([query])
        return np.asarray(self.matrix[:, terms.indices] @ terms.data).ravel()


class LanguageIndex:
    """One language's entries: each encoder's vectors of their texts, and character n-gram and word
    TF-IDF vectors."""

    def __init__(self, entries: list[Entry], encoders: Mapping[str, Encoder]) -> None:
        self.entries = entries
        texts: list[str] = []
        owners: list[int] = []
        for position, entry in enumerate(entries):
            for text in entry.texts():
                texts.append(normalise_query(text))
                owners.append(position)
        self.owners = np.asarray(owners)
        self.starts = np.flatnonzero(np.r_[True, self.owners[1:] != self.owners[:-1]])
        self.lengths = np.diff(np.r_[self.starts, len(self.owners)])
        self.dense = {
            name: DenseIndex(encoder.encode_passages(texts), self.starts, shortlist_from=SHORTLIST_FROM_TEXTS)
            for name, encoder in encoders.items()
        }
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.lexical = {
            CHARACTERS: LexicalIndex(
                texts, TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
            ),
            WORDS: LexicalIndex(texts, TfidfVectorizer(analyzer=words, sublinear_tf=True)),
        }

    def lexical_scores(self, query: str, names: Sequence[str]) -> dict[str, NDArray[Any]]:
        """The named lexical signals' exact scores for every entry."""
        result = {}
        for name in names:
            result[name] = entry_score(self.lexical[name].text_scores(query), self.starts, self.lengths)
        return result

    def scores(
        self,
        query: str,
        query_vectors: dict[str, NDArray[np.float32]],
        lexical: Sequence[str] = (CHARACTERS, WORDS),
    ) -> dict[str, NDArray[Any]]:
        """Each signal's exact score for every entry (`entry_score` of its texts' scores): the models'
        whose query vectors are given, and the `lexical` signals'."""
        result = {name: self.dense[name].exact(vector) for name, vector in query_vectors.items()}
        return result | self.lexical_scores(query, lexical)

    def search(
        self,
        query: str,
        *,
        vector: Callable[[str], NDArray[np.float32]],
        models: Sequence[str],
        lexical: Sequence[str],
        weights: Mapping[str, float],
        k: int,
    ) -> list[Hit]:
        """The k best entries for a normalised query by the weighted signals. `vector` gives each of the
        `models`' query vectors (waiting for one still being encoded). In a large index, only the
        SHORTLIST entries the leading model and the lexical signals rank first are scored exactly."""
        candidates: NDArray[Any] | None = None
        leading = max(models, key=lambda name: weights.get(name, 0.0), default=None)
        if leading is not None and weights.get(leading, 0.0) > 0 and self.dense[leading].shortlists:
            # The lexical signals on a thread while this one makes the leading model's rough scores.
            lexical_scoring = WORKERS.submit(self.lexical_scores, query, lexical)
            approximate = self.dense[leading].approximate(vector(leading))
            scores = lexical_scoring.result()
            rough = fuse(scores | {leading: approximate}, dict(weights))
            candidates = np.argpartition(-rough, SHORTLIST - 1)[:SHORTLIST]
            scores = {name: values[candidates] for name, values in scores.items()}
        else:
            scores = self.lexical_scores(query, lexical)
        # The other models score on threads of their own, while this one scores the leading model's:
        # each gathers its shortlisted vectors, then waits for its query vector if still encoding.
        scoring = {
            name: WORKERS.submit(lambda name: self.dense[name].texts(candidates).scores(vector(name)), name)
            for name in models
            if name != leading
        }
        exact: dict[str, NDArray[Any]] = {}
        if leading is not None:
            exact[leading] = self.dense[leading].exact(vector(leading), candidates)
        exact |= {name: future.result() for name, future in scoring.items()}
        scores |= exact
        fused = fuse(scores, dict(weights))
        hits = []
        for position in np.argsort(-fused)[:k]:
            entry = int(position) if candidates is None else int(candidates[position])
            hits.append(
                Hit(
                    entry=self.entries[entry],
                    score=float(fused[position]),
                    signals={name: float(values[position]) for name, values in scores.items()},
                )
            )
        return hits


@dataclass(frozen=True)
class Hit:
    """A candidate entry for a query, with its fused score and each signal's score."""

    entry: Entry
    score: float
    signals: dict[str, float]


def fuse(scores: dict[str, NDArray[Any]], weights: dict[str, float]) -> NDArray[Any]:
    """The weighted sum of the signals' scores for every entry."""
    total: NDArray[Any] = np.zeros_like(next(iter(scores.values())), dtype=np.float64)
    for name, values in scores.items():
        total = total + weights.get(name, 0.0) * values
    return total


# A lookup's helper threads: they encode the query (a model each) and score signals while the calling
# thread scores others. A task waits only for tasks submitted before it, so the pool cannot deadlock.
WORKERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="retrieval")
