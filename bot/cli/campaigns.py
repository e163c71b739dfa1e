"""`patronbot campaign ...`: save campaign files, list campaigns, pause, resume and cancel them (run and
report are in bot/cli/campaign_run.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import select

from bot.cli.campaign_run import add_report, add_run
from bot.cli.escalations import library_zone, print_table, staff_crm
from bot.crm.models import Segment
from bot.engagement.escalations import staff_member
from bot.outreach.campaigns import (
    CampaignError,
    cancel_campaign,
    describe_schedule,
    list_campaigns,
    load_campaign_file,
    pause_campaign,
    resume_campaign,
    save_campaign,
    schedule_of,
)
from bot.settings import Settings

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _id(value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise CampaignError(
            f"a campaign is named by its id (7), not {value!r}: `patronbot campaign list` shows them"
        )
    return int(text)


def cmd_save(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    # The whole file is checked before the database is opened: a bad file stores nothing.
    definition = load_campaign_file(Path(args.file), timezone=zone.key)
    with staff_crm(settings) as session:
        staff_id = staff_member(session=session, username=args.staff).id if args.staff else None
        campaign = save_campaign(session=session, definition=definition, staff_id=staff_id)
        number, status = campaign.id, campaign.status
    if args.format == "json":
        print(json.dumps({"id": number}))
    else:
        print(f"campaign {definition.name} saved: id {number} ({status})")
    return 0


def _rows(settings: Settings) -> list[dict[str, Any]]:
    zone = library_zone(settings)
    with staff_crm(settings) as session:
        campaigns = list_campaigns(session=session)
        chosen = {c.segment_id for c in campaigns if c.segment_id is not None}
        segments = {
            row.id: row.name
            for row in session.execute(select(Segment.id, Segment.name).where(Segment.id.in_(chosen)))
        }
        return [
            {
                "id": campaign.id,
                "name": campaign.name,
                "segment": segments.get(campaign.segment_id) if campaign.segment_id is not None else None,
                "kind": campaign.kind,
                "asks": campaign.asks,
                "purpose": campaign.purpose,
                "schedule": campaign.schedule,
                "when": describe_schedule(schedule_of(campaign), zone=zone),
                "status": campaign.status,
            }
            for campaign in campaigns
        ]


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = _rows(settings)
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no campaigns: `patronbot campaign save FILE.yml` adds one")
        return 0
    print_table(
        ("id", "name", "segment", "kind", "schedule", "status"),
        [
            (
                str(row["id"]),
                str(row["name"]),
                str(row["segment"] or "-"),
                f"{row['kind']} ({row['asks']})" if row["asks"] else str(row["kind"]),
                str(row["when"]),
                str(row["status"]),
            )
            for row in rows
        ],
    )
    return 0


def cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        campaign = pause_campaign(session=session, campaign_id=_id(args.id))
        name = campaign.name
    print(
        f"campaign {args.id} ({name}) paused: nothing more of it is sent"
        f" until `patronbot campaign resume {args.id}`"
    )
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        campaign = resume_campaign(session=session, campaign_id=_id(args.id))
        name, status = campaign.name, campaign.status
    print(f"campaign {args.id} ({name}) resumed: {status}")
    return 0


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        cancelled = cancel_campaign(session=session, campaign_id=_id(args.id))
    noun = "delivery" if cancelled == 1 else "deliveries"
    print(
        f"campaign {args.id} cancelled: {cancelled} pending {noun} cancelled"
        " (messages already queued still go)"
    )
    return 0


def add_save(actions: Subcommands) -> None:
    save = actions.add_parser(
        "save", help="check a campaign file and store it (or update the one of its name)"
    )
    save.add_argument("file", metavar="FILE.yml", help="the campaign file (see docs/campaigns.md)")
    save.add_argument("--staff", help="your staff username, kept as the campaign's author")
    save.add_argument("--format", choices=["text", "json"], default="text", help='json prints {"id": N}')
    save.set_defaults(handler=cmd_save)


def add_list(actions: Subcommands) -> None:
    listing = actions.add_parser("list", help="every campaign: segment, kind, schedule and status")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(handler=cmd_list)


def _add_by_id(actions: Subcommands, name: str, help_text: str, handler: Callable[..., int]) -> None:
    parser = actions.add_parser(name, help=help_text)
    parser.add_argument("id", help="the campaign's id, as `patronbot campaign list` shows it")
    parser.set_defaults(handler=handler)


def add_pause(actions: Subcommands) -> None:
    _add_by_id(actions, "pause", "hold a campaign: nothing more of it is sent until resumed", cmd_pause)


def add_resume(actions: Subcommands) -> None:
    _add_by_id(actions, "resume", "let a paused campaign go on", cmd_resume)


def add_cancel(actions: Subcommands) -> None:
    _add_by_id(actions, "cancel", "cancel a campaign for good, and its deliveries not yet sent", cmd_cancel)


# One function per subcommand.
SUBCOMMANDS: tuple[Callable[[Subcommands], None], ...] = (
    add_save,
    add_list,
    add_run,
    add_report,
    add_pause,
    add_resume,
    add_cancel,
)


def add_commands(commands: Subcommands) -> None:
    campaign = commands.add_parser(
        "campaign", help="campaigns to a segment: save, list, run, report, pause, resume, cancel"
    )
    actions = campaign.add_subparsers(dest="campaign_command", metavar="CAMPAIGN_COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(actions)
