"""`patronbot escalations ...`: staff list, read, answer and resolve escalations until the console exists."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.database import DatabaseError, describe_error, make_engine, session_scope
from bot.crm.models import Escalation, OutboxMessage
from bot.crm.models.feedback import ESCALATION_STATUSES
from bot.engagement.escalations import (
    EscalationError,
    conversation_for_staff,
    list_escalations,
    resolve_escalation,
    staff_reply,
)
from bot.engagement.reports import escalation_of_report, report_numbers
from bot.knowledge.facts import load_facts
from bot.outbound.dispatcher import PUSH_CHANNELS
from bot.settings import Settings


@contextmanager
def staff_crm(settings: Settings) -> Iterator[Session]:
    """One CRM transaction for a staff command; a database failure is one line."""
    engine = make_engine(settings.crm_database_url)
    try:
        with session_scope(engine) as session:
            yield session
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()


REPORT_PREFIX = "report:"
ID_HELP = "the escalation's id (16), or the number the patron was told for their complaint (report:9)"


def escalation_id(session: Session, value: str) -> int:
    """The escalation named on the command line: by its id (`16`), or by the patron's report number
    (`report:9`), which is what the patron quotes."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    number = text.removeprefix(REPORT_PREFIX).strip()
    if text.lower().startswith(REPORT_PREFIX) and number.isdigit():
        return escalation_of_report(session=session, report_id=int(number))
    raise EscalationError(
        f"name an escalation by its id (16) or by the patron's report number (report:9), not {value!r}:"
        " `patronbot escalations` lists them"
    )


def library_zone(settings: Settings) -> ZoneInfo:
    return load_facts(settings.path(settings.library_facts)).timezone


def local_time(value: dt.datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else "-"


def print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _numbers(numbers: list[int]) -> str:
    return ",".join(str(number) for number in numbers) or "-"


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    with staff_crm(settings) as session:
        escalations = list_escalations(session=session, status=args.status)
        reports = report_numbers(session=session, escalation_ids=[e.id for e in escalations])
        rows = [
            (
                str(e.id),
                e.reason or "",
                e.priority or "",
                e.status or "",
                local_time(e.created_at, zone),
                local_time(e.due_at, zone),
                _numbers(reports.get(e.id, [])),
            )
            for e in escalations
        ]
    if not rows:
        print("no escalations" + (f" with status {args.status}" if args.status else ""))
        return 0
    print_table(("id", "reason", "priority", "status", f"created ({zone.key})", "due", "report"), rows)
    return 0


def _summary(escalation: Escalation, reports: list[int]) -> str:
    """One line on the escalation: what it is, how it stands, which reports of the patron it carries."""
    parts = [f"{escalation.reason}", f"{escalation.priority} priority", f"{escalation.status}"]
    if reports:
        parts.append(f"report {_numbers(reports)}")
    if escalation.resolution_note:
        parts.append(f"note: {escalation.resolution_note}")
    return f"escalation {escalation.id}: " + ", ".join(parts)


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    with staff_crm(settings) as session:
        number = escalation_id(session, args.id)
        messages = conversation_for_staff(session=session, escalation_id=number, staff=args.staff)
        escalation = session.get(Escalation, number)  # found: conversation_for_staff raises if not
        reports = report_numbers(session=session, escalation_ids=[number]).get(number, [])
        lines = [_summary(escalation, reports)] if escalation is not None else []
        lines += [
            f"{local_time(m.occurred_at, zone)}  "
            f"{'patron' if m.direction == 'in' else (m.produced_by or 'bot')}: "
            f"{m.text if m.text is not None else '(text purged after the retention period)'}"
            for m in messages
        ]
    if not messages:
        lines.append("no messages to show")
    print("\n".join(lines))
    return 0


def _how_it_goes(channel: str) -> str:
    """Where a recorded reply goes from here, for the staff member who wrote it."""
    if channel in PUSH_CHANNELS:
        return f"the running bot sends it on {channel} within a second or two"
    return "it waits for the patron's client to fetch it"


def cmd_reply(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        number = escalation_id(session, args.id)
        outbox_id = staff_reply(session=session, escalation_id=number, staff=args.staff, text=args.text)
        message = session.get(OutboxMessage, outbox_id)
        channel = str(message.channel) if message else ""
    print(
        f"reply recorded for escalation {number}'s patron (outbox message {outbox_id}):",
        _how_it_goes(channel),
    )
    return 0


def cmd_resolve(settings: Settings, args: argparse.Namespace) -> int:
    with staff_crm(settings) as session:
        escalation = resolve_escalation(
            session=session, escalation_id=escalation_id(session, args.id), staff=args.staff, note=args.note
        )
    print(f"resolved escalation {escalation.id}: the bot answers the patron's next message again")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    escalations = commands.add_parser(
        "escalations", help="conversations handed to staff: list, show, reply, resolve"
    )
    escalations.add_argument(
        "--status", choices=ESCALATION_STATUSES, help="only escalations with this status"
    )
    escalations.set_defaults(handler=cmd_list)
    actions = escalations.add_subparsers(dest="escalation_command", metavar="ESCALATION_COMMAND")
    staff_help = "your staff username (created as a librarian on first use; audited)"

    show = actions.add_parser("show", help="the escalated conversation's messages (audited)")
    show.add_argument("id", help=ID_HELP)
    show.add_argument("--staff", required=True, help=staff_help)
    show.set_defaults(handler=cmd_show)

    reply = actions.add_parser("reply", help="send the patron a reply; the escalation becomes yours")
    reply.add_argument("id", help=ID_HELP)
    reply.add_argument("--staff", required=True, help=staff_help)
    reply.add_argument("text", help="the reply, as the patron will read it")
    reply.set_defaults(handler=cmd_reply)

    resolve = actions.add_parser("resolve", help="close the escalation and hand the patron back to the bot")
    resolve.add_argument("id", help=ID_HELP)
    resolve.add_argument("--staff", required=True, help=staff_help)
    resolve.add_argument("--note", help="what was done (kept with the escalation)")
    resolve.set_defaults(handler=cmd_resolve)
