"""Training the Rasa model, only when the training data or pipeline changed since the last model."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

from bot.runtime.output import open_log
from bot.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

# How often a long training says it is still at work.
PROGRESS_SECONDS = 30.0

# What a model is made from: changing any of these files means the model must be trained again.
TRAINING_INPUTS = ("config.yml", "domain.yml", "data", "nlu")
_INPUT_SUFFIXES = {".yml", ".yaml", ".txt"}
# The pipeline's own code is part of the model too; other modules in nlu/ (evaluation) are not.
_PIPELINE_CODE = ("components.py", "intent_classifier.py", "intent_model.py", "features.py")


class TrainingError(Exception):
    """`rasa train` failed; its output says why."""


def training_files(root: Path = PROJECT_ROOT) -> list[Path]:
    files: list[Path] = []
    for name in TRAINING_INPUTS:
        path = root / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file()
                and (p.suffix in _INPUT_SUFFIXES or p.name in _PIPELINE_CODE)
                and "__pycache__" not in p.parts
            )
    return sorted(files)


def training_fingerprint(root: Path = PROJECT_ROOT, *, config: Path | None = None) -> str:
    """A digest of every training input (the config given, else config.yml)."""
    digest = hashlib.sha256()
    for path in training_files(root):
        source = config if config is not None and path == root / "config.yml" else path
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint_file(model: Path) -> Path:
    return model.with_name(model.name + ".fingerprint")


def needs_training(model: Path, *, config: Path | None = None) -> bool:
    marker = fingerprint_file(model)
    if not model.is_file() or not marker.is_file():
        return True
    return marker.read_text(encoding="utf-8").strip() != training_fingerprint(config=config)


def rasa_executable() -> str:
    return str(Path(sys.executable).with_name("rasa"))


def train(*, settings: Settings, config: Path | None = None, force: bool = False) -> bool:
    """Train into settings.model_path if needed (or forced); return whether a model was trained.

    Rasa's output goes to the training log (`var/log/train.log`); the terminal gets the steps, a line
    every PROGRESS_SECONDS while it trains, and the end of Rasa's output if training fails."""
    model = settings.path(settings.model_path)
    if not force and not needs_training(model, config=config):
        return False
    fingerprint = training_fingerprint(config=config)
    name = model.name.removesuffix(".tar.gz")
    command = [
        rasa_executable(),
        "train",
        "--config",
        str(config or PROJECT_ROOT / "config.yml"),
        "--domain",
        str(PROJECT_ROOT / "domain.yml"),
        "--data",
        str(PROJECT_ROOT / "data"),
        str(PROJECT_ROOT / "nlu"),
        "--out",
        str(model.parent),
        "--fixed-model-name",
        name,
        "--force",
    ]
    path = training_log(settings)
    log.info("training the model (a minute or two; Rasa's output goes to %s)", path)
    started = time.monotonic()
    with open_log(path) as output:
        output.write(f"--- rasa train, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        output.flush()
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=rasa_environment(), stdout=output, stderr=subprocess.STDOUT
        )
        while True:
            try:
                code = process.wait(timeout=PROGRESS_SECONDS)
                break
            except subprocess.TimeoutExpired:
                log.info("still training (%.0f s)", time.monotonic() - started)
    if code != 0 or not model.is_file():
        raise TrainingError(
            f"rasa train failed with exit code {code}; the end of its output (all of it in {path}):"
            + "".join(f"\n  | {line}" for line in last_lines(path))
        )
    fingerprint_file(model).write_text(fingerprint + "\n", encoding="utf-8")
    log.info("trained %s in %.0f s", model, time.monotonic() - started)
    return True


def training_log(settings: Settings) -> Path:
    return settings.data_path / "log" / "train.log"


def last_lines(path: Path, count: int = 20) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return [line.rstrip() for line in deque(lines, maxlen=count)]


# One thread per numeric library: each process serves one message at a time, and idle BLAS, OpenMP
# and TensorFlow thread pools spin on the 2 cores that the other processes need.
THREAD_SETTINGS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                   "TF_NUM_INTEROP_THREADS")  # fmt: skip
ONE_THREAD_PER_LIBRARY = dict.fromkeys(THREAD_SETTINGS, "1")


def rasa_environment() -> dict[str, str]:
    """The environment for Rasa's processes: quiet TensorFlow, no telemetry, no hub downloads."""
    import os

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("RASA_TELEMETRY_ENABLED", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
    env.setdefault("USE_TF", "0")  # transformers (for sentence-transformers) need torch only
    env.setdefault("PYTHONWARNINGS", "ignore")
    for name, value in ONE_THREAD_PER_LIBRARY.items():
        env.setdefault(name, value)
    return env
