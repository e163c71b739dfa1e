"""The staff console: server time of the inbox and of patron profiles (under 200 ms at p95) with
100,000 patrons, 1,000,000 interactions and 500 open escalations on PostgreSQL.

The real application (console.app.create_app) runs in-process behind Starlette's test client, signed
in as a librarian; each request's server time runs from the application's call to the last byte of its
response (the client's own time is left out). The SQL each route sends is timed through SQLAlchemy's
cursor events, and the slowest statement of each route is explained (EXPLAIN ANALYZE).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from benchmarks.common import (
    Result,
    Timer,
    percentile,
    postgres_schema,
    postgres_server,
    postgres_unavailable,
    skipped,
    vacuum_analyze,
)
from benchmarks.console_data import LIBRARIAN, PASSWORD, ConsoleCrm, fill_console_crm
from bot.crm.database import make_engine
from bot.crm.migrate import upgrade
from bot.settings import Settings
from console.app import create_app

TARGET_MS = 200.0
WARMUP = 20
ROUTES = (
    "inbox_page",
    "inbox_rows",
    "api_escalations",
    "patron_page_long",
    "patron_page_typical",
    "api_patron_long",
    "api_patron_typical",
)
NAMES: list[tuple[str, str, float, str]] = [
    (f"console_{route}_p95", "ms", TARGET_MS, "<") for route in ROUTES
]


class ServerClock:
    """An ASGI wrapper that times each request from the call to the end of its response body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()

        async def timed(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last_ms = (time.perf_counter() - began) * 1000

        await self.app(scope, receive, timed)


@dataclass
class StatementLog:
    """Every statement the console sends, timed, under the route being measured."""

    route: str = ""
    per_request: list[tuple[int, float]] = field(default_factory=list)  # (statements, ms) of each request
    shapes: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    slowest: dict[str, tuple[float, str, Any]] = field(default_factory=dict)
    _count: int = 0
    _ms: float = 0.0

    def attach(self, engine: Engine) -> None:
        def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            conn.info["bench_began"] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            took = (time.perf_counter() - conn.info.pop("bench_began", time.perf_counter())) * 1000
            if not self.route:
                return
            self._count += 1
            self._ms += took
            self.shapes[(self.route, statement)].append(took)
            if (
                statement.lstrip().upper().startswith("SELECT")
                and took > self.slowest.get(self.route, (0.0,))[0]
            ):
                self.slowest[self.route] = (took, statement, parameters)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    def request_done(self) -> None:
        self.per_request.append((self._count, self._ms))
        self._count, self._ms = 0, 0.0

    def top(self, route: str, count: int = 3) -> list[dict[str, Any]]:
        """The route's statements that cost the most in all, with how often they ran and their mean."""
        mine = [
            (sum(times), statement, times)
            for (name, statement), times in self.shapes.items()
            if name == route
        ]
        return [
            {"total_ms": round(total, 1), "calls": len(times), "mean_ms": round(total / len(times), 3),
             "max_ms": round(max(times), 3), "statement": " ".join(statement.split())[:400]}
            for total, statement, times in sorted(mine, key=lambda item: item[0], reverse=True)[:count]
        ]  # fmt: skip


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """PostgreSQL's plan (EXPLAIN ANALYZE, BUFFERS) of a statement the console sent."""
    raw = engine.raw_connection()
    try:
        cursor: Any = raw.cursor()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
        return [str(row[0]) for row in cursor.fetchall()]
    finally:
        raw.close()  # rolls back: an explained INSERT leaves nothing


def _paths(crm: ConsoleCrm) -> dict[str, Callable[[int], str]]:
    long, typical = crm.long_patrons, crm.typical_patrons
    return {
        "inbox_page": lambda _: "/",
        "inbox_rows": lambda _: "/inbox/rows",
        "api_escalations": lambda _: "/api/escalations",
        "patron_page_long": lambda n: f"/patrons/{long[n % len(long)]}",
        "patron_page_typical": lambda n: f"/patrons/{typical[n % len(typical)]}",
        "api_patron_long": lambda n: f"/api/patrons/{long[n % len(long)]}",
        "api_patron_typical": lambda n: f"/api/patrons/{typical[n % len(typical)]}",
    }


def _check(route: str, answer: Any, crm: ConsoleCrm) -> None:
    if answer.status_code != 200:
        raise RuntimeError(f"{route} answered {answer.status_code}: {answer.text[:300]}")
    if route == "api_escalations" and len(answer.json()["escalations"]) != crm.counts["open_escalations"]:
        raise RuntimeError(f"the inbox listed {len(answer.json()['escalations'])} escalations")


def _measure(url: str, sizes: dict[str, int], requests: int) -> list[Result]:
    upgrade(url=url)
    engine = make_engine(url, hide_parameters=True)
    try:
        with Timer() as fill:
            crm = fill_console_crm(engine, **sizes)
        with Timer() as analyze:
            vacuum_analyze(engine)
        log = StatementLog()
        log.attach(engine)
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        clock = ServerClock(create_app(settings=settings, engine=engine))
        timings: dict[str, list[float]] = {}
        statements: dict[str, list[tuple[int, float]]] = {}
        paths = _paths(crm)
        with TestClient(clock, base_url="http://console.test") as client:
            signed = client.post("/api/session", json={"username": LIBRARIAN, "password": PASSWORD})
            if signed.status_code != 200:
                raise RuntimeError(f"signing in answered {signed.status_code}: {signed.text[:300]}")
            for route in ROUTES:
                timings[route], log.per_request = [], []
                for number in range(WARMUP + requests):
                    log.route = route if number >= WARMUP else ""
                    answer = client.get(paths[route](number))
                    _check(route, answer, crm)
                    if number >= WARMUP:
                        timings[route].append(clock.last_ms)
                        log.request_done()
                statements[route] = log.per_request
            log.route = ""
        plans = {
            route: explain(engine, statement, parameters)
            for route, (_, statement, parameters) in log.slowest.items()
        }
    finally:
        engine.dispose()
    common: dict[str, Any] = {
        "rows": crm.counts,
        "long_history_interactions": sizes["long_history"],
        "long_patrons": len(crm.long_patrons),
        "requests": requests,
        "warmup_requests": WARMUP,
        "signed_in_as": "librarian",
        "includes": "server time: the ASGI application's call until its last response byte (not the client)",
        "fill_seconds": round(fill.elapsed, 1),
        "vacuum_analyze_seconds": round(analyze.elapsed, 1),
        "server": postgres_server(),
    }
    results = []
    for route, (name, unit, target, comparison) in zip(ROUTES, NAMES, strict=True):
        values = timings[route]
        params = common | {
            "path": paths[route](0),
            "p50_ms": round(percentile(values, 50), 2),
            "p95_ms": round(percentile(values, 95), 2),
            "max_ms": round(max(values), 2),
            "statements_per_request": round(statistics.fmean(count for count, _ in statements[route]), 1),
            "sql_ms_p50": round(percentile([ms for _, ms in statements[route]], 50), 2),
            "costliest_statements": log.top(route),
            "slowest_select_plan": plans.get(route, []),
        }
        results.append(Result(name, "postgresql", params["p95_ms"], unit, target, comparison, params))
    return results


def run(*, quick: bool) -> list[Result]:
    sizes = {
        "patrons": 10_000 if quick else 100_000,
        "interactions": 100_000 if quick else 1_000_000,
        "long_patrons": 5 if quick else 20,
        "long_history": 2_000,
        "open_escalations": 500,
    }
    requests = 50 if quick else 200
    reason = postgres_unavailable()
    if reason:
        return skipped(NAMES, "postgresql", reason, sizes)
    with postgres_schema("console") as url:
        return _measure(url, sizes, requests)


if __name__ == "__main__":
    import json
    import sys

    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str))
