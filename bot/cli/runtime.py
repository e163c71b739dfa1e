"""`patronbot run`, `train`, `ingest` and `chat`: starting the bot and talking to it."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from bot.crm.database import make_engine
from bot.settings import Settings


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from bot.runtime.runner import run_bot

    return run_bot(settings=settings, train_first=not args.no_train)


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from bot.runtime.logs import log_steps_to_terminal
    from bot.runtime.training import train

    log_steps_to_terminal()
    if not train(settings=settings, config=Path(args.config) if args.config else None, force=args.force):
        print(f"{settings.path(settings.model_path)} is up to date with the training data")
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    from bot.crm.rasa_events import rasa_event_stores

    crm = make_engine(settings.crm_database_url)
    broker = settings.rasa_event_broker_url
    # Where a patron's events are erased from when they ask in the chat to be deleted.
    stores = rasa_event_stores(tracker_url=settings.rasa_tracker_url, broker_url=broker)
    if broker.startswith("amqp://"):
        from bot.ingest.amqp import run_amqp_ingester

        run_amqp_ingester(
            crm=crm,
            crm_url=settings.crm_database_url,
            amqp_url=broker,
            queue=settings.event_queue,
            stop=stop,
            rasa_stores=stores,
        )
        return 0
    from bot.ingest.sql_broker import SqlEventSource, run_ingester

    run_ingester(
        crm=crm,
        crm_url=settings.crm_database_url,
        source=SqlEventSource(broker),
        stop=stop,
        rasa_stores=stores,
    )
    return 0


def cmd_chat(settings: Settings, args: argparse.Namespace) -> int:
    from bot.runtime.chat import chat

    return chat(url=settings.webhook_url, sender=args.sender)


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = commands.add_parser("run", help="start the bot: Rasa server, action server and ingester")
    run.add_argument("--no-train", action="store_true", help="use the existing model even if data changed")
    run.set_defaults(handler=cmd_run)

    train = commands.add_parser("train", help="train the Rasa model if the training data changed")
    train.add_argument("--force", action="store_true", help="train even if nothing changed")
    train.add_argument("--config", help="another pipeline config (tests train with fewer epochs)")
    train.set_defaults(handler=cmd_train)

    ingest = commands.add_parser("ingest", help="copy Rasa's events into the CRM (run by `patronbot run`)")
    ingest.set_defaults(handler=cmd_ingest)

    chat = commands.add_parser("chat", help="talk to the running bot in the terminal")
    chat.add_argument("--sender", default="terminal", help="the conversation id to use (default: terminal)")
    chat.set_defaults(handler=cmd_chat)
