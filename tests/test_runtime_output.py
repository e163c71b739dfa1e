"""What `patronbot run` shows in the terminal, and the log that keeps everything its processes print."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bot.runtime.output import ProcessOutput, open_log, terminal_line
from bot.runtime.supervisor import Child, Supervisor

RASA_INFO = (
    "2026-12-04 15:54:52 INFO     rasa.core.processor  - Loading model /work/models/patronbot.tar.gz..."
)
OWN_INFO = "2026-12-04 15:54:57 INFO     bot.knowledge.encoders  - encoded 989 knowledge-base texts in 9.2 s"
INGESTER_INFO = "2026-12-04 15:54:47,361 INFO bot.ingest.sql_broker: ingesting Rasa events from sql-broker:x"
RASA_ERROR = "2026-12-04 15:55:00 ERROR    rasa.core.actions.action  - Failed to run custom action"
WARNING = "/venv/rasa/cli/arguments/test.py:129: DeprecationWarning: Nesting argument groups is deprecated."


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (OWN_INFO, "action server: encoded 989 knowledge-base texts in 9.2 s"),
        (INGESTER_INFO, "action server: ingesting Rasa events from sql-broker:x"),
        (RASA_ERROR, "action server: error: Failed to run custom action"),
        (RASA_INFO, None),
        (WARNING, None),
        ("  declare_namespace(pkg)", None),
        ("2026-12-04 15:54:52 DEBUG    bot.x  - detail", None),
    ],
)
def test_the_terminal_shows_patronbots_steps_and_anyones_errors(line: str, shown: str | None) -> None:
    assert terminal_line("action server", line) == shown


def test_every_line_goes_to_the_log_and_only_the_steps_to_the_terminal(tmp_path: Path) -> None:
    shown: list[str] = []
    output = ProcessOutput(tmp_path / "log" / "patronbot.log", show=shown.append)
    child = subprocess.Popen(
        [sys.executable, "-c", f"print({WARNING!r}); print({OWN_INFO!r}); print({RASA_INFO!r})"],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    output.follow("Rasa server", child.stdout).join(timeout=30)
    child.wait()
    output.close()
    assert shown == ["Rasa server: encoded 989 knowledge-base texts in 9.2 s"]
    logged = (tmp_path / "log" / "patronbot.log").read_text(encoding="utf-8").splitlines()
    assert logged == [f"[Rasa server] {line}" for line in (WARNING, OWN_INFO, RASA_INFO)]
    assert output.tail("Rasa server") == [WARNING, OWN_INFO, RASA_INFO]
    output.write("Rasa server", OWN_INFO)  # a child printing while patronbot stops: no error
    assert len(shown) == 2


def test_a_large_log_is_moved_aside_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bot.runtime.output

    monkeypatch.setattr(bot.runtime.output, "ROTATE_BYTES", 10)
    path = tmp_path / "patronbot.log"
    path.write_text("an old run's many lines\n", encoding="utf-8")
    with open_log(path) as log:
        log.write("new\n")
    assert path.read_text(encoding="utf-8") == "new\n"
    assert (tmp_path / "patronbot.log.1").read_text(encoding="utf-8") == "an old run's many lines\n"


def test_a_child_that_dies_at_start_is_reported_with_the_end_of_its_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = ProcessOutput(tmp_path / "patronbot.log", show=lambda _: None)
    script = "import sys; print('loading'); print('ValueError: the facts file is broken'); sys.exit(3)"
    child = Child(name="action server", argv=[sys.executable, "-c", script], env={}, output=output)
    supervisor = Supervisor([child])
    caplog.set_level(logging.ERROR, logger="bot.runtime.supervisor")
    supervisor.start()
    assert child.process is not None
    child.process.wait(timeout=30)
    assert not supervisor.wait_ready(timeout=30)
    assert "action server exited during start-up" in caplog.text
    assert "| ValueError: the facts file is broken" in caplog.text
    output.close()


def test_a_failed_training_says_why_with_the_end_of_rasas_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.runtime.training as training
    from bot.settings import load_settings

    fake_rasa = tmp_path / "rasa"
    fake_rasa.write_text("#!/bin/sh\necho 'YamlValidationException: nlu/en/library.yml line 3'\nexit 1\n")
    fake_rasa.chmod(0o755)
    monkeypatch.setattr(training, "rasa_executable", lambda: str(fake_rasa))
    monkeypatch.setenv("PATRONBOT_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("PATRONBOT_MODEL_PATH", str(tmp_path / "models" / "patronbot.tar.gz"))
    with pytest.raises(training.TrainingError) as failed:
        training.train(settings=load_settings(), force=True)
    message = str(failed.value)
    assert "rasa train failed with exit code 1" in message
    assert "| YamlValidationException: nlu/en/library.yml line 3" in message
    assert str(tmp_path / "var" / "log" / "train.log") in message
