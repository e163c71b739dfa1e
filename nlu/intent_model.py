"""The intent model: linear models on e5 vectors and character n-grams, a nearest-example vote and the
out-of-scope rule, blended into one decision; saved as arrays and JSON (nothing pickled)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from nlu.features import CharVectorizer, Matrix, Vector

OUT_OF_SCOPE = "out_of_scope"
# The parse result's key for the out-of-scope score (patronbot eval ranks by it).
SCOPE_SCORE_KEY = "out_of_scope_score"


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
    (scripts/score_scope.py), but refused more of the held-out in-scope examples (docs/evaluation.md)."""

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
