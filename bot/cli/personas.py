"""`patronbot personas`: cluster patrons into personas named in both languages, or list the stored ones."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from bot.cli.escalations import print_table, staff_crm
from bot.crm.database import DatabaseError, describe_error, make_engine
from bot.outreach.personas import PersonaSummary, build_personas, list_personas
from bot.settings import Settings


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of at least 1, not {value!r}")
    return int(value)


def print_personas(personas: Sequence[PersonaSummary], output: str) -> None:
    if output == "json":
        print(json.dumps([dataclasses.asdict(p) for p in personas], ensure_ascii=False, indent=2))
        return
    if not personas:
        print("no personas: `patronbot personas` builds them")
        return
    print_table(
        ("persona", "patrons", "name", "名称", "words"),
        [
            (
                persona.key,
                str(persona.size),
                persona.name_en,
                persona.name_zh,
                ", ".join([*persona.words.get("en", [])[:3], *persona.words.get("zh", [])[:3]]) or "-",
            )
            for persona in personas
        ],
    )


def cmd_personas(settings: Settings, args: argparse.Namespace) -> int:
    if args.show:
        with staff_crm(settings) as session:
            personas = list_personas(session=session)
    else:
        url = settings.crm_database_url
        engine = make_engine(url)
        try:
            personas = build_personas(engine=engine, clusters=args.clusters, min_messages=args.min_messages)
        except SQLAlchemyError as error:
            raise DatabaseError(describe_error(error, url)) from None
        finally:
            engine.dispose()
    print_personas(personas, args.format)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    personas = commands.add_parser(
        "personas",
        help="group patrons by what they ask about into personas (p1, p2, ...); --show lists them",
        description=(
            "Cluster the patrons who allow profiling and asked at least --min-messages times by their topics"
            " and interest vectors, name each group in English and Chinese, and store them in place of the"
            " old ones (a group close to an old persona keeps its key). docs/personas.md says how."
        ),
    )
    personas.add_argument(
        "--clusters", type=_positive, help="how many personas (default: the best of 3 to 8 by silhouette)"
    )
    personas.add_argument(
        "--min-messages",
        type=_positive,
        default=3,
        help="only patrons with at least this many messages are placed (default 3)",
    )
    personas.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    personas.add_argument("--show", action="store_true", help="list the stored personas without rebuilding")
    personas.set_defaults(handler=cmd_personas)
