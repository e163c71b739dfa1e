"""Chooses RETRIEVAL_WEIGHT in nlu/evaluation.py: whole-turn out-of-scope AUROC on the project's own
retrieval dev queries (knowledge/eval/queries_dev.jsonl), for a trained model. Never reads ../shared/eval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.faq_eval import load_queries  # noqa: E402
from bot.knowledge import Retriever, load_entries, load_tuning, make_encoders  # noqa: E402
from nlu import evaluation  # noqa: E402
from nlu.evaluation import FALLBACK, OUT_OF_SCOPE, Labelled, out_of_scope_scores, parse_all  # noqa: E402

WEIGHTS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained model (.tar.gz)")
    parser.add_argument("--queries", type=Path, default=ROOT / "knowledge/eval/queries_dev.jsonl")
    args = parser.parse_args()

    queries = load_queries(args.queries)
    rows = [
        Labelled(q.text, OUT_OF_SCOPE if q.label == OUT_OF_SCOPE else "in_scope", q.lang) for q in queries
    ]
    model_name, tuning = load_tuning(ROOT / "knowledge/retrieval.yml")
    encoders = make_encoders(sentence_model=model_name, multilingual=True)
    retriever = Retriever(load_entries(ROOT / "knowledge/faq.yml"), encoders=encoders, tuning=tuning)
    parsed = parse_all(args.model, [row.text for row in rows])
    nlu_only = out_of_scope_scores(
        [row.label for row in rows],
        [OUT_OF_SCOPE if intent == FALLBACK else intent for intent, _ in parsed],
        [c for _, c in parsed],
    )
    print(json.dumps({"nlu_only": nlu_only}))
    results = []
    for weight in WEIGHTS:
        evaluation.RETRIEVAL_WEIGHT = weight
        scores = evaluation.turn_out_of_scope_scores(rows, parsed, retriever)
        results.append((scores["auroc"] or 0.0, weight))
        print(json.dumps({"retrieval_weight": weight, "whole_turn": scores}))
    best = max(results)
    print(f"best retrieval weight: {best[1]} (AUROC {best[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
