"""The evaluation arithmetic: accuracy, macro-F1, and out-of-scope precision, recall and AUROC."""

from __future__ import annotations

from bot.knowledge.entries import Entry
from bot.knowledge.index import Hit
from bot.knowledge.retrieval import Decision
from nlu.evaluation import (
    Labelled,
    Parsed,
    confusions,
    nlu_score,
    out_of_scope_scores,
    scores,
    turn_out_of_scope_scores,
)


def test_scores_per_label_and_macro_f1() -> None:
    report = scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert report["accuracy"] == 0.75
    assert report["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "n": 2}
    assert report["per_label"]["b"]["precision"] == 0.6667
    assert report["macro_f1"] == round((0.6667 + 0.8) / 2, 4)


def test_confusions_count_each_wrong_pair_most_frequent_first() -> None:
    expected = ["borrowing", "borrowing", "borrowing", "hours", "hours", "spaces"]
    predicted = ["card_account", "borrowing", "card_account", "out_of_scope", "hours", "spaces"]
    assert list(confusions(expected, predicted).items()) == [
        ("borrowing -> card_account", 2),
        ("hours -> out_of_scope", 1),
    ]


def test_out_of_scope_detection() -> None:
    expected = ["out_of_scope", "out_of_scope", "hours", "renewal"]
    predicted = ["out_of_scope", "hours", "hours", "out_of_scope"]
    confidence = [0.9, 0.4, 0.95, 0.6]
    parsed = [Parsed(p, c) for p, c in zip(predicted, confidence, strict=True)]
    report = out_of_scope_scores(expected, predicted, parsed)
    assert report["precision"] == 0.5
    assert report["recall"] == 0.5
    # Ranked 1.9, 0.6, 0.05, 1.6: one of the four out-of-scope/in-scope pairs is out of order.
    assert report["auroc"] == 0.75


def test_a_fallback_counts_as_refused() -> None:
    report = out_of_scope_scores(
        ["out_of_scope", "hours"],
        ["nlu_fallback", "hours"],
        [Parsed("nlu_fallback", 0.1), Parsed("hours", 0.8)],
    )
    assert report == {"precision": 1.0, "recall": 1.0, "auroc": 1.0}


def test_with_a_scope_rule_the_score_is_the_rule_s_raised_for_refusals() -> None:
    assert nlu_score(True, Parsed("out_of_scope", 0.3, scope=0.3)) == 1.3
    assert nlu_score(True, Parsed("nlu_fallback", 0.1, scope=0.05)) == 1.05
    assert nlu_score(False, Parsed("hours", 0.9, scope=-0.4)) == -0.4
    # Without one, the confidence of the intent decides.
    assert nlu_score(False, Parsed("hours", 0.9)) == 1.0 - 0.9
    assert nlu_score(True, Parsed("out_of_scope", 0.6)) == 1.6
    # Ranked by the scope score, not by confidence: the in-scope answer given with less confidence
    # but further from every out-of-scope example ranks as less likely out of scope.
    expected = ["hours", "out_of_scope", "hours"]
    parsed = [
        Parsed("hours", 0.3, scope=-0.5),
        Parsed("hours", 0.9, scope=0.15),
        Parsed("hours", 0.8, scope=0.1),
    ]
    report = out_of_scope_scores(expected, [p.intent for p in parsed], parsed)
    assert report["auroc"] == 1.0
    assert report["recall"] == 0.0


class _Retriever:
    """Stands in for the bot's retriever: a fixed best score per text, the bot's decision rule."""

    def __init__(self, best: dict[str, float]) -> None:
        self.best = best
        self.asked: list[str] = []

    def decide(self, query: str, *, lang: str | None = None, k: int = 3) -> Decision:
        self.asked.append(query)
        entry = Entry(id="e", lang="en", question="q", answer="a")
        score = self.best[query]
        kind = "answer" if score >= 0.8 else "suggest" if score >= 0.6 else "unknown"
        return Decision(kind=kind, hits=(Hit(entry=entry, score=score, signals={}),), suggest=0.6)


def test_whole_turn_counts_an_unanswerable_knowledge_question_as_out_of_scope() -> None:
    rows = [
        Labelled("renew my book", "renewal", "en"),
        Labelled("renew my car insurance", "out_of_scope", "en"),
        Labelled("hello", "greet", "en"),
        Labelled("weather tomorrow", "out_of_scope", "en"),
    ]
    # The NLU alone takes the car insurance question for a renewal, as confidently as the real one.
    parsed = [
        Parsed("renewal", 0.9),
        Parsed("renewal", 0.9),
        Parsed("greet", 0.95),
        Parsed("out_of_scope", 0.7),
    ]
    retriever = _Retriever({"renew my book": 0.9, "renew my car insurance": 0.3})
    nlu = out_of_scope_scores(
        [r.label for r in rows], ["renewal", "renewal", "greet", "out_of_scope"], parsed
    )
    turn = turn_out_of_scope_scores(rows, parsed, retriever)  # type: ignore[arg-type]
    # Only knowledge-base questions go to retrieval; greetings and refusals do not.
    assert retriever.asked == ["renew my book", "renew my car insurance"]
    assert nlu == {"precision": 1.0, "recall": 0.5, "auroc": 0.875}
    assert turn == {"precision": 1.0, "recall": 1.0, "auroc": 1.0}


def test_whole_turn_keeps_a_well_answered_question_in_scope() -> None:
    rows = [Labelled("renew my book", "renewal", "en"), Labelled("weather", "out_of_scope", "en")]
    parsed = [Parsed("renewal", 0.5), Parsed("out_of_scope", 0.4)]
    turn = turn_out_of_scope_scores(rows, parsed, _Retriever({"renew my book": 0.65}))  # type: ignore[arg-type]
    # A suggestion is not a refusal: the bot offers candidate questions.
    assert turn == {"precision": 1.0, "recall": 1.0, "auroc": 1.0}
