"""Privacy requests: export and erasure of a patron with 10,000 interactions and 20,000 Rasa events."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from benchmarks.common import (
    DATABASES,
    Result,
    Timer,
    crm_database,
    postgres_server,
    postgres_unavailable,
    publish,
    rasa_database,
    skipped,
    tracker_table,
)
from benchmarks.patron_data import PATRON, fill_crm, tracker_events
from bot.crm.database import make_engine, session_scope
from bot.crm.models import (
    Interaction,
)
from bot.crm.rasa_events import RasaEventStore
from bot.privacy.erasure import erase_patron
from bot.privacy.export import export_patron

TARGET_SECONDS = 2.0
EXPORT_REPEATS = 3
NAMES = [("export_patron", "s", TARGET_SECONDS, "<"), ("erase_patron", "s", TARGET_SECONDS, "<")]


def _measure(*, database: str, crm_url: str, tracker_url: str, sizes: dict[str, int]) -> list[Result]:
    tracker = make_engine(tracker_url)
    with Timer() as tracker_fill:
        publish(
            tracker,
            tracker_table(),
            tracker_events(**{k: sizes[k] for k in ("patron_events", "background_senders")}),
        )
    tracker.dispose()
    crm = make_engine(crm_url)
    try:
        with Timer() as crm_fill:
            filled = fill_crm(crm, interactions=sizes["interactions"], background=sizes["background_patrons"])
        common: dict[str, Any] = {
            "patron": PATRON,
            "patron_interactions": sizes["interactions"],
            "patron_rasa_events": sizes["patron_events"],
            "other_patrons": sizes["background_patrons"],
            "interactions_in_table": filled["interactions_in_table"],
            "tracker_store": "SQLite file"
            if database == "sqlite"
            else "PostgreSQL schema (separate from the CRM)",
            "fill_seconds": round(crm_fill.elapsed + tracker_fill.elapsed, 2),
        }
        if database == "postgresql":
            common["server"] = postgres_server()

        runs: list[float] = []
        size = 0
        for _ in range(EXPORT_REPEATS):
            stores = [RasaEventStore(name="tracker_store", url=tracker_url)]
            with Timer() as export:
                with session_scope(crm) as session:
                    document = export_patron(
                        session=session,
                        patron_ref=PATRON,
                        actor="bench",
                        reason="benchmark",
                        rasa_stores=stores,
                    )
                payload = json.dumps(document, ensure_ascii=False, indent=2)
            stores[0].dispose()
            runs.append(export.elapsed)
            size = len(payload.encode())
            exported = (len(document["tables"]["interaction"]), len(document["rasa"]["tracker_store"]))
            if exported != (sizes["interactions"], sizes["patron_events"]):
                raise RuntimeError(f"export held {exported} interactions and Rasa events, expected more")
        export_result = Result(
            name="export_patron",
            database=database,
            value=round(statistics.median(runs), 4),
            unit="s",
            target=TARGET_SECONDS,
            comparison="<",
            params=common
            | {
                "statistic": f"median of {EXPORT_REPEATS} runs",
                "runs_seconds": [round(run, 4) for run in runs],
                "includes": "export_patron in session_scope, with the commit, and json.dumps as the CLI does",
                "document_bytes": size,
            },
        )

        stores = [RasaEventStore(name="tracker_store", url=tracker_url)]
        with Timer() as erase, session_scope(crm) as session:
            report = erase_patron(
                session=session, patron_ref=PATRON, actor="bench", reason="benchmark", rasa_stores=stores
            )
        stores[0].dispose()
        if report.interactions_counted != sizes["interactions"]:
            raise RuntimeError(f"erasure counted {report.interactions_counted} interactions")
        with crm.connect() as connection:
            left = connection.execute(
                select(func.count())
                .select_from(Interaction.__table__)
                .where(Interaction.patron_id == report.patron_id)
            ).scalar_one()
            stat_rows = connection.execute(text("SELECT COUNT(*) FROM interaction_stat")).scalar_one()
        if left:
            raise RuntimeError(f"erasure left {left} interactions")
        erase_result = Result(
            name="erase_patron",
            database=database,
            value=round(erase.elapsed, 4),
            unit="s",
            target=TARGET_SECONDS,
            comparison="<",
            params=common
            | {
                "statistic": "one run",
                "includes": "erase_patron in session_scope, with the commit",
                "deleted_rows": report.deleted_rows,
                "anonymised_rows": report.anonymised_rows,
                "rasa_events_deleted": report.rasa_events_deleted,
                "interaction_stat_rows": int(stat_rows),
            },
        )
    finally:
        crm.dispose()
    return [export_result, erase_result]


def run(*, quick: bool) -> list[Result]:
    sizes = {
        "interactions": 1000 if quick else 10_000,
        "patron_events": 2000 if quick else 20_000,
        "background_patrons": 100 if quick else 1000,
        "background_senders": 10 if quick else 100,
    }
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="patronbot-bench-privacy-") as tmp:
        workdir = Path(tmp)
        for database in DATABASES:
            reason = postgres_unavailable() if database == "postgresql" else None
            if reason:
                results += skipped(NAMES, database, reason, dict(sizes))
                continue
            with (
                crm_database(database, workdir, "privacy") as crm_url,
                rasa_database(database, workdir, "privacy_tracker") as tracker_url,
            ):
                results += _measure(database=database, crm_url=crm_url, tracker_url=tracker_url, sizes=sizes)
    return results
