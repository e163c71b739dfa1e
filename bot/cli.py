"""The `patronbot` command: the one entry point for operators."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy.exc import SQLAlchemyError

from bot.cli_privacy import PatronRefError
from bot.database import DatabaseError, describe_error, make_engine
from bot.escalations import EscalationError
from bot.faq_eval import QueryFileError
from bot.knowledge import KnowledgeError
from bot.library import FactsError, load_facts
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from bot.supervisor import PortTakenError
from bot.training import TrainingError

log = logging.getLogger("patronbot")

# Errors an operator can cause or fix: shown as one line, without a traceback.
OPERATOR_ERRORS = (
    SettingsError,
    FactsError,
    PortTakenError,
    TrainingError,
    DatabaseError,
    PatronRefError,
    KnowledgeError,
    QueryFileError,
    EscalationError,
)


def _version() -> str:
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"patronbot {of('patronbot')} (Rasa {of('rasa')}, rasa-sdk {of('rasa-sdk')})"


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.runner import run_bot

    return run_bot(settings=settings, train_first=not args.no_train)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.training import train

    trained = train(settings=settings, config=Path(args.config) if args.config else None, force=args.force)
    model = settings.path(settings.model_path)
    print(f"trained {model}" if trained else f"{model} is up to date with the training data")
    return 0


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from bot.migrate import current_revision, upgrade

    url = settings.crm_database_url
    try:
        upgrade(url=url, revision=args.revision)
        print(f"CRM database is at revision {current_revision(url=url)}")
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, url)) from None
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from bot.rasa_events import rasa_event_stores

    crm = make_engine(settings.crm_database_url)
    broker = settings.rasa_event_broker_url
    # Where a patron's events are erased from when they ask in the chat to be deleted.
    stores = rasa_event_stores(tracker_url=settings.rasa_tracker_url, broker_url=broker)
    if broker.startswith("amqp://"):
        from bot.ingest_amqp import run_amqp_ingester

        run_amqp_ingester(
            crm=crm,
            crm_url=settings.crm_database_url,
            amqp_url=broker,
            queue=settings.event_queue,
            stop=stop,
            rasa_stores=stores,
        )
        return 0
    from bot.ingest import SqlEventSource, run_ingester

    run_ingester(
        crm=crm,
        crm_url=settings.crm_database_url,
        source=SqlEventSource(broker),
        stop=stop,
        rasa_stores=stores,
    )
    return 0


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from bot.chat import chat

    return chat(url=settings.webhook_url, sender=args.sender)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patronbot",
        description="patronbot: a library's conversational patron-engagement bot. "
        "Settings come from PATRONBOT_* environment variables and .env.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="start the bot: Rasa server, action server and ingester")
    run.add_argument("--no-train", action="store_true", help="use the existing model even if data changed")
    run.set_defaults(handler=cmd_run)

    train = commands.add_parser("train", help="train the Rasa model if the training data changed")
    train.add_argument("--force", action="store_true", help="train even if nothing changed")
    train.add_argument("--config", help="another pipeline config (tests train with fewer epochs)")
    train.set_defaults(handler=cmd_train)

    db = commands.add_parser("db", help="the CRM database")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)

    ingest = commands.add_parser("ingest", help="copy Rasa's events into the CRM (run by `patronbot run`)")
    ingest.set_defaults(handler=cmd_ingest)

    from bot.cli_escalations import add_commands as add_escalation_commands
    from bot.cli_eval import add_commands as add_eval_commands
    from bot.cli_faq import add_commands as add_faq_commands
    from bot.cli_privacy import add_commands

    add_commands(commands)
    add_faq_commands(commands)
    add_eval_commands(commands)
    add_escalation_commands(commands)

    chat = commands.add_parser("chat", help="talk to the running bot in the terminal")
    chat.add_argument("--sender", default="terminal", help="the conversation id to use (default: terminal)")
    chat.set_defaults(handler=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        if args.command == "run":
            load_facts(settings.path(settings.library_facts))
        return handler(settings, args)
    except OPERATOR_ERRORS as error:
        print(f"patronbot: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
