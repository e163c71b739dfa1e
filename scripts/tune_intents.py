"""Cross-validates E5IntentClassifier's settings and the fallback threshold on the nlu/ training data only."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nlu.features import CharVectorizer, Matrix, embed  # noqa: E402
from nlu.intent_classifier import E5IntentClassifier  # noqa: E402
from nlu.intent_model import LinearModel, Neighbours, blend  # noqa: E402

FALLBACK = "nlu_fallback"
OUT_OF_SCOPE = "out_of_scope"


def training_examples(nlu_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """Texts, intents and languages (the folder name: nlu/en, nlu/zh) of every intent example."""
    from rasa.shared.nlu.training_data.loading import load_data

    texts, labels, langs = [], [], []
    for path in sorted(nlu_dir.glob("*/*.yml")):
        for message in load_data(str(path)).intent_examples:
            texts.append(str(message.get("text")))
            labels.append(str(message.get("intent")))
            langs.append(path.parent.name)
    return texts, labels, langs


def cached_vectors(texts: list[str], config: dict[str, Any], cache: Path) -> Matrix:
    key = hashlib.sha256(json.dumps([texts, config["max_chars"]]).encode()).hexdigest()[:16]
    path = cache / f"e5-{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float64)
    vectors = embed(texts, max_chars=int(config["max_chars"]), num_threads=int(config["num_threads"]))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return np.asarray(vectors, dtype=np.float64)


def folds(labels: list[str], langs: list[str], k: int, seed: int) -> list[np.ndarray[Any, Any]]:
    from sklearn.model_selection import StratifiedKFold

    strata = [f"{label}/{lang}" for label, lang in zip(labels, langs, strict=True)]
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(strata)), strata)]


def out_of_fold(fit_predict: Any, n: int, n_classes: int, test_folds: list[np.ndarray[Any, Any]]) -> Matrix:
    probabilities = np.zeros((n, n_classes))
    for test in test_folds:
        train = np.setdiff1d(np.arange(n), test)
        probabilities[test] = fit_predict(train, test)
    return probabilities


def with_fallback(
    probabilities: Matrix, classes: list[str], threshold: float, ambiguity: float
) -> tuple[list[str], list[float]]:
    """What FallbackClassifier makes of the ranking: nlu_fallback when unsure or ambiguous."""
    order = np.argsort(-probabilities, axis=1)
    predicted, confidence = [], []
    for row, ranked in zip(probabilities, order, strict=True):
        top, second = row[ranked[0]], row[ranked[1]] if len(ranked) > 1 else 0.0
        unsure = top < threshold or top - second < ambiguity
        predicted.append(FALLBACK if unsure else classes[ranked[0]])
        confidence.append(float(top))
    return predicted, confidence


def report(expected: list[str], predicted: list[str], langs: list[str]) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 per language, counting nlu_fallback as out_of_scope (as the topic map does)."""
    from sklearn.metrics import accuracy_score, f1_score

    mapped = [OUT_OF_SCOPE if p == FALLBACK else p for p in predicted]
    result = {}
    for lang in sorted(set(langs)):
        chosen = [i for i, item in enumerate(langs) if item == lang]
        gold, guess = [expected[i] for i in chosen], [mapped[i] for i in chosen]
        result[lang] = {
            "accuracy": round(float(accuracy_score(gold, guess)), 4),
            "macro_f1": round(float(f1_score(gold, guess, labels=sorted(set(gold)), average="macro")), 4),
        }
    return result


def oos_auroc(expected: list[str], predicted: list[str], confidence: list[float]) -> float:
    """The same out-of-scope score as nlu/evaluation.py, on the out-of-fold predictions."""
    from sklearn.metrics import roc_auc_score

    actual = [label == OUT_OF_SCOPE for label in expected]
    score = [
        1.0 + c if p in (OUT_OF_SCOPE, FALLBACK) else 1.0 - c
        for p, c in zip(predicted, confidence, strict=True)
    ]
    return round(float(roc_auc_score(actual, score)), 4)


def mean_f1(scores: dict[str, dict[str, float]]) -> float:
    return float(np.mean([row["macro_f1"] for row in scores.values()]))


def nearest_example_grid(
    linear: Matrix,
    vectors: Matrix,
    *,
    classes: list[str],
    y: np.ndarray[Any, Any],
    labels: list[str],
    langs: list[str],
    test_folds: list[np.ndarray[Any, Any]],
) -> list[tuple[dict[str, Any], Matrix]]:
    """The linear models' out-of-fold probabilities blended with the nearest-example vote: each
    setting's scores, and its probabilities. `y`: each label's index in `classes`."""
    n, k = len(labels), len(classes)

    def nearest(temperature: float) -> Any:
        def run(train: Any, test: Any) -> Matrix:
            neighbours = Neighbours(vectors[train].astype(np.float16), y[train], temperature)
            return neighbours.probabilities(vectors[test], k)

        return run

    neighbour_grid: list[tuple[dict[str, Any], Matrix]] = []
    for temperature in (0.005, 0.01, 0.02):
        near = out_of_fold(nearest(temperature), n, k, test_folds)
        for neighbour_weight in (0.0, 0.1, 0.2, 0.3):
            blended = blend(linear, near, neighbour_weight)
            predicted, confidence = with_fallback(blended, classes, 0.0, 0.0)
            scores = report(labels, predicted, langs)
            row = {
                "neighbour_temperature": temperature,
                "neighbour_weight": neighbour_weight,
                "scores": scores,
                "f1": round(mean_f1(scores), 4),
                "oos_auroc": oos_auroc(labels, predicted, confidence),
            }
            neighbour_grid.append((row, blended))
    return neighbour_grid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nlu", type=Path, default=ROOT / "nlu")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "tune-cache")
    parser.add_argument("--out", type=Path, help="write the full grid as JSON here")
    args = parser.parse_args()

    config = E5IntentClassifier.get_default_config()
    texts, labels, langs = training_examples(args.nlu)
    classes = sorted(set(labels))
    y = np.array([classes.index(label) for label in labels])
    vectors = cached_vectors(texts, config, args.cache)
    test_folds = folds(labels, langs, args.folds, seed=int(config["random_seed"]))
    print(f"{len(texts)} examples, {len(classes)} intents, {args.folds}-fold CV", file=sys.stderr)
    fit = {"max_iter": int(config["max_iter"]), "seed": int(config["random_seed"])}

    def e5_model(c: float) -> Any:
        def run(train: Any, test: Any) -> Matrix:
            return LinearModel.fit(vectors[train], y[train], c=c, **fit).probabilities(vectors[test])

        return run

    def char_model(c: float) -> Any:
        def run(train: Any, test: Any) -> Matrix:
            vectorizer = CharVectorizer.fit(
                [texts[i] for i in train],
                low=int(config["min_ngram"]),
                high=int(config["max_ngram"]),
                max_chars=512,
            )
            model = LinearModel.fit(vectorizer.matrix([texts[i] for i in train]), y[train], c=c, **fit)
            return model.sparse_probabilities(vectorizer.rows([texts[i] for i in test]))

        return run

    n, k = len(texts), len(classes)
    e5 = {c: out_of_fold(e5_model(c), n, k, test_folds) for c in (30.0, 100.0, 300.0, 1000.0)}
    char = {c: out_of_fold(char_model(c), n, k, test_folds) for c in (3.0, 10.0, 30.0)}

    grid: list[dict[str, Any]] = []
    for (e5_c, e5_p), (char_c, char_p), weight in itertools.product(
        e5.items(), char.items(), (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)
    ):
        probabilities = blend(e5_p, char_p, weight)
        predicted, confidence = with_fallback(probabilities, classes, 0.0, 0.0)
        scores = report(labels, predicted, langs)
        grid.append(
            {"C": e5_c, "char_C": char_c, "char_weight": weight, "scores": scores, "f1": mean_f1(scores)}
        )
    grid.sort(key=lambda row: -float(row["f1"]))
    for row in grid[:10]:
        print(json.dumps(row))
    best = grid[0]
    print("e5 only:", json.dumps(max((r for r in grid if r["char_weight"] == 0.0), key=lambda r: r["f1"])))
    print("char only:", json.dumps(max((r for r in grid if r["char_weight"] == 1.0), key=lambda r: r["f1"])))

    weight = float(best["char_weight"])
    linear = blend(e5[best["C"]], char[best["char_C"]], weight)

    neighbour_grid = nearest_example_grid(
        linear, vectors, classes=classes, y=y, labels=labels, langs=langs, test_folds=test_folds
    )
    # Best mean macro-F1; on a tie, the better out-of-scope AUROC.
    neighbour_grid.sort(key=lambda item: (-float(item[0]["f1"]), -float(item[0]["oos_auroc"])))
    print("nearest-example vote (best first):")
    for row, _ in neighbour_grid[:6]:
        print(json.dumps(row))
    probabilities = neighbour_grid[0][1]
    thresholds: list[dict[str, Any]] = []
    for threshold, ambiguity in itertools.product(np.arange(0.1, 0.71, 0.05), (0.0, 0.05, 0.1)):
        predicted, confidence = with_fallback(probabilities, classes, float(threshold), ambiguity)
        scores = report(labels, predicted, langs)
        thresholds.append(
            {
                "threshold": round(float(threshold), 2),
                "ambiguity_threshold": ambiguity,
                "scores": scores,
                "f1": round(mean_f1(scores), 4),
                "oos_auroc": oos_auroc(labels, predicted, confidence),
            }
        )
    thresholds.sort(key=lambda row: -float(row["f1"]))
    print("fallback thresholds (best first):")
    for row in thresholds[:8]:
        print(json.dumps(row))
    if args.out:
        neighbours = [row for row, _ in neighbour_grid]
        args.out.write_text(
            json.dumps({"grid": grid, "neighbours": neighbours, "thresholds": thresholds}, indent=1),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
