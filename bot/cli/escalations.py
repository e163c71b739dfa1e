"""`patronbot escalations ...`: staff list, read, answer and resolve escalations until the console exists."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.database import DatabaseError, describe_error, make_engine, session_scope
from bot.crm.models import OutboxMessage
from bot.crm.models.feedback import ESCALATION_STATUSES
from bot.engagement.escalations import (
    EscalationError,
    conversation_for_staff,
    list_escalations,
    resolve_escalation,
    staff_reply,
)
from bot.knowledge.facts import load_facts
from bot.outbound.outbox import deliver
from bot.settings import Settings


@contextmanager
def _crm(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.crm_database_url)
    try:
        with session_scope(engine) as session:
            yield session
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()


def _escalation_id(value: str) -> int:
    if not value.strip().isdigit():
        raise EscalationError(
            f"an escalation id is a number, got {value!r}: `patronbot escalations` lists them"
        )
    return int(value)


def _zone(settings: Settings) -> ZoneInfo:
    return load_facts(settings.path(settings.library_facts)).timezone


def _at(value: dt.datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else "-"


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    zone = _zone(settings)
    with _crm(settings) as session:
        rows = [
            (
                str(e.id),
                e.reason or "",
                e.priority or "",
                e.status or "",
                _at(e.created_at, zone),
                _at(e.due_at, zone),
            )
            for e in list_escalations(session=session, status=args.status)
        ]
    if not rows:
        print("no escalations" + (f" with status {args.status}" if args.status else ""))
        return 0
    header = ("id", "reason", "priority", "status", f"created ({zone.key})", "due")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_show(settings: Settings, args: argparse.Namespace) -> int:
    zone = _zone(settings)
    escalation_id = _escalation_id(args.id)
    with _crm(settings) as session:
        messages = conversation_for_staff(session=session, escalation_id=escalation_id, staff=args.staff)
        lines = [
            f"{_at(m.occurred_at, zone)}  "
            f"{'patron' if m.direction == 'in' else (m.produced_by or 'bot')}: "
            f"{m.text if m.text is not None else '(text purged after the retention period)'}"
            for m in messages
        ]
    print("\n".join(lines) if lines else f"escalation {escalation_id} has no messages to show")
    return 0


def _deliver(settings: Settings, conversations: list[tuple[str, str]]) -> None:
    """Push what was recorded and committed to channels that push (a channel without keeps it for the
    patron's client)."""
    engine = make_engine(settings.crm_database_url)
    try:
        for channel, recipient in conversations:
            deliver(engine=engine, channel=channel, recipient=recipient)
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()


def cmd_reply(settings: Settings, args: argparse.Namespace) -> int:
    escalation_id = _escalation_id(args.id)
    with _crm(settings) as session:
        outbox_id = staff_reply(
            session=session, escalation_id=escalation_id, staff=args.staff, text=args.text
        )
        message = session.get(OutboxMessage, outbox_id)
        channel, recipient = (str(message.channel), str(message.recipient)) if message else ("", "")
    _deliver(settings, [(channel, recipient)])
    print(f"reply sent to escalation {escalation_id}'s patron (outbox message {outbox_id})")
    return 0


def cmd_resolve(settings: Settings, args: argparse.Namespace) -> int:
    escalation_id = _escalation_id(args.id)
    with _crm(settings) as session:
        escalation = resolve_escalation(
            session=session, escalation_id=escalation_id, staff=args.staff, note=args.note
        )
        waiting = session.execute(
            select(OutboxMessage.channel, OutboxMessage.recipient)
            .where(OutboxMessage.recipient == escalation.rasa_sender_id, OutboxMessage.delivered_at.is_(None))
            .distinct()
        ).all()
    _deliver(settings, [(str(channel), str(recipient)) for channel, recipient in waiting])
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
    show.add_argument("id", help="the escalation's id")
    show.add_argument("--staff", required=True, help=staff_help)
    show.set_defaults(handler=cmd_show)

    reply = actions.add_parser("reply", help="send the patron a reply; the escalation becomes yours")
    reply.add_argument("id", help="the escalation's id")
    reply.add_argument("--staff", required=True, help=staff_help)
    reply.add_argument("text", help="the reply, as the patron will read it")
    reply.set_defaults(handler=cmd_reply)

    resolve = actions.add_parser("resolve", help="close the escalation and hand the patron back to the bot")
    resolve.add_argument("id", help="the escalation's id")
    resolve.add_argument("--staff", required=True, help=staff_help)
    resolve.add_argument("--note", help="what was done (kept with the escalation)")
    resolve.set_defaults(handler=cmd_resolve)
