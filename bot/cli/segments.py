"""`patronbot segment ...` and `patronbot interests`: patron segments, previews and interest vectors."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.cli.escalations import library_zone, local_time, print_table
from bot.crm.database import DatabaseError, describe_error, make_engine, session_scope
from bot.outreach.interests import model_key, refresh_interests
from bot.outreach.segments import (
    find_segment,
    list_segments,
    load_segment_file,
    preview,
    refresh_membership,
    save_segment,
)
from bot.settings import Settings


@contextmanager
def crm_engine(settings: Settings) -> Iterator[Engine]:
    """The CRM for a command that runs several transactions; a database failure is one line."""
    engine = make_engine(settings.crm_database_url)
    try:
        yield engine
    except SQLAlchemyError as error:
        raise DatabaseError(describe_error(error, settings.crm_database_url)) from None
    finally:
        engine.dispose()


def cmd_save(settings: Settings, args: argparse.Namespace) -> int:
    definition = load_segment_file(Path(args.file))  # refused before anything is stored
    with crm_engine(settings) as engine:
        with session_scope(engine) as session:
            segment_id = save_segment(session=session, definition=definition).id
        count = refresh_membership(engine=engine, segment_id=segment_id)
    print(f"segment {definition.name} saved (id {segment_id}): {count} patrons")
    return 0


def cmd_preview(settings: Settings, args: argparse.Namespace) -> int:
    with crm_engine(settings) as engine:
        with session_scope(engine) as session:
            segment_id = find_segment(session=session, name=args.name).id
        shown = preview(engine=engine, segment_id=segment_id, sample=args.sample)
    if args.format == "json":
        print(json.dumps(shown.as_json(), ensure_ascii=False))
        return 0
    print(f"segment {shown.name}: {shown.count} patrons")
    if shown.sample:
        rows = [
            (
                str(patron.patron_id),
                patron.display_name or "-",
                patron.language or "-",
                patron.patron_type or "-",
                ",".join(patron.channels) or "-",
            )
            for patron in shown.sample
        ]
        print_table(("patron", "name", "language", "type", "channels"), rows)
    return 0


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    zone = library_zone(settings)
    with crm_engine(settings) as engine, session_scope(engine) as session:
        rows = [
            (
                segment.name or "",
                "-" if segment.member_count is None else str(segment.member_count),
                local_time(segment.refreshed_at, zone),
                "rules" if segment.definition is not None else "by hand",
                segment.description or "",
            )
            for segment in list_segments(session=session)
        ]
    if not rows:
        print("no segments: `patronbot segment save FILE.yml` adds one")
        return 0
    print_table(("segment", "patrons", f"refreshed ({zone.key})", "made by", "description"), rows)
    return 0


def cmd_interests(settings: Settings, args: argparse.Namespace) -> int:
    from bot.knowledge.encoders import MultilingualEncoder

    encoder = MultilingualEncoder()
    with crm_engine(settings) as engine:
        encoded = refresh_interests(engine=engine, encoder=encoder, batch=args.batch, rebuild=args.rebuild)
    print(f"interest vectors up to date: {encoded} texts encoded ({model_key(encoder)})")
    return 0


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {value!r}")
    return int(value)


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    segment = commands.add_parser("segment", help="patron segments: save one from a file, preview, list")
    actions = segment.add_subparsers(dest="segment_command", metavar="SEGMENT_COMMAND", required=True)

    save = actions.add_parser(
        "save", help="store or update the segment a file defines, and count its patrons"
    )
    save.add_argument("file", metavar="FILE.yml", help="the segment file (docs/segments.md)")
    save.set_defaults(handler=cmd_save)

    shown = actions.add_parser("preview", help="how many patrons a segment holds now, and a few of them")
    shown.add_argument("name", help="the segment's name")
    shown.add_argument("--format", choices=("text", "json"), default="text")
    shown.add_argument("--sample", type=_positive, default=10, help="how many patrons to show (10)")
    shown.set_defaults(handler=cmd_preview)

    listed = actions.add_parser("list", help="every segment, its size and when it was counted")
    listed.set_defaults(handler=cmd_list)

    interests = commands.add_parser(
        "interests", help="bring patrons' interest vectors up to date (those with the profiling consent)"
    )
    interests.add_argument(
        "--rebuild", action="store_true", help="recompute every vector (takes in changed stated interests)"
    )
    interests.add_argument("--batch", type=_positive, default=256, help="texts per transaction (256)")
    interests.set_defaults(handler=cmd_interests)
