"""`patronbot scheduler`: run the campaign scheduler in the foreground, leader or standby."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import TypeAlias

from bot.cli.escalations import library_zone
from bot.crm.database import make_engine
from bot.outreach.scheduler import CampaignScheduler
from bot.outreach.worker import rules_from_settings, run_releaser
from bot.settings import Settings

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def scheduler_for(settings: Settings) -> CampaignScheduler:
    """The scheduler of the configured CRM: cron schedules without a zone run in the library's."""
    url = settings.crm_database_url
    grace = float(settings.campaign_grace_seconds)
    return CampaignScheduler(
        engine=make_engine(url), database_url=url, grace=grace, timezone=library_zone(settings).key
    )


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # APScheduler narrates every job it adds and runs at INFO; the scheduler's own lines say what
    # matters (leader, standby, each run made), and APScheduler's warnings (a missed run) still show.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    scheduler = scheduler_for(settings)
    # Every scheduler process, leader or standby, also checks due deliveries and hands them to the
    # outbox (safe to run in several at once): so campaigns reach REST patrons with no push channel on.
    releaser = threading.Thread(
        target=run_releaser,
        kwargs={"engine": scheduler.engine, "rules": rules_from_settings(settings), "stop": stop},
        name="patronbot-campaign-releaser",
        daemon=True,
    )
    releaser.start()
    try:
        scheduler.run(stop)  # returns once stopped, the lease given up
    finally:
        stop.set()
        releaser.join(timeout=10)
        scheduler.engine.dispose()
    return 0


def add_commands(commands: Subcommands) -> None:
    scheduler = commands.add_parser(
        "scheduler",
        help="run campaigns and triggered follow-ups on time (started by `patronbot run`); "
        "several may run: one leads, the others stand by",
    )
    scheduler.set_defaults(handler=cmd_scheduler)
