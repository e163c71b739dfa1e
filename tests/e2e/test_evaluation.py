"""`patronbot eval` on the trained model: topic accuracy, per language and topic, out-of-scope detection."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import PATRONBOT

pytestmark = pytest.mark.rasa

ROWS = [
    {"text": "how many days can I keep a borrowed novel", "topic": "borrowing", "lang": "en"},
    {"text": "the library closes at what time on sundays", "topic": "hours", "lang": "en"},
    {"text": "能不能帮我把借的书再续一个月", "topic": "renewal", "lang": "zh"},
    {"text": "图书馆周日几点关门呀", "topic": "hours", "lang": "zh"},
    {"text": "recommend me a good hotpot restaurant downtown", "topic": "out_of_scope", "lang": "en"},
    {"text": "宿舍空调坏了找谁修", "topic": "out_of_scope", "lang": "zh"},
]


def test_topic_evaluation_reports_every_figure(trained_model: Path, tmp_path: Path) -> None:
    topics = tmp_path / "topics.jsonl"
    topics.write_text("\n".join(json.dumps(row, ensure_ascii=False) for row in ROWS), encoding="utf-8")
    result = subprocess.run(
        [PATRONBOT, "eval", "--model", str(trained_model), "--topics", str(topics), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parse_data_text" not in result.stdout + result.stderr  # no patron text in Rasa's logs
    report = json.loads(result.stdout[result.stdout.index("{") :])["topics"]
    assert report["overall"]["n"] == 6
    assert set(report["by_language"]) == {"en", "zh"}
    assert set(report["overall"]["per_label"]) == {"borrowing", "hours", "renewal", "out_of_scope"}
    assert 0.0 <= report["overall"]["accuracy"] <= 1.0
    assert report["overall"]["per_label"]["hours"]["n"] == 2
    assert set(report["out_of_scope"]) == {"precision", "recall", "auroc"}
    # Hours questions are this model's best-trained intent: both must land.
    assert report["overall"]["per_label"]["hours"]["recall"] == 1.0
    # Every mistaken row is counted once among the confusions, and never under its own topic.
    wrong = round(report["overall"]["n"] * (1 - report["overall"]["accuracy"]))
    assert sum(report["confusions"].values()) == wrong
    assert all(pair.split(" -> ")[0] != pair.split(" -> ")[1] for pair in report["confusions"])
    # The whole turn's detection (NLU, then retrieval for knowledge-base questions) is reported too, and
    # refuses at least what the NLU alone refuses: a refusal by the NLU never reaches retrieval.
    turn = report["turn_out_of_scope"]
    assert set(turn) == {"precision", "recall", "auroc"}
    assert (turn["recall"] or 0.0) >= (report["out_of_scope"]["recall"] or 0.0)
