"""`patronbot campaign run|report` and `patronbot sender`: send a campaign now, read what it achieved,
and drain the outbox through the push channels in a process of its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from typing import TypeAlias

from sqlalchemy.engine import Engine

from bot.crm.database import make_engine, session_scope
from bot.crm.models import Campaign, utcnow
from bot.outbound.dispatcher import ChannelSender, Dispatcher
from bot.outreach.campaigns import CampaignError
from bot.outreach.report import CampaignNotFoundError, CampaignReport, campaign_report
from bot.outreach.runs import start_run
from bot.outreach.worker import Progress, rules_from_settings, send_now
from bot.settings import Settings

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
SENDERS_GROUP = "patronbot.senders"


@contextlib.asynccontextmanager
async def push_senders(settings: Settings) -> AsyncIterator[dict[str, ChannelSender]]:
    """The push channels' senders (Telegram, WeChat) the installation has settings for, from the
    channels' entry point (connectors/push.py); none when no channel code is installed."""
    found = sorted(entry_points(group=SENDERS_GROUP), key=lambda entry: entry.name)
    async with contextlib.AsyncExitStack() as stack:
        senders: dict[str, ChannelSender] = {}
        for entry in found:
            senders |= await stack.enter_async_context(entry.load()(settings))
        yield senders


def _campaign_id(value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise CampaignError(f"a campaign is named by its id (7), not {value!r}: `patronbot campaign list`")
    return int(text)


def _check_runnable(engine: Engine, campaign_id: int) -> str:
    with session_scope(engine) as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise CampaignNotFoundError(f"no campaign {campaign_id}: `patronbot campaign list` lists them")
        if campaign.status == "paused":
            raise CampaignError(
                f"campaign {campaign_id} is paused: `patronbot campaign resume {campaign_id}` first"
            )
        if campaign.status in ("cancelled", "done"):
            raise CampaignError(f"campaign {campaign_id} is {campaign.status}: it sends nothing more")
        return str(campaign.name)


def _bar(progress: Progress, width: int = 30) -> str:
    share = progress.done / progress.total if progress.total else 1.0
    filled = int(share * width)
    return (
        f"\r[{'#' * filled}{'-' * (width - filled)}] {progress.done}/{progress.total} done, "
        f"{progress.sent} sent ({progress.rate:.1f}/s)"
    )


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.crm_database_url)
    campaign_id = _campaign_id(args.id)
    name = _check_runnable(engine, campaign_id)
    now = utcnow()
    run = start_run(engine=engine, campaign_id=campaign_id, due_at=now, occasion=f"manual:{now.isoformat()}")
    if run is None:
        raise CampaignError(f"campaign {campaign_id} could not be run now (it changed meanwhile): try again")
    rules = rules_from_settings(settings)
    show: Callable[[Progress], None] = (
        (lambda progress: print(_bar(progress), end="", file=sys.stderr, flush=True))
        if not args.quiet
        else (lambda progress: None)
    )

    async def sending() -> None:
        async with push_senders(settings) as senders:
            dispatcher = Dispatcher(engine=engine)
            for channel, send in senders.items():
                dispatcher.register(channel, send)
            await send_now(
                engine=engine, campaign_id=campaign_id, rules=rules, dispatcher=dispatcher, on_progress=show
            )

    asyncio.run(sending())
    if not args.quiet:
        print(file=sys.stderr)
    with session_scope(engine) as session:
        report = campaign_report(session=session, campaign_id=campaign_id)
    print(f"campaign {name} (id {campaign_id}) run {run}: {_summary(report)}")
    engine.dispose()
    return 0


def _summary(report: CampaignReport) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in report.skipped.items()) or "none"
    return (
        f"{report.deliveries} deliveries: {report.sent} sent, {report.queued} queued, "
        f"{report.failed} failed, {report.unknown_outcome} unknown outcome, {report.waiting} waiting; "
        f"skipped: {skipped}"
    )


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.crm_database_url)
    with session_scope(engine) as session:
        report = campaign_report(session=session, campaign_id=_campaign_id(args.id))
    engine.dispose()
    if args.format == "json":
        print(json.dumps(report.as_dict(), ensure_ascii=False))
        return 0
    ratings = report.ratings
    lines = [
        f"campaign {report.name} (id {report.id}), {report.status}",
        f"  deliveries       {report.deliveries}",
        f"  sent             {report.sent}",
        f"  queued           {report.queued}",
        f"  waiting          {report.waiting}",
        f"  failed           {report.failed}",
        f"  unknown outcome  {report.unknown_outcome}",
        f"  cancelled        {report.cancelled}",
        "  skipped          " + (", ".join(f"{r} {n}" for r, n in report.skipped.items()) or "0"),
        f"  replies          {report.replies} (patrons who wrote within 7 days)",
        f"  answers          {report.answers} (to its follow-up question)",
        f"  opt-outs after   {report.opt_outs}",
        f"  ratings          CSAT {ratings.get('csat_count', 0)} (mean {ratings.get('csat_mean') or '-'}), "
        f"NPS {ratings.get('nps_count', 0)} (mean {ratings.get('nps_mean') or '-'}), "
        f"helped {ratings.get('helpful_yes', 0)} / did not {ratings.get('helpful_no', 0)}, "
        f"comments {ratings.get('comments', 0)}",
    ]
    print("\n".join(lines))
    return 0


def cmd_sender(settings: Settings, args: argparse.Namespace) -> int:
    engine = make_engine(settings.crm_database_url)

    async def sending() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with push_senders(settings) as senders:
            if not senders:
                print(
                    "patronbot: no push channel is set (Telegram, WeChat): nothing to send", file=sys.stderr
                )
                return 2
            dispatcher = Dispatcher(engine=engine)
            for channel, send in senders.items():
                dispatcher.register(channel, send)
            print(f"sending the outbox through {', '.join(sorted(senders))}", flush=True)
            dispatcher.start()
            await stop.wait()
            await dispatcher.stop()
        return 0

    try:
        return asyncio.run(sending())
    finally:
        engine.dispose()


def add_run(actions: Subcommands) -> None:
    run = actions.add_parser("run", help="send a campaign now, whatever its schedule, with a progress bar")
    run.add_argument("id", help="the campaign's id (`patronbot campaign list`)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_run)


def add_report(actions: Subcommands) -> None:
    report = actions.add_parser("report", help="what a campaign achieved: outcomes, skips, replies, ratings")
    report.add_argument("id", help="the campaign's id")
    report.add_argument("--format", choices=("table", "json"), default="table")
    report.set_defaults(handler=cmd_report)


def add_commands(commands: Subcommands) -> None:
    sender = commands.add_parser(
        "sender",
        help="send the outbox (staff replies, campaigns) through Telegram and WeChat in a process of "
        "its own; several may run (PATRONBOT_TELEGRAM_RATE shares Telegram's limit)",
    )
    sender.set_defaults(handler=cmd_sender)
