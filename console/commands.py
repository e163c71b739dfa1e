"""`patronbot staff ...` (console accounts; passwords from stdin, never the command line) and
`patronbot console` (the staff console alone; `patronbot run` starts it with the bot)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TypeAlias

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from bot.crm.database import DatabaseError, describe_error, make_engine, session_scope
from bot.crm.models import StaffSession, StaffUser
from bot.crm.models.staff import STAFF_ROLES
from bot.settings import Settings
from console.accounts import StaffError, add_staff, set_password

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def read_password() -> str:
    """The new password: asked twice on a terminal, else the first line of stdin (for scripts)."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise StaffError("the two passwords differ: nothing changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _staff_command(settings: Settings, work: str, args: argparse.Namespace) -> int:
    engine = make_engine(settings.crm_database_url, hide_parameters=True)
    try:
        with session_scope(engine) as session:
            if work == "add":
                staff = add_staff(
                    session=session,
                    username=args.username,
                    role=args.role,
                    password=read_password(),
                    display_name=args.display_name,
                )
                print(f"staff member {staff.username} ({staff.role}) can sign in to the console")
            elif work == "password":
                staff = set_password(session=session, username=args.username, password=read_password())
                session.execute(delete(StaffSession).where(StaffSession.staff_user_id == staff.id))
                print(f"password of {staff.username} changed; their sessions are signed out")
            elif work == "deactivate":
                found = session.execute(
                    select(StaffUser).where(StaffUser.username == args.username)
                ).scalar_one_or_none()
                if found is None:
                    raise StaffError(f"no staff member {args.username!r}")
                found.active = False
                session.execute(delete(StaffSession).where(StaffSession.staff_user_id == found.id))
                print(f"{found.username} can no longer sign in; their sessions are signed out")
            else:
                rows = session.execute(select(StaffUser).order_by(StaffUser.username)).scalars().all()
                for staff in rows:
                    can = "can sign in" if staff.password_hash and staff.active else "cannot sign in"
                    print(
                        f"{staff.username}\t{staff.role}\t{'active' if staff.active else 'inactive'}\t{can}"
                    )
    except StaffError as problem:
        print(f"patronbot: {problem}", file=sys.stderr)
        return 2
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()
    return 0


def cmd_console(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from console.app import create_app

    port = args.port or settings.console_port
    print(f"staff console on http://{settings.host}:{port}/ (Ctrl-C stops)", flush=True)
    # No access log: a URL names the patron or escalation a librarian opened; the audit log says who.
    # No websockets (the console polls): uvicorn's websockets support needs a newer `websockets` than
    # Rasa 3.6 pins, and fails to import with it.
    uvicorn.run(
        create_app(settings=settings),
        host=settings.host,
        port=port,
        log_level="warning",
        access_log=False,
        ws="none",
    )
    return 0


def add_commands(commands: Subcommands) -> None:
    staff = commands.add_parser("staff", help="staff console accounts (passwords are read from stdin)")
    actions = staff.add_subparsers(dest="staff_command", metavar="STAFF_COMMAND", required=True)
    add = actions.add_parser("add", help="a staff member who can sign in (password from stdin)")
    add.add_argument("username")
    add.add_argument("--role", choices=STAFF_ROLES, required=True)
    add.add_argument("--display-name", default=None)
    add.set_defaults(handler=lambda settings, args: _staff_command(settings, "add", args))
    password = actions.add_parser(
        "password", help="set a new password (from stdin); signs their sessions out"
    )
    password.add_argument("username")
    password.set_defaults(handler=lambda settings, args: _staff_command(settings, "password", args))
    deactivate = actions.add_parser(
        "deactivate", help="stop a staff member signing in; signs their sessions out"
    )
    deactivate.add_argument("username")
    deactivate.set_defaults(handler=lambda settings, args: _staff_command(settings, "deactivate", args))
    listing = actions.add_parser("list", help="staff members, their role and whether they can sign in")
    listing.set_defaults(handler=lambda settings, args: _staff_command(settings, "list", args))

    console = commands.add_parser("console", help="run the staff console alone (patronbot run starts it too)")
    console.add_argument("--port", type=int, default=None, help="default: PATRONBOT_CONSOLE_PORT (8000)")
    console.set_defaults(handler=cmd_console)
