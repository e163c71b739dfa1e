"""Measuring and tuning knowledge-base retrieval on labelled queries (top-1, top-3, out-of-scope AUROC)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from bot.knowledge.encoders import DEFAULT_MODEL, Encoder
from bot.knowledge.entries import Entry
from bot.knowledge.index import fuse
from bot.knowledge.retrieval import LanguageTuning, Retriever, is_near_tie
from bot.language import detect_language

OUT_OF_SCOPE = "out_of_scope"
# The share of answered queries that must be right before the bot answers without asking.
ANSWER_PRECISION = 0.9


class QueryFileError(Exception):
    """A query file line is not {"text": ..., "label": ..., "lang": ...}."""


@dataclass(frozen=True)
class Query:
    text: str
    label: str
    lang: str


def load_queries(path: Path) -> list[Query]:
    queries = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise QueryFileError(f"{path}: cannot read ({error.strerror})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text = str(item["text"])
            queries.append(
                Query(
                    text=text,
                    label=str(item["label"]),
                    lang=str(item.get("lang") or detect_language(text) or "en"),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise QueryFileError(f"{path}:{number}: not a labelled query ({error})") from None
    return queries


def _auroc(in_scope: list[float], out_of_scope: list[float]) -> float | None:
    if not in_scope or not out_of_scope:
        return None
    from sklearn.metrics import roc_auc_score

    labels = [1] * len(in_scope) + [0] * len(out_of_scope)
    return float(roc_auc_score(labels, in_scope + out_of_scope))


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    in_scope = [row for row in rows if row["label"] != OUT_OF_SCOPE]
    out = [row for row in rows if row["label"] == OUT_OF_SCOPE]
    answered = [row for row in rows if row["decision"] == "answer"]
    correct_answers = [row for row in answered if row["top"] and row["top"][0] == row["label"]]
    return {
        "queries": len(rows),
        "in_scope": len(in_scope),
        "out_of_scope": len(out),
        "top1": round(sum(row["top"][:1] == [row["label"]] for row in in_scope) / len(in_scope), 4)
        if in_scope
        else None,
        "top3": round(sum(row["label"] in row["top"][:3] for row in in_scope) / len(in_scope), 4)
        if in_scope
        else None,
        "oos_auroc": _round(_auroc([row["score"] for row in in_scope], [row["score"] for row in out])),
        "answered": len(answered),
        "answer_precision": round(len(correct_answers) / len(answered), 4) if answered else None,
        "oos_refused": round(sum(row["decision"] != "answer" for row in out) / len(out), 4) if out else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def evaluate(retriever: Retriever, queries: Sequence[Query]) -> dict[str, Any]:
    """Top-1 / top-3 on in-scope queries, AUROC of the top score for in- vs out-of-scope, per language."""
    rows: list[dict[str, Any]] = []
    for query in queries:
        decision = retriever.decide(query.text, lang=query.lang)
        rows.append(
            {
                "label": query.label,
                "lang": query.lang,
                "top": [hit.entry.id for hit in decision.hits],
                "score": decision.hits[0].score if decision.hits else 0.0,
                "decision": decision.kind,
            }
        )
    languages = sorted({str(row["lang"]) for row in rows})
    return {
        "overall": _summary(rows),
        "by_language": {lang: _summary([row for row in rows if row["lang"] == lang]) for lang in languages},
        "tuning": {lang: vars(retriever.tuning_for(lang)) for lang in languages},
    }


def _weight_grid(signals: Sequence[str], step: float = 0.1) -> list[dict[str, float]]:
    """Every way to share 1.0 among the signals in steps of `step`."""
    units = round(1 / step)
    grid: list[dict[str, float]] = []

    def fill(prefix: list[int], left: int, remaining: int) -> None:
        if remaining == 1:
            grid.append(
                {name: round(part * step, 2) for name, part in zip(signals, [*prefix, left], strict=True)}
            )
            return
        for part in range(left + 1):
            fill([*prefix, part], left - part, remaining - 1)

    fill([], units, len(signals))
    return grid


def tune(
    entries: Sequence[Entry], queries: Sequence[Query], *, encoders: Mapping[str, Encoder]
) -> dict[str, LanguageTuning]:
    """Per language: the signal weights with the best top-1 on the queries, then the thresholds.

    Two bounds: the lowest top score at which the queries the bot would answer outright (not near
    ties, which it offers as a choice) are at least 90 % right (out-of-scope ones count as wrong),
    and the score that best separates in-scope from out-of-scope (Youden's J). The higher is
    `answer`, the lower `suggest`.
    """
    retriever = Retriever(entries, encoders=encoders)
    result: dict[str, LanguageTuning] = {}
    for lang, index in retriever.indexes.items():
        chosen = [q for q in queries if q.lang == lang]
        if not chosen:
            continue
        scores = [retriever.signal_scores(q.text, lang) for q in chosen]
        ids = [entry.id for entry in index.entries]
        best_weights: dict[str, float] = {}
        best_key = (-1.0, -1.0)
        for weights in _weight_grid(retriever.signals):
            fused_all = [fuse(score, weights) for score in scores]
            in_scope = [(f, q) for f, q in zip(fused_all, chosen, strict=True) if q.label != OUT_OF_SCOPE]
            top1 = sum(ids[int(np.argmax(f))] == q.label for f, q in in_scope) / max(len(in_scope), 1)
            auroc = _auroc(
                [float(f.max()) for f, q in zip(fused_all, chosen, strict=True) if q.label != OUT_OF_SCOPE],
                [float(f.max()) for f, q in zip(fused_all, chosen, strict=True) if q.label == OUT_OF_SCOPE],
            )
            key = (round(top1, 6), auroc or 0.0)
            if key > best_key:
                best_weights, best_key = weights, key
        tops = []
        for score, query in zip(scores, chosen, strict=True):
            fused = fuse(score, best_weights)
            second, first = np.sort(fused)[-2:] if len(fused) > 1 else (-np.inf, fused.max())
            position = int(np.argmax(fused))
            tops.append(
                _Top(
                    score=float(first),
                    right=ids[position] == query.label,
                    in_scope=query.label != OUT_OF_SCOPE,
                    near_tie=is_near_tie(float(first), float(second)),
                )
            )
        # Answered outright only when both rules agree: precise enough, and not looking out of scope.
        # Where they disagree the bot offers the candidates (and a librarian), neither answering a
        # question that looks out of scope nor telling an answerable one that it does not know.
        precise, separating = _answer_threshold(tops), _suggest_threshold(tops)
        result[lang] = LanguageTuning(
            weights=best_weights,
            answer=round(max(precise, separating), 4),
            suggest=round(min(precise, separating), 4),
        )
    return result


class _Top(NamedTuple):
    """A tuning query's best entry: its score, whether it is the right one, and whether the bot would
    offer it as a choice anyway because the second best is within NEAR_TIE."""

    score: float
    right: bool
    in_scope: bool
    near_tie: bool


def _answer_threshold(tops: list[_Top]) -> float:
    for threshold in sorted({top.score for top in tops}):
        # What the bot would answer outright: near ties are offered as a choice at any score.
        answered = [top.right and top.in_scope for top in tops if top.score >= threshold and not top.near_tie]
        if answered and sum(answered) / len(answered) >= ANSWER_PRECISION:
            return threshold
    return 1.01  # nothing is safe to answer outright: always ask


def _suggest_threshold(tops: list[_Top]) -> float:
    positives = [top.score for top in tops if top.in_scope]
    negatives = [top.score for top in tops if not top.in_scope]
    if not positives or not negatives:
        return min(positives or negatives or [0.0])
    best, best_j = 0.0, -1.0
    for threshold in sorted(set(positives + negatives)):
        tpr = sum(score >= threshold for score in positives) / len(positives)
        fpr = sum(score >= threshold for score in negatives) / len(negatives)
        if tpr - fpr > best_j:
            best, best_j = threshold, tpr - fpr
    return best


def write_tuning(path: Path, *, model: str, tuning: dict[str, LanguageTuning], source: str) -> None:
    content = {
        "model": model or DEFAULT_MODEL,
        "languages": {lang: vars(values) for lang, values in sorted(tuning.items())},
    }
    header = (
        f"# Written by `patronbot faq tune` from {source}; re-run it after changing the knowledge base\n"
        "# or the models. weights: each signal's share of the score (sentence: the sentence-transformers\n"
        "# model; multilingual: multilingual-e5-small; characters: character n-grams; words: words, jieba's\n"
        "# for Chinese); answer / suggest: the top score at which the bot answers / offers candidates.\n"
    )
    path.write_text(header + yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
