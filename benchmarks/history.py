"""History reads: a patron's last 50 interactions on PostgreSQL with 1,000,000 rows in the table."""

from __future__ import annotations

import csv
import io
import random
import statistics
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from benchmarks.common import (
    T0,
    Result,
    Timer,
    percentile,
    postgres_schema,
    postgres_server,
    postgres_unavailable,
    skipped,
    vacuum_analyze,
)
from benchmarks.conversations import TURNS, pick_language, utc
from bot.crm.conversations import patron_history
from bot.crm.database import make_engine, session_factory
from bot.crm.migrate import upgrade
from bot.crm.models import Interaction

TARGET_MS = 5.0
LIMIT = 50
PER_PATRON = 100
QUERIES = 200
WARMUP = 20
DAY = 86400.0
NAMES = [("patron_history_p50", "ms", TARGET_MS, "<"), ("patron_history_p95", "ms", TARGET_MS, "<")]


def _copy(cursor: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    """Load rows with PostgreSQL's COPY (CSV: an unquoted empty field is NULL)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)


def fill(engine: Engine, *, patrons: int, per_patron: int, seed: int = 3) -> list[int]:
    """`patrons` patrons with `per_patron` interactions each, loaded with COPY; returns the patron ids.

    Rows go in time order, one round of every patron's next message at a time, so a patron's rows are
    spread over the whole table as they are in a live CRM (not stored side by side).
    """
    rng = random.Random(seed)
    first = T0 - 300 * DAY
    raw = engine.raw_connection()
    try:
        cursor: Any = raw.cursor()
        languages = [pick_language(rng) for _ in range(patrons)]
        _copy(
            cursor,
            "patron",
            "language, created_at, last_seen_at, interests, reachable",
            [
                ("en" if language == "en" else "zh", utc(first), utc(T0), "[]", "true")
                for language in languages
            ],
        )
        cursor.execute("SELECT id FROM patron ORDER BY id")
        ids = [int(row[0]) for row in cursor.fetchall()]
        _copy(
            cursor,
            "channel_identity",
            "patron_id, channel, external_id, created_at",
            [(patron_id, "rest", f"bench-{patron_id}", utc(first)) for patron_id in ids],
        )
        columns = (
            "patron_id, channel, direction, text, intent, confidence, language, produced_by, event_key,"
            " occurred_at, recorded_at"
        )
        counter = 0
        asked = [TURNS[0]] * patrons  # each patron's last question, which the next round answers
        step = 300 * DAY / per_patron
        for round_number in range(per_patron):
            rows: list[tuple[Any, ...]] = []
            order = list(range(patrons))
            rng.shuffle(order)
            incoming = round_number % 2 == 0
            for index in order:
                counter += 1
                if incoming:
                    asked[index] = rng.choice(TURNS)
                turn = asked[index]
                language = languages[index]
                at = utc(first + round_number * step + rng.uniform(0, step))
                rows.append(
                    (
                        ids[index],
                        "rest",
                        "in" if incoming else "out",
                        turn.user_text(language) if incoming else turn.answer(language),
                        turn.intent if incoming else None,
                        round(rng.uniform(0.55, 0.99), 4) if incoming else None,
                        "en" if language == "en" else "zh",
                        None if incoming else turn.action,
                        f"{counter:064x}",
                        at.isoformat(),
                        at.isoformat(),
                    )
                )
            _copy(cursor, "interaction", columns, rows)
        raw.commit()
    finally:
        raw.close()
    return ids


def _plan(engine: Engine, patron_id: int) -> list[str]:
    """PostgreSQL's plan (EXPLAIN ANALYZE, BUFFERS) of the query patron_history sends."""
    query = (
        select(Interaction)
        .where(Interaction.patron_id == patron_id)
        .order_by(Interaction.occurred_at.desc(), Interaction.id.desc())
        .limit(LIMIT)
    )
    compiled = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        return [str(row[0]) for row in connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {compiled}"))]


def _measure(url: str, *, patrons: int, queries: int) -> list[Result]:
    upgrade(url=url)
    engine = make_engine(url)
    try:
        with Timer() as load:
            ids = fill(engine, patrons=patrons, per_patron=PER_PATRON)
        with Timer() as analyze:
            vacuum_analyze(engine)
        rng = random.Random(5)
        make_session = session_factory(engine)
        timings: list[float] = []
        for number in range(WARMUP + queries):
            patron_id = rng.choice(ids)
            with make_session() as session:
                session.connection()  # check a connection out of the pool first: only the query is timed
                with Timer() as query:
                    rows = patron_history(session=session, patron_id=patron_id, limit=LIMIT)
            if len(rows) != LIMIT:
                raise RuntimeError(f"patron {patron_id} has {len(rows)} interactions, expected {LIMIT}")
            if number >= WARMUP:
                timings.append(query.elapsed * 1000)
        plan = _plan(engine, rng.choice(ids))
    finally:
        engine.dispose()
    params: dict[str, Any] = {
        "interaction_rows": patrons * PER_PATRON,
        "patrons": patrons,
        "interactions_per_patron": PER_PATRON,
        "limit": LIMIT,
        "queries": queries,
        "warmup_queries": WARMUP,
        "p50_ms": round(percentile(timings, 50), 3),
        "p95_ms": round(percentile(timings, 95), 3),
        "mean_ms": round(statistics.fmean(timings), 3),
        "max_ms": round(max(timings), 3),
        "includes": "patron_history in an open session (ORM objects built); not the pool checkout",
        "fill_seconds": round(load.elapsed, 2),
        "fill_method": "COPY via psycopg2 copy_expert, one chunk per round of every patron's next message",
        "vacuum_analyze_seconds": round(analyze.elapsed, 2),
        "plan": plan,
        "server": postgres_server(),
    }
    return [
        Result(
            name=name,
            database="postgresql",
            value=params[f"{name.rsplit('_', 1)[1]}_ms"],
            unit=unit,
            target=target,
            comparison=comparison,
            params=params,
        )
        for name, unit, target, comparison in NAMES
    ]


def run(*, quick: bool) -> list[Result]:
    patrons = 500 if quick else 10_000
    reason = postgres_unavailable()
    if reason:
        return skipped(NAMES, "postgresql", reason, {"interaction_rows": patrons * PER_PATRON})
    with postgres_schema("history") as url:
        return _measure(url, patrons=patrons, queries=QUERIES)
