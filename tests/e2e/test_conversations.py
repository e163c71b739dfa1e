"""The conversation tests: every flow's stories through the trained model with `rasa test core`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from bot.runtime.training import rasa_environment, rasa_executable
from bot.settings import PROJECT_ROOT

pytestmark = pytest.mark.rasa

STORIES = PROJECT_ROOT / "tests" / "conversations"


def test_every_conversation_story_passes(trained_model: Path, tmp_path: Path) -> None:
    """Typed messages go through the trained NLU; every predicted intent and action must match."""
    out = tmp_path / "results"
    result = subprocess.run(
        [
            rasa_executable(),
            "test",
            "core",
            "--model",
            str(trained_model),
            "--stories",
            str(STORIES),
            "--fail-on-prediction-errors",
            "--out",
            str(out),
            "--no-plot",
        ],
        env=rasa_environment(),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    report = yaml.safe_load((out / "story_report.json").read_text(encoding="utf-8"))
    stories = sum(
        len(yaml.safe_load(f.read_text(encoding="utf-8"))["stories"]) for f in STORIES.glob("*.yml")
    )
    assert report["conversation_accuracy"]["total"] == stories
    assert report["conversation_accuracy"]["correct"] == stories
