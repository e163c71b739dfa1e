"""Chooses RETRIEVAL_WEIGHT in nlu/evaluation.py: whole-turn out-of-scope AUROC on the project's own
retrieval dev queries (knowledge/eval/queries_dev.jsonl), for a trained model. Never reads ../shared/eval."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.knowledge.evaluation import load_queries  # noqa: E402
from bot.knowledge.service import KnowledgeService  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from nlu.evaluation import (  # noqa: E402
    FALLBACK,
    OUT_OF_SCOPE,
    Labelled,
    out_of_scope_scores,
    parse_all,
    turn_out_of_scope_scores,
)

WEIGHTS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="a trained model (.tar.gz)")
    parser.add_argument("--queries", type=Path, default=ROOT / "knowledge/eval/queries_dev.jsonl")
    args = parser.parse_args()

    queries = load_queries(args.queries)
    rows = [
        Labelled(q.text, OUT_OF_SCOPE if q.label == OUT_OF_SCOPE else "in_scope", q.lang) for q in queries
    ]
    retriever = KnowledgeService.from_settings(load_settings()).retriever()
    parsed = parse_all(args.model, [row.text for row in rows])
    nlu_only = out_of_scope_scores(
        [row.label for row in rows],
        [OUT_OF_SCOPE if p.intent == FALLBACK else p.intent for p in parsed],
        parsed,
    )
    print(json.dumps({"nlu_only": nlu_only}))
    results = []
    for weight in WEIGHTS:
        scores = turn_out_of_scope_scores(rows, parsed, retriever, retrieval_weight=weight)
        results.append((weight, scores["auroc"] or 0.0))
        print(json.dumps({"retrieval_weight": weight, "whole_turn": scores}))
    top = max(auroc for _, auroc in results)
    weight = min(weight for weight, auroc in results if auroc == top)  # on a tie, the smallest weight
    print(f"best retrieval weight: {weight} (AUROC {top})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
