"""A real trained model and a real running bot (`patronbot run`) for the end-to-end tests."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.runtime.launch import (
    PATRONBOT,
    LaunchedBot,
    LaunchError,
    config_with_epochs,
    launch,
    stop,
    train_model,
)
from bot.settings import PROJECT_ROOT

__all__ = ["PATRONBOT", "RunningBot", "start_bot", "stop_bot"]

# Tests train the real pipeline with fewer epochs; the model is cached by its training fingerprint.
TEST_EPOCHS = 40
MODEL_CACHE = PROJECT_ROOT / ".test-models"


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """A model trained by `patronbot train` (skipped when the cached one matches the data).

    PATRONBOT_TEST_MODEL names an already trained model to use instead (for quick local reruns).
    """
    given = os.environ.get("PATRONBOT_TEST_MODEL")
    if given:
        assert Path(given).is_file(), f"PATRONBOT_TEST_MODEL={given} is not a file"
        return Path(given)
    config = config_with_epochs(epochs=TEST_EPOCHS, path=MODEL_CACHE / "config.test.yml")
    try:
        return train_model(config=config, model=MODEL_CACHE / "patronbot-test.tar.gz")
    except LaunchError as error:
        pytest.fail(str(error))


@dataclass
class RunningBot(LaunchedBot):
    """A `patronbot run` process, how to reach it, and its CRM (SQLite in its data folder by default)."""

    crm_url: str = ""

    def post(self, body: bytes | dict[str, Any], *, timeout: float = 60) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.webhook, data=raw, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def child_pid(self, marker: str, *, wait: float = 0) -> int:
        """The pid of the supervised child whose command line contains `marker`.

        `wait` seconds are given to a supervisor that is restarting the child.
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._child_pid(marker)
            except LookupError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _child_pid(self, marker: str) -> int:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and marker in cmdline:
                return int(entry.name)
        raise LookupError(f"no child of patronbot run with {marker!r}")

    def say(self, sender: str, text: str) -> list[str]:
        status, replies = self.post({"sender": sender, "message": text})
        assert status == 200, replies
        return [reply.get("text") or "" for reply in replies]


def start_bot(tmp: Path, model: Path, extra_env: dict[str, str] | None = None) -> RunningBot:
    # The bots of one test session share their knowledge-base vectors (a folder beside theirs), as the
    # action servers of one deployment may: only the first bot's start encodes the knowledge base.
    env = {"PATRONBOT_VECTOR_DIR": str(tmp.parent / "vectors")} | (extra_env or {})
    try:
        launched = launch(workdir=tmp, model=model, env=env)
    except LaunchError as error:
        pytest.fail(str(error))
    return RunningBot(**vars(launched), crm_url=f"sqlite:///{launched.data_dir / 'patronbot.db'}")


def stop_bot(bot: RunningBot) -> int:
    return stop(bot)


@pytest.fixture(scope="session")
def running_bot(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    tmp = tmp_path_factory.mktemp("bot")
    # Copies of the facts file and the knowledge base that the tests may edit while the bot runs.
    facts, kb = tmp / "library.yml", tmp / "faq.yml"
    facts.write_bytes((PROJECT_ROOT / "knowledge" / "library.yml").read_bytes())
    kb.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    extra = {
        "PATRONBOT_LIBRARY_FACTS": str(facts),
        "PATRONBOT_KNOWLEDGE_BASE": str(kb),
        "PATRONBOT_WEBCHAT": "true",  # the widget's browser tests use this bot's demo page
    }
    bot = start_bot(tmp, trained_model, extra)
    yield bot
    code = stop_bot(bot)
    assert code == 0, bot.log.read_text(errors="replace")[-3000:]
    assert "patronbot stopped" in bot.log.read_text(errors="replace")
