"""Measuring the trained model: intents on the held-out split, topics on any topic-labelled file."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from bot.settings import PROJECT_ROOT
from bot.thread import KNOWLEDGE_INTENTS

if TYPE_CHECKING:
    from bot.knowledge.retrieval import Retriever

TOPICS_FILE = PROJECT_ROOT / "nlu" / "topics.yml"
OUT_OF_SCOPE = "out_of_scope"
FALLBACK = "nlu_fallback"
# In the whole turn's out-of-scope score, how much each unit of retrieval score below the suggest
# threshold weighs against the NLU's confidence. Chosen on knowledge/eval/queries_dev.jsonl by
# scripts/tune_scope.py (the best of 0.5 to 1,000 there; from 200 on they tie, 50 and 100 within
# 0.001), never on the shared evaluation data.
RETRIEVAL_WEIGHT = 200.0


@dataclass(frozen=True)
class Labelled:
    """An utterance with its expected label (an intent or a topic) and language."""

    text: str
    label: str
    lang: str


def intent_topics() -> dict[str, str]:
    return dict(yaml.safe_load(TOPICS_FILE.read_text(encoding="utf-8"))["topics"])


def load_heldout(path: Path, lang: str) -> list[Labelled]:
    """Held-out NLU examples in Rasa's YAML format."""
    from rasa.shared.nlu.training_data.loading import load_data

    data = load_data(str(path))
    return [Labelled(text=m.get("text"), label=m.get("intent"), lang=lang) for m in data.intent_examples]


def load_topic_file(path: Path) -> list[Labelled]:
    """Topic-labelled utterances, one JSON object a line: {"text", "topic", "lang"}."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            topic = item.get("topic") or ("out_of_scope" if item.get("scope") == "out_of_scope" else None)
            if topic:
                rows.append(
                    Labelled(text=str(item["text"]), label=str(topic), lang=str(item.get("lang") or "en"))
                )
    return rows


class Parsed(NamedTuple):
    """What the trained model made of a text: its intent, the confidence, and the out-of-scope score
    the classifier decided by (None for a model without a scope rule, or an empty text)."""

    intent: str
    confidence: float
    scope: float | None = None


def parse_all(model: Path, texts: Sequence[str]) -> list[Parsed]:
    """The trained model's intent, confidence and out-of-scope score for each text."""
    import logging

    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    from nlu.intent_model import SCOPE_SCORE_KEY

    # Rasa logs every parsed message, text included, at DEBUG; patrons' words stay out of logs.
    configure_structlog(log_level=logging.WARNING)
    agent = Agent.load(str(model))

    async def run() -> list[Parsed]:
        results = []
        for text in texts:
            parsed = await agent.parse_message(text)
            intent = parsed.get("intent") or {}
            scope = parsed.get(SCOPE_SCORE_KEY)
            results.append(
                Parsed(
                    str(intent.get("name") or "nlu_fallback"),
                    float(intent.get("confidence") or 0.0),
                    None if scope is None else float(scope),
                )
            )
        return results

    return asyncio.run(run())


def scores(expected: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    labels = sorted(set(expected))
    precision, recall, f1, support = precision_recall_fscore_support(
        expected, predicted, labels=labels, zero_division=0
    )
    return {
        "n": len(expected),
        "accuracy": round(float(accuracy_score(expected, predicted)), 4),
        "macro_f1": round(
            float(f1_score(expected, predicted, labels=labels, average="macro", zero_division=0)), 4
        ),
        "per_label": {
            label: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "n": int(n),
            }
            for label, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True)
        },
    }


def confusions(expected: Sequence[str], predicted: Sequence[str]) -> dict[str, int]:
    """How often each expected topic was taken for another ("expected -> predicted"), most frequent first."""
    counts = Counter(f"{e} -> {p}" for e, p in zip(expected, predicted, strict=True) if e != p)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _detection(actual: Sequence[bool], flagged: Sequence[bool], oos_score: Sequence[float]) -> dict[str, Any]:
    """Precision and recall of the flagged messages, and the AUROC of the out-of-scope score."""
    from sklearn.metrics import roc_auc_score

    true_positive = sum(a and f for a, f in zip(actual, flagged, strict=True))
    return {
        "precision": round(true_positive / sum(flagged), 4) if sum(flagged) else None,
        "recall": round(true_positive / sum(actual), 4) if sum(actual) else None,
        "auroc": round(float(roc_auc_score(actual, oos_score)), 4) if 0 < sum(actual) < len(actual) else None,
    }


def nlu_score(refused: bool, parsed: Parsed) -> float:
    """How likely the NLU holds a message out of scope, consistent with what it decided: the scope
    rule's score, raised by 1 when the message was refused (out of scope, or a fallback below the
    confidence threshold); for a model without a scope rule, 1 +/- the confidence of its intent."""
    if parsed.scope is not None:
        return parsed.scope + (1.0 if refused else 0.0)
    return 1.0 + parsed.confidence if refused else 1.0 - parsed.confidence


def out_of_scope_scores(
    expected: Sequence[str], predicted: Sequence[str], parsed: Sequence[Parsed]
) -> dict[str, Any]:
    """Out-of-scope detection: the bot calls it out of scope (or falls back); AUROC of `nlu_score`."""
    flagged = [label in (OUT_OF_SCOPE, FALLBACK) for label in predicted]
    oos_score = [nlu_score(refused, p) for refused, p in zip(flagged, parsed, strict=True)]
    return _detection([label == OUT_OF_SCOPE for label in expected], flagged, oos_score)


def turn_out_of_scope_scores(
    rows: Sequence[Labelled],
    parsed: Sequence[Parsed],
    retriever: Retriever,
    *,
    retrieval_weight: float = RETRIEVAL_WEIGHT,
) -> dict[str, Any]:
    """Out-of-scope detection by the bot's whole turn, not the NLU alone.

    A message is flagged when the NLU says out_of_scope or falls back, or when it is a knowledge-base
    question that retrieval cannot answer: then the bot says it does not know and offers a librarian
    instead of answering. The AUROC ranks by the NLU's score (as in `out_of_scope_scores`), raised for
    knowledge-base questions by how far retrieval's best score falls short of its suggest threshold.
    """
    flagged: list[bool] = []
    oos_score: list[float] = []
    for row, parse in zip(rows, parsed, strict=True):
        refused = parse.intent in (OUT_OF_SCOPE, FALLBACK)
        score = nlu_score(refused, parse)
        if parse.intent in KNOWLEDGE_INTENTS:
            decision = retriever.decide(row.text, lang=row.lang)
            best = decision.best
            score += retrieval_weight * (decision.suggest - (best.score if best is not None else 0.0))
            refused = decision.kind == "unknown"
        flagged.append(refused)
        oos_score.append(score)
    return _detection([row.label == OUT_OF_SCOPE for row in rows], flagged, oos_score)


def evaluate_topics(
    model: Path, rows: Sequence[Labelled], *, retriever: Retriever | None = None
) -> dict[str, Any]:
    """Topic accuracy overall, per language and per topic, and out-of-scope detection: by the NLU, and
    (given the bot's retriever) by the whole turn."""
    mapping = intent_topics()
    parsed = parse_all(model, [row.text for row in rows])
    predicted = [mapping.get(p.intent, OUT_OF_SCOPE) for p in parsed]
    expected = [row.label for row in rows]
    report: dict[str, Any] = {
        "overall": scores(expected, predicted),
        "confusions": confusions(expected, predicted),
        "out_of_scope": out_of_scope_scores(expected, predicted, parsed),
        "by_language": {},
    }
    if retriever is not None:
        report["turn_out_of_scope"] = turn_out_of_scope_scores(rows, parsed, retriever)
    in_scope = [i for i, label in enumerate(expected) if label != OUT_OF_SCOPE]
    if in_scope:
        report["in_scope_accuracy"] = round(
            sum(expected[i] == predicted[i] for i in in_scope) / len(in_scope), 4
        )
    for lang in sorted({row.lang for row in rows}):
        chosen = [i for i, row in enumerate(rows) if row.lang == lang]
        report["by_language"][lang] = scores([expected[i] for i in chosen], [predicted[i] for i in chosen])
    return report


def evaluate_intents(model: Path, rows: Sequence[Labelled], *, plot: Path | None = None) -> dict[str, Any]:
    """Intent accuracy and macro-F1 per language on held-out examples, with a confusion-matrix plot."""
    parsed = parse_all(model, [row.text for row in rows])
    predicted = [p.intent for p in parsed]
    expected = [row.label for row in rows]
    report: dict[str, Any] = {
        "overall": scores(expected, predicted),
        "confusions": confusions(expected, predicted),
        "out_of_scope": out_of_scope_scores(expected, predicted, parsed),
        "by_language": {},
    }
    for lang in sorted({row.lang for row in rows}):
        chosen = [i for i, row in enumerate(rows) if row.lang == lang]
        report["by_language"][lang] = scores([expected[i] for i in chosen], [predicted[i] for i in chosen])
    if plot is not None:
        save_confusion_matrix(expected, predicted, plot)
        report["confusion_matrix_png"] = str(plot)
    return report


def save_confusion_matrix(expected: Sequence[str], predicted: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    labels = sorted(set(expected) | set(predicted))
    figure, axes = plt.subplots(figsize=(14, 12))
    ConfusionMatrixDisplay.from_predictions(
        expected, predicted, labels=labels, ax=axes, xticks_rotation="vertical", colorbar=False
    )
    axes.set_title("patronbot intents: held-out examples")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
