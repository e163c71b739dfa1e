"""Ingest throughput: Rasa events read from a SQL broker table and written as CRM interactions."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks.common import (
    DATABASES,
    T0,
    Result,
    Timer,
    broker_table,
    crm_database,
    percentile,
    postgres_server,
    postgres_unavailable,
    publish,
    rasa_database,
    skipped,
)
from benchmarks.conversations import conversation_events
from bot.crm.database import make_engine
from bot.crm.models import Interaction
from bot.ingest.events import IngestState
from bot.ingest.sql_broker import SqlEventSource, ingest_once

NAME = "ingest_throughput"
UNIT = "interactions/s"
TARGET = 2000.0
BATCH = 1000


def broker_events(*, senders: int, seed: int = 20260501) -> list[dict[str, Any]]:
    """Concurrent conversations as the broker receives them: interleaved, in time order.

    Sender n is ``rest:bench-<n>``; each has one session of 3 to 7 turns (5 on average), starting at a
    random moment within an hour, so a batch holds the interleaved turns of dozens of patrons.
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for number in range(senders):
        events += conversation_events(
            rng, sender=f"rest:bench-{number}", start=T0 + rng.uniform(0, 3600), turns=rng.randint(3, 7)
        )
    events.sort(key=lambda event: float(event["timestamp"]))
    return events


def _measure(*, database: str, crm_url: str, broker_url: str, events: list[dict[str, Any]]) -> Result:
    interactions = sum(1 for event in events if event["event"] in ("user", "bot"))
    broker = make_engine(broker_url)
    with Timer() as fill:
        publish(broker, broker_table(), events)
    broker.dispose()

    crm = make_engine(crm_url)
    source = SqlEventSource(broker_url)
    state = IngestState()
    batches: list[float] = []
    batch_rates: list[float] = []  # interactions/s of each batch in the batch figures
    count = 0
    offset = 0
    try:
        with Timer() as loop:
            while True:
                with Timer() as batch:
                    moved = ingest_once(crm=crm, source=source, state=state, limit=BATCH)
                if not moved:
                    break
                count += 1
                # The broker's ids follow the list's order, so the batch is this slice of it.
                written = sum(
                    1 for event in events[offset : offset + moved] if event["event"] in ("user", "bot")
                )
                offset += moved
                # The last, partial batch would understate the per-batch rate (unless it is the only one).
                if moved == BATCH or not batches:
                    batches.append(batch.elapsed)
                    batch_rates.append(written / batch.elapsed)
        with crm.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(Interaction.__table__)).scalar_one()
    finally:
        source.engine.dispose()
        crm.dispose()
    if stored != interactions:
        raise RuntimeError(f"ingest stored {stored} interactions, expected {interactions}")
    params: dict[str, Any] = {
        "senders": len({event["sender_id"] for event in events}),
        "events": len(events),
        "interactions": interactions,
        "batch_limit": BATCH,
        "batches": count,
        "batches_in_batch_figures": len(batches),
        "ingest_seconds": round(loop.elapsed, 3),
        "batch_seconds_p50": round(percentile(batches, 50), 4),
        "batch_seconds_max": round(max(batches), 4),
        "batch_interactions_per_s_min": round(min(batch_rates)),
        "batch_interactions_per_s_p50": round(percentile(batch_rates, 50)),
        "broker_fill_seconds": round(fill.elapsed, 3),
        "broker": "SQLite file" if database == "sqlite" else "PostgreSQL schema (separate from the CRM)",
    }
    if database == "postgresql":
        params["server"] = postgres_server()
    return Result(
        name=NAME,
        database=database,
        value=round(interactions / loop.elapsed, 1),
        unit=UNIT,
        target=TARGET,
        comparison=">=",
        params=params,
    )


def run(*, quick: bool) -> list[Result]:
    senders = 100 if quick else 1000
    events = broker_events(senders=senders)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="patronbot-bench-ingest-") as tmp:
        workdir = Path(tmp)
        for database in DATABASES:
            reason = postgres_unavailable() if database == "postgresql" else None
            if reason:
                results += skipped([(NAME, UNIT, TARGET, ">=")], database, reason, {"senders": senders})
                continue
            with (
                crm_database(database, workdir, "ingest") as crm_url,
                rasa_database(database, workdir, "ingest_broker") as broker_url,
            ):
                results.append(
                    _measure(database=database, crm_url=crm_url, broker_url=broker_url, events=events)
                )
    return results
