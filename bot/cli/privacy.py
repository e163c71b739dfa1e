"""`patronbot patron ...` and `patronbot retention`: privacy requests from the command line."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.crm.audit import log_access
from bot.crm.consent import record_consent
from bot.crm.database import DatabaseError, describe_error, make_engine, session_scope
from bot.crm.models import CONSENT_PURPOSES
from bot.crm.patrons import PatronNotFoundError, resolve_patron
from bot.crm.rasa_events import RasaEventStore, rasa_event_stores
from bot.files import write_private
from bot.privacy.erasure import erase_patron
from bot.privacy.export import export_patron
from bot.privacy.retention import purge_expired
from bot.settings import Settings


class PatronRefError(Exception):
    """A patron reference that names no patron, or cannot be read."""


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _stores(settings: Settings) -> list[RasaEventStore]:
    return rasa_event_stores(tracker_url=settings.rasa_tracker_url, broker_url=settings.rasa_event_broker_url)


@contextmanager
def _crm(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.crm_database_url)
    try:
        with session_scope(engine) as session:
            yield session
    except (PatronNotFoundError, ValueError) as error:
        raise PatronRefError(str(error)) from None
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    with _crm(settings) as session:
        document = export_patron(
            session=session,
            patron_ref=args.patron,
            actor=_actor(),
            reason=args.reason,
            rasa_stores=_stores(settings),
        )
    # Compact: indentation makes Python's JSON encoder several times slower on large exports.
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    if args.output:
        # Owner-only, and whole or not at all: the file holds everything the library knows of the patron.
        write_private(Path(args.output), text + "\n")
        print(f"exported patron {document['patron']['id']} to {args.output}")
    else:
        print(text)
    return 0


def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    if not args.yes:
        with _crm(settings) as session:
            patron = resolve_patron(session=session, ref=args.patron)
            label = (
                f"patron {patron.id} ({', '.join(f'{i.channel}:{i.external_id}' for i in patron.identities)})"
            )
            # Showing whom the erasure would reach is a read of their data, kept even if it is declined.
            log_access(
                session=session,
                actor=_actor(),
                action="read",
                patron_id=patron.id,
                reason=f"confirming an erasure: {args.reason}",
            )
        if not sys.stdin.isatty():
            print(f"patronbot: erasing {label} needs --yes when not asked at a terminal", file=sys.stderr)
            return 2
        answer = input(f"Erase {label} and all their messages for good? Type 'erase' to confirm: ")
        if answer.strip() != "erase":
            print("nothing erased")
            return 1
    with _crm(settings) as session:
        report = erase_patron(
            session=session,
            patron_ref=args.patron,
            actor=_actor(),
            reason=args.reason,
            rasa_stores=_stores(settings),
        )
    print(
        f"erased patron {report.patron_id}: {sum(report.deleted_rows.values())} rows deleted, "
        f"{sum(report.anonymised_rows.values())} kept anonymously, "
        f"{sum(report.rasa_events_deleted.values())} Rasa events deleted; "
        f"{report.interactions_counted} interactions kept as anonymous daily counts"
    )
    if report.escalations_closed:
        closed = ", ".join(str(number) for number in report.escalations_closed)
        print(f"closed open escalations {closed}: no one is left to answer")
    return 0


def cmd_consent(settings: Settings, args: argparse.Namespace) -> int:
    with _crm(settings) as session:
        patron = resolve_patron(session=session, ref=args.patron)
        change = record_consent(
            session=session,
            patron_id=patron.id,
            purpose=args.purpose,
            granted=args.decision == "grant",
            channel="cli",
        )
        from bot.crm.audit import log_access

        log_access(session=session, actor=_actor(), action="consent", patron_id=patron.id, reason=args.reason)
    state = "granted" if change.granted else "withdrawn"
    if not change.changed:
        print(f"{args.purpose} consent was already {state}; nothing changed")
    else:
        print(f"{args.purpose} consent {state}; {change.cancelled_deliveries} pending deliveries cancelled")
    return 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from bot.ingest.sql_broker import SqlEventSource, purge_ingested

    days = args.days or settings.retention_days
    with _crm(settings) as session:
        report = purge_expired(session=session, retention_days=days, rasa_stores=_stores(settings))
    copied = 0
    if not settings.rasa_event_broker_url.startswith("amqp://"):
        engine = make_engine(settings.crm_database_url)
        copied = purge_ingested(crm=engine, source=SqlEventSource(settings.rasa_event_broker_url))
        engine.dispose()
    print(
        f"purged texts older than {report.cutoff:%Y-%m-%d} ({days} days): "
        f"{report.interaction_texts_purged} interaction texts, "
        f"{sum(report.rasa_events_purged.values())} Rasa tracker events, "
        f"{report.outbox_messages_purged} outbox messages; "
        f"{copied} already-ingested broker events removed"
    )
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    patron = commands.add_parser("patron", help="a patron's privacy rights: export, erase, consent")
    patron_commands = patron.add_subparsers(dest="patron_command", metavar="PATRON_COMMAND", required=True)
    ref_help = "internal patron id (42) or CHANNEL:ID as the channel knows them (telegram:4242, rest:alice)"

    export = patron_commands.add_parser("export", help="everything held about a patron, as JSON")
    export.add_argument("patron", help=ref_help)
    export.add_argument("--output", "-o", help="write to this file instead of standard output")
    export.add_argument("--reason", default="patron's request for their data", help="why (audited)")
    export.set_defaults(handler=cmd_export)

    erase = patron_commands.add_parser("erase", help="erase a patron from the CRM and Rasa's stores")
    erase.add_argument("patron", help=ref_help)
    erase.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    erase.add_argument("--reason", default="patron's request to erase their data", help="why (audited)")
    erase.set_defaults(handler=cmd_erase)

    consent = patron_commands.add_parser("consent", help="grant or withdraw a consent for a patron")
    consent.add_argument("patron", help=ref_help)
    consent.add_argument("decision", choices=["grant", "withdraw"])
    consent.add_argument("purpose", choices=CONSENT_PURPOSES)
    consent.add_argument("--reason", default="patron's instruction", help="why (audited)")
    consent.set_defaults(handler=cmd_consent)

    retention = commands.add_parser(
        "retention", help="purge interaction texts older than the retention period"
    )
    retention.add_argument("--days", type=int, help="override PATRONBOT_RETENTION_DAYS for this run")
    retention.set_defaults(handler=cmd_retention)
