"""Compares out-of-scope scores of the intent classifier: out of fold on nlu/, then on the retrieval dev
queries, and (given --public FILE) once on a topic-labelled file, printing only its AUROCs."""

from __future__ import annotations

import argparse
import itertools
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

from bot.knowledge.evaluation import load_queries  # noqa: E402
from nlu.evaluation import load_topic_file  # noqa: E402
from nlu.features import Matrix, Vector, embed  # noqa: E402
from nlu.intent_classifier import E5IntentClassifier  # noqa: E402
from nlu.intent_model import IntentModel, ScopeRule  # noqa: E402

MARGIN_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
SHIFTS = (5.0, 20.0, 80.0)
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3)
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
    # Or decided by ScopeRule (the bot's rule): out of scope at or above a threshold on
    # p_out_of_scope + weight x margin, else the most probable in-scope intent (nlu_fallback under the
    # fallback threshold); its reported score is that score, plus 1 when the message is refused.
    closest = model.neighbours.closest(vectors, len(model.classes)) if model.neighbours else None
    for weight, threshold in itertools.product(MARGIN_WEIGHTS, THRESHOLDS):
        if closest is None:
            break
        rule = ScopeRule(weight, threshold)
        rule_scores = rule.scores(probabilities, closest, oos)
        chosen, sure = rule.decide(probabilities, rule_scores, oos)
        intents = [
            model.classes[i] if i == oos or c >= FALLBACK_THRESHOLD else "nlu_fallback"
            for i, c in zip(chosen, sure, strict=True)
        ]
        name = f"rule: p_out_of_scope + {weight:g} x margin >= {threshold:g}"
        decisions[name] = intents
        gone = np.array([label in (OUT_OF_SCOPE, "nlu_fallback") for label in intents])
        found[name] = rule_scores + gone
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

    def evaluate(name: str, rows: list[tuple[str, bool]], *, refusals: bool) -> None:
        rows_texts = [text for text, _ in rows]
        rows_vectors = embed(rows_texts, max_chars=int(config["max_chars"]), num_threads=1)
        found, decisions = scores(model, vectors, labels, rows_texts, rows_vectors)
        actual = [outside for _, outside in rows]
        print(json.dumps({name: aurocs(actual, found)}, indent=1))
        if refusals:
            # How many in-scope messages each way of deciding refuses, and how many out-of-scope ones.
            refused = {
                decision: {
                    "in_scope_refused": round(
                        float(np.mean([r for r, a in zip(gone, actual, strict=True) if not a])), 4
                    ),
                    "out_of_scope_refused": round(
                        float(np.mean([r for r, a in zip(gone, actual, strict=True) if a])), 4
                    ),
                }
                for decision, intents in decisions.items()
                for gone in [[intent in (OUT_OF_SCOPE, "nlu_fallback") for intent in intents]]
            }
            print(json.dumps({f"{name}_refusals": refused}, indent=1))

    dev = [(q.text, q.label == OUT_OF_SCOPE) for q in load_queries(args.dev)]
    evaluate("dev_queries", dev, refusals=True)
    if args.public:
        public = [(row.text, row.label == OUT_OF_SCOPE) for row in load_topic_file(args.public)]
        evaluate("public", public, refusals=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
