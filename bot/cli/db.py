"""`patronbot db upgrade`: the CRM database's schema, by its Alembic migrations."""

from __future__ import annotations

import argparse

from sqlalchemy.exc import SQLAlchemyError

from bot.crm.database import DatabaseError, describe_error
from bot.settings import Settings


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from bot.crm.migrate import current_revision, upgrade

    url = settings.crm_database_url
    try:
        upgrade(url=url, revision=args.revision)
        print(f"CRM database is at revision {current_revision(url=url)}")
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, url)) from None
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    db = commands.add_parser("db", help="the CRM database")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    upgrade.set_defaults(handler=cmd_db_upgrade)
