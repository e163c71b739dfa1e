"""A real trained model and a real running bot (`patronbot run`) for the end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.settings import PROJECT_ROOT

PATRONBOT = str(Path(sys.executable).with_name("patronbot"))
# Tests train the real pipeline with fewer epochs; the model is cached by its training fingerprint.
TEST_EPOCHS = 40
MODEL_CACHE = PROJECT_ROOT / ".test-models"


def test_config() -> Path:
    config = yaml.safe_load((PROJECT_ROOT / "config.yml").read_text(encoding="utf-8"))
    for component in config["pipeline"]:
        if "epochs" in component:
            component["epochs"] = TEST_EPOCHS
    for policy in config.get("policies") or []:
        if "epochs" in policy:
            policy["epochs"] = TEST_EPOCHS
    MODEL_CACHE.mkdir(exist_ok=True)
    path = MODEL_CACHE / "config.test.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_model() -> Path:
    """A model trained by `patronbot train` (skipped when the cached one matches the data).

    PATRONBOT_TEST_MODEL names an already trained model to use instead (for quick local reruns).
    """
    given = os.environ.get("PATRONBOT_TEST_MODEL")
    if given:
        assert Path(given).is_file(), f"PATRONBOT_TEST_MODEL={given} is not a file"
        return Path(given)
    model = MODEL_CACHE / "patronbot-test.tar.gz"
    env = os.environ | {"PATRONBOT_MODEL_PATH": str(model)}
    result = subprocess.run(
        [PATRONBOT, "train", "--config", str(test_config())],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert model.is_file()
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningBot:
    """A `patronbot run` process and how to reach it."""

    process: subprocess.Popen[bytes]
    webhook: str
    crm_url: str
    data_dir: Path
    log: Path
    env: dict[str, str]

    def post(self, body: bytes | dict[str, Any], *, timeout: float = 60) -> tuple[int, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.webhook, data=raw, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def child_pid(self, marker: str) -> int:
        """The pid of the supervised child whose command line contains `marker`."""
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
    data_dir = tmp / "var"
    rasa_port, action_port = free_port(), free_port()
    env = (
        os.environ
        | {
            "PATRONBOT_DATA_DIR": str(data_dir),
            "PATRONBOT_MODEL_PATH": str(model),
            "PATRONBOT_RASA_PORT": str(rasa_port),
            "PATRONBOT_ACTION_PORT": str(action_port),
        }
        | (extra_env or {})
    )
    log = tmp / "patronbot-run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [PATRONBOT, "run", "--no-train"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    bot = RunningBot(
        process=process,
        webhook=f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook",
        crm_url=f"sqlite:///{data_dir / 'patronbot.db'}",
        data_dir=data_dir,
        log=log,
        env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if "patronbot is ready" in log.read_text(errors="replace"):
            return bot
        if process.poll() is not None:
            break
        time.sleep(0.5)
    stop_bot(bot)
    pytest.fail("patronbot run did not become ready:\n" + log.read_text(errors="replace")[-5000:])


def stop_bot(bot: RunningBot) -> int:
    if bot.process.poll() is None:
        bot.process.send_signal(signal.SIGINT)
        try:
            return bot.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            bot.process.kill()
            return bot.process.wait()
    return int(bot.process.returncode)


@pytest.fixture(scope="session")
def running_bot(trained_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBot]:
    tmp = tmp_path_factory.mktemp("bot")
    # Copies of the facts file and the knowledge base that the tests may edit while the bot runs.
    facts, kb = tmp / "library.yml", tmp / "faq.yml"
    facts.write_bytes((PROJECT_ROOT / "knowledge" / "library.yml").read_bytes())
    kb.write_bytes((PROJECT_ROOT / "knowledge" / "faq.yml").read_bytes())
    extra = {"PATRONBOT_LIBRARY_FACTS": str(facts), "PATRONBOT_KNOWLEDGE_BASE": str(kb)}
    bot = start_bot(tmp, trained_model, extra)
    yield bot
    code = stop_bot(bot)
    assert code == 0, bot.log.read_text(errors="replace")[-3000:]
    assert "patronbot stopped" in bot.log.read_text(errors="replace")
