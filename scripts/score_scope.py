"""Compares out-of-scope scores of the intent classifier: out of fold on nlu/, then on the retrieval dev
queries, and (given --public FILE) once on a topic-labelled file, printing only its AUROCs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from tune_intents import (  # noqa: E402
    OUT_OF_SCOPE,
    cached_vectors,
    folds,
    mean_f1,
    report,
    training_examples,
    with_fallback,
)

from bot.faq_eval import load_queries  # noqa: E402
from nlu.evaluation import load_topic_file  # noqa: E402
from nlu.intent_classifier import E5IntentClassifier, IntentModel, Matrix, Vector, embed  # noqa: E402

MARGIN_WEIGHTS = (1.0, 2.0, 4.0)
SHIFTS = (5.0, 20.0, 80.0)
THRESHOLDS = (0.2, 0.3, 0.4)
FALLBACK_THRESHOLD = 0.15  # config.yml's FallbackClassifier


def scores(
    model: IntentModel, train_vectors: Vector, train_labels: list[str], texts: list[str], vectors: Vector
) -> tuple[dict[str, Matrix], dict[str, list[str]]]:
    """Each candidate score per text (higher: more likely out of scope), and the intents the bot would
    decide with the margin moved into the probabilities (by how far: beta) or by a threshold on a score."""
    probabilities = model.probabilities(texts, vectors)
    predicted, confidence = with_fallback(probabilities, model.classes, FALLBACK_THRESHOLD, 0.0)
    refused = np.array([label in (OUT_OF_SCOPE, "nlu_fallback") for label in predicted])
    top = np.array(confidence)
    similarity = np.asarray(vectors, np.float32) @ np.asarray(train_vectors, np.float32).T
    outside = np.array([label == OUT_OF_SCOPE for label in train_labels])
    margin = similarity[:, outside].max(1) - similarity[:, ~outside].max(1)
    oos = model.classes.index(OUT_OF_SCOPE)
    p_oos = probabilities[:, oos]
    found = {
        "one_minus_confidence (reported)": np.where(refused, 1 + top, 1 - top),
        "p_out_of_scope": p_oos,
        "nearest_margin": margin,
    }
    for weight in MARGIN_WEIGHTS:
        found[f"p_out_of_scope + {weight:g} x margin"] = p_oos + weight * margin
    decisions = {"beta 0": predicted}
    for beta in SHIFTS:
        # The margin moved into the probabilities (out_of_scope's odds times e^(beta x margin)), and
        # the reported score (1 +/- confidence) of what the bot would then decide.
        shifted = probabilities.copy()
        shifted[:, oos] *= np.exp(beta * margin)
        shifted /= shifted.sum(1, keepdims=True)
        decided, sure = with_fallback(shifted, model.classes, FALLBACK_THRESHOLD, 0.0)
        gone = np.array([label in (OUT_OF_SCOPE, "nlu_fallback") for label in decided])
        found[f"reported, shifted by beta {beta:g}"] = np.where(gone, 1 + np.array(sure), 1 - np.array(sure))
        decisions[f"beta {beta:g}"] = decided
    # Or decided by a threshold on p_out_of_scope + 2 x margin: out of scope at or above it, else the
    # most probable in-scope intent (nlu_fallback under the fallback threshold).
    inside = probabilities.copy()
    inside[:, oos] = 0.0
    best = inside.argmax(1)
    for threshold in THRESHOLDS:
        decisions[f"p_out_of_scope + 2 x margin >= {threshold:g}"] = [
            OUT_OF_SCOPE
            if score >= threshold
            else model.classes[i]
            if inside[row, i] >= FALLBACK_THRESHOLD
            else "nlu_fallback"
            for row, (score, i) in enumerate(zip(p_oos + 2 * margin, best, strict=True))
        ]
    return found, decisions


def aurocs(actual: list[bool], found: dict[str, Matrix]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    return {name: round(float(roc_auc_score(actual, values)), 4) for name, values in found.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", type=Path, default=ROOT / "knowledge/eval/queries_dev.jsonl")
    parser.add_argument("--public", type=Path, help="a topic-labelled JSONL file (only AUROCs are printed)")
    parser.add_argument("--cache", type=Path, default=ROOT / "var" / "tune-cache")
    args = parser.parse_args()

    config: dict[str, Any] = E5IntentClassifier.get_default_config() | {"C": 100.0, "char_C": 30.0}
    texts, labels, langs = training_examples(ROOT / "nlu")
    vectors = np.asarray(cached_vectors(texts, config, args.cache), dtype=np.float32)

    collected: dict[str, list[Matrix]] = {}
    decided: dict[str, list[str]] = {}
    actual: list[bool] = []
    expected: list[str] = []
    order: list[int] = []
    for test in folds(labels, langs, 5, 7):
        train = np.setdiff1d(np.arange(len(texts)), test)
        train_labels = [labels[i] for i in train]
        model = IntentModel.fit([texts[i] for i in train], train_labels, vectors[train], config)
        found, decisions = scores(
            model, vectors[train], train_labels, [texts[i] for i in test], vectors[test]
        )
        for name, values in found.items():
            collected.setdefault(name, []).append(values)
        for name, intents in decisions.items():
            decided.setdefault(name, []).extend(intents)
        actual += [labels[i] == OUT_OF_SCOPE for i in test]
        expected += [labels[i] for i in test]
        order += list(test)
    out_of_fold = {name: np.concatenate(parts) for name, parts in collected.items()}
    print(json.dumps({"out_of_fold_nlu": aurocs(actual, out_of_fold)}, indent=1))
    in_order = [langs[i] for i in order]
    f1 = {name: round(mean_f1(report(expected, intents, in_order)), 4) for name, intents in decided.items()}
    print(json.dumps({"out_of_fold_mean_macro_f1": f1}, indent=1))

    model = IntentModel.fit(texts, labels, vectors, config)

    def evaluate(name: str, rows: list[tuple[str, bool]]) -> None:
        rows_texts = [text for text, _ in rows]
        rows_vectors = embed(rows_texts, max_chars=int(config["max_chars"]), num_threads=1)
        found, _ = scores(model, vectors, labels, rows_texts, rows_vectors)
        print(json.dumps({name: aurocs([outside for _, outside in rows], found)}, indent=1))

    evaluate("dev_queries", [(q.text, q.label == OUT_OF_SCOPE) for q in load_queries(args.dev)])
    if args.public:
        evaluate("public", [(row.text, row.label == OUT_OF_SCOPE) for row in load_topic_file(args.public)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
