"""`patronbot run`: check the settings, migrate, train if needed, then supervise the bot's processes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bot.database import DatabaseError, describe_error
from bot.endpoints import write_endpoints
from bot.migrate import upgrade
from bot.settings import ENV_PREFIX, PROJECT_ROOT, Settings
from bot.supervisor import Child, Supervisor, ensure_port_free
from bot.training import rasa_environment, rasa_executable, train

log = logging.getLogger("patronbot")

READY_TIMEOUT = 300.0


def children(settings: Settings, endpoints: Path) -> list[Child]:
    """The processes of a running bot, in start order."""
    env = rasa_environment()
    rasa = rasa_executable()
    patronbot = str(Path(sys.executable).with_name("patronbot"))
    host = settings.host
    action_health = settings.action_endpoint_url.removesuffix("/webhook") + "/health"
    rasa_health = settings.webhook_url.removesuffix("/webhooks/rest/webhook") + "/"
    return [
        Child(
            name="action server",
            argv=[rasa, "run", "actions", "--actions", "actions", "--port", str(settings.action_port)],
            # Warm: models loaded and the knowledge base indexed before /health answers.
            env=env | {"SANIC_HOST": host, "PATRONBOT_WARM_UP": "1"},
            ready_url=action_health,
        ),
        Child(name="ingester", argv=[patronbot, "ingest"], env=env),
        Child(
            name="Rasa server",
            argv=[
                rasa,
                "run",
                "--model",
                str(settings.path(settings.model_path)),
                "--endpoints",
                str(endpoints),
                "--credentials",
                str(PROJECT_ROOT / "credentials.yml"),
                "--interface",
                host,
                "--port",
                str(settings.rasa_port),
            ],
            env=env,
            ready_url=rasa_health,
        ),
    ]


def run_bot(*, settings: Settings, train_first: bool = True) -> int:
    """Start the whole bot in the foreground until Ctrl-C; return the exit code."""
    ensure_port_free(host=settings.host, port=settings.rasa_port, setting=f"{ENV_PREFIX}RASA_PORT")
    ensure_port_free(host=settings.host, port=settings.action_port, setting=f"{ENV_PREFIX}ACTION_PORT")
    try:
        upgrade(url=settings.crm_database_url)
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    if train_first and train(settings=settings):
        log.info("trained a new model from the changed training data")
    if not settings.path(settings.model_path).is_file():
        print(f"patronbot: no model at {settings.model_path}; run `patronbot train`", file=sys.stderr)
        return 2
    supervisor = Supervisor(children(settings, write_endpoints(settings)))
    supervisor.install_signal_handlers()
    supervisor.start()
    try:
        if not supervisor.wait_ready(timeout=READY_TIMEOUT):
            if supervisor.stopping.is_set():
                return 0
            log.error("patronbot did not start; see the messages above")
            return 1
        print(f"patronbot is ready: POST messages to {settings.webhook_url} (Ctrl-C stops)", flush=True)
        return supervisor.supervise()
    finally:
        supervisor.stop()
        print("patronbot stopped", flush=True)
