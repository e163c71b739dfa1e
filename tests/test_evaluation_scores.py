"""The evaluation arithmetic: accuracy, macro-F1, and out-of-scope precision, recall and AUROC."""

from __future__ import annotations

from nlu.evaluation import out_of_scope_scores, scores


def test_scores_per_label_and_macro_f1() -> None:
    report = scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert report["accuracy"] == 0.75
    assert report["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "n": 2}
    assert report["per_label"]["b"]["precision"] == 0.6667
    assert report["macro_f1"] == round((0.6667 + 0.8) / 2, 4)


def test_out_of_scope_detection() -> None:
    expected = ["out_of_scope", "out_of_scope", "hours", "renewal"]
    predicted = ["out_of_scope", "hours", "hours", "out_of_scope"]
    confidence = [0.9, 0.4, 0.95, 0.6]
    report = out_of_scope_scores(expected, predicted, confidence)
    assert report["precision"] == 0.5
    assert report["recall"] == 0.5
    assert 0.0 <= report["auroc"] <= 1.0
