"""The `patronbot` command: the one entry point for operators, one group of subcommands per domain."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, entry_points, version

from bot.cli import (
    campaign_run,
    campaigns,
    db,
    escalations,
    faq,
    personas,
    privacy,
    reports,
    runtime,
    scheduler,
    segments,
)
from bot.cli.privacy import PatronRefError
from bot.crm.database import DatabaseError
from bot.engagement.escalations import EscalationError
from bot.engagement.reports import ReportError
from bot.knowledge.entries import KnowledgeError
from bot.knowledge.evaluation import QueryFileError
from bot.knowledge.facts import FactsError, load_facts
from bot.outreach.campaigns import CampaignError
from bot.outreach.personas import PersonaError
from bot.outreach.report import CampaignNotFoundError
from bot.outreach.segments import SegmentError
from bot.outreach.spec import SpecError
from bot.runtime.logs import configure_logging
from bot.runtime.supervisor import PortTakenError
from bot.runtime.training import TrainingError
from bot.settings import Settings, SettingsError, load_settings

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
    ReportError,
    SpecError,
    SegmentError,
    CampaignError,
    CampaignNotFoundError,
    PersonaError,
)

# The groups of bot/; groups that live elsewhere (the NLU's `eval`) come from the entry point group below.
GROUPS = (
    runtime,
    db,
    privacy,
    escalations,
    reports,
    faq,
    segments,
    personas,
    campaigns,
    scheduler,
    campaign_run,
)
PLUGIN_GROUP = "patronbot.commands"


def _version() -> str:
    def of(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return f"patronbot {of('patronbot')} (Rasa {of('rasa')}, rasa-sdk {of('rasa-sdk')})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patronbot",
        description="patronbot: a library's conversational patron-engagement bot. "
        "Settings come from PATRONBOT_* environment variables and .env.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda entry: entry.name):
        plugin.load()(commands)
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
