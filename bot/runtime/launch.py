"""A whole bot in the background for end-to-end tests and benchmarks: a quickly trained model, then
`patronbot run --no-train` on free ports with its own data folder, until it is stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.runtime.output import LOG_FILE
from bot.settings import PROJECT_ROOT

PATRONBOT = str(Path(sys.executable).with_name("patronbot"))
READY_TIMEOUT = 300.0


class LaunchError(RuntimeError):
    """Training failed, or the bot did not become ready; the message ends with the output's tail."""


def config_with_epochs(*, epochs: int, path: Path) -> Path:
    """config.yml with every `epochs` set to `epochs`, written to `path` (a turn's cost and the
    behaviour the tests check do not depend on the epochs; training time does)."""
    config = yaml.safe_load((PROJECT_ROOT / "config.yml").read_text(encoding="utf-8"))
    for component in [*config["pipeline"], *(config.get("policies") or [])]:
        if "epochs" in component:
            component["epochs"] = epochs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def train_model(*, config: Path, model: Path, timeout: float = 1200) -> Path:
    """`patronbot train --config CONFIG` into `model` (not retrained when the fingerprint matches)."""
    result = subprocess.run(
        [PATRONBOT, "train", "--config", str(config)],
        env=os.environ | {"PATRONBOT_MODEL_PATH": str(model)},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0 or not model.is_file():
        raise LaunchError(f"patronbot train failed:\n{(result.stdout + result.stderr)[-5000:]}")
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LaunchedBot:
    """A `patronbot run` process and how to reach it."""

    process: subprocess.Popen[bytes]
    webhook: str
    console: str  # the staff console's address
    data_dir: Path
    log: Path  # what `patronbot run` printed: its steps
    env: dict[str, str]

    @property
    def process_log(self) -> Path:
        """Everything its processes printed (Rasa's and the libraries' notices too)."""
        return self.data_dir / "log" / LOG_FILE


def launch(*, workdir: Path, model: Path, env: Mapping[str, str] | None = None) -> LaunchedBot:
    """Start `patronbot run --no-train` with its data in `workdir`/var and wait until it is ready."""
    data_dir = workdir / "var"
    rasa_port, action_port, console_port = free_port(), free_port(), free_port()
    full_env = (
        os.environ
        | {
            "PATRONBOT_DATA_DIR": str(data_dir),
            "PATRONBOT_MODEL_PATH": str(model),
            "PATRONBOT_RASA_PORT": str(rasa_port),
            "PATRONBOT_ACTION_PORT": str(action_port),
            "PATRONBOT_CONSOLE_PORT": str(console_port),
        }
        | dict(env or {})
    )
    log = workdir / "patronbot-run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [PATRONBOT, "run", "--no-train"],
            env=full_env,
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    bot = LaunchedBot(
        process=process,
        webhook=f"http://127.0.0.1:{rasa_port}/webhooks/rest/webhook",
        console=f"http://127.0.0.1:{full_env.get('PATRONBOT_CONSOLE_PORT', console_port)}/",
        data_dir=data_dir,
        log=log,
        env=full_env,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while "patronbot is ready" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(bot)
            raise LaunchError(
                f"patronbot run did not become ready:\n{log.read_text(errors='replace')[-5000:]}"
            )
        time.sleep(0.5)
    return bot


def stop(bot: LaunchedBot) -> int:
    """Stop the bot as Ctrl-C does (the supervisor stops Rasa, the action server and the ingester in
    order); kill it after a minute. Returns its exit code."""
    if bot.process.poll() is None:
        bot.process.send_signal(signal.SIGINT)
        try:
            return bot.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            bot.process.kill()
            return bot.process.wait()
    return int(bot.process.returncode)
