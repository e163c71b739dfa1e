"""`patronbot run`: check the settings, migrate, train if needed, then supervise the bot's processes."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from bot.channels.access import is_loopback_host
from bot.channels.credentials import channel_webhooks, write_credentials
from bot.crm.database import DatabaseError, describe_error
from bot.crm.migrate import current_revision, upgrade
from bot.outreach.questions import rasa_api_token
from bot.pseudonyms import load_key
from bot.redaction import redact_url
from bot.runtime.endpoints import write_endpoints
from bot.runtime.logs import log_steps_to_terminal
from bot.runtime.output import LOG_FILE, OutputHandler, ProcessOutput
from bot.runtime.supervisor import Child, Supervisor, ensure_port_free
from bot.runtime.training import rasa_environment, rasa_executable, train
from bot.settings import ENV_PREFIX, PROJECT_ROOT, Settings

log = logging.getLogger("patronbot")

READY_TIMEOUT = 300.0


def children(
    settings: Settings, endpoints: Path, output: ProcessOutput | None = None, credentials: Path | None = None
) -> list[Child]:
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
            output=output,
        ),
        Child(name="ingester", argv=[patronbot, "ingest"], env=env, output=output),
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
                str(credentials or PROJECT_ROOT / "credentials.yml"),
                "--interface",
                host,
                "--port",
                str(settings.rasa_port),
                # The HTTP API, for the campaign sender's follow-up questions (trigger_intent), behind
                # the installation's token (bot/outreach/questions.py).
                "--enable-api",
                "--auth-token",
                rasa_api_token(settings),
            ],
            env=env,
            ready_url=rasa_health,
            output=output,
        ),
        # Campaigns and follow-ups: a standby until it holds the lease, so a second `patronbot run`
        # (or a separate `patronbot scheduler`) on the same CRM stands by rather than run campaigns too.
        Child(name="campaign scheduler", argv=[patronbot, "scheduler"], env=env, output=output),
        # The librarians' web app (console/), on its own port.
        Child(
            name="staff console",
            argv=[patronbot, "console"],
            env=env,
            ready_url=f"{settings.console_url}login",
            output=output,
        ),
    ]


def run_bot(*, settings: Settings, train_first: bool = True) -> int:
    """Start the whole bot in the foreground until Ctrl-C; return the exit code.

    The terminal shows patronbot's steps; the processes' whole output (Rasa's and the libraries'
    notices included) goes to `var/log/patronbot.log`."""
    ensure_port_free(host=settings.host, port=settings.rasa_port, setting=f"{ENV_PREFIX}RASA_PORT")
    ensure_port_free(host=settings.host, port=settings.action_port, setting=f"{ENV_PREFIX}ACTION_PORT")
    ensure_port_free(host=settings.host, port=settings.console_port, setting=f"{ENV_PREFIX}CONSOLE_PORT")
    output = ProcessOutput(settings.data_path / "log" / LOG_FILE, show=_show)
    log_steps_to_terminal(extra=OutputHandler(output))
    try:
        return _run(settings=settings, train_first=train_first, output=output)
    finally:
        output.close()


def _show(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _run(*, settings: Settings, train_first: bool, output: ProcessOutput) -> int:
    # Made (or checked) before the processes start: the Rasa server, the action server and the
    # ingester then only read the key file, and a broken one stops `patronbot run` with one line.
    load_key(settings=settings)
    url = settings.crm_database_url
    try:
        upgrade(url=url)
        log.info("CRM database %s is at revision %s", redact_url(url), current_revision(url=url))
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, url)) from None
    if settings.rest_token is None and not is_loopback_host(settings.host):
        log.warning(
            "listening on %s without PATRONBOT_REST_TOKEN: the REST channel answers only requests from this"
            " machine; set the token for a website backend or app elsewhere",
            settings.host,
        )
    if train_first:
        train(settings=settings)
    if not settings.path(settings.model_path).is_file():
        print(f"patronbot: no model at {settings.model_path}; run `patronbot train`", file=sys.stderr)
        return 2
    log.info(
        "starting the action server, the ingester, the Rasa server, the campaign scheduler and the staff"
        " console (their whole output: %s)",
        output.path,
    )
    supervisor = Supervisor(
        children(settings, write_endpoints(settings), output, credentials=write_credentials(settings))
    )
    supervisor.install_signal_handlers()
    supervisor.start()
    try:
        if not supervisor.wait_ready(timeout=READY_TIMEOUT):
            if supervisor.stopping.is_set():
                return 0
            log.error("patronbot did not start; see the messages above and %s", output.path)
            return 1
        ready = f"patronbot is ready: POST messages to {settings.webhook_url} (Ctrl-C stops)"
        ready += f"\n  staff console: {settings.console_url} (accounts: patronbot staff add NAME --role ROLE)"
        channels = "".join(f"\n  {name}: {where}" for name, where in channel_webhooks(settings).items())
        print(
            f"{ready}\n  channels on:{channels}\n  talk to it in the terminal: make chat"
            " (or .venv/bin/patronbot chat)",
            flush=True,
        )
        output.keep("patronbot", ready)
        return supervisor.supervise()
    finally:
        supervisor.stop()
        print("patronbot stopped", flush=True)
        output.keep("patronbot", "patronbot stopped")
