"""Campaigns: filling a 100,000-patron run (under 5 s), the send-time check that queues deliveries into
the outbox, sending at Telegram's 30/s through `patronbot campaign run`, and 100,000 patrons at a
scaled cap of 300/s with two `patronbot sender` processes on PostgreSQL (under 6 minutes, no duplicate).

"Filling the outbox" is start_run: one INSERT ... SELECT makes the run's `delivery` rows (the issue's
outbox: one per campaign and patron). The patron's say is checked when a delivery is about to go
(release_due), which turns it into an `outbox` message a channel sender takes: that is measured as a
rate, since by design only LOOKAHEAD_SECONDS of sending wait in the outbox at a time.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import DATABASES, Result, Timer, crm_database, postgres_unavailable, skipped
from bot.crm.database import make_engine
from bot.crm.models import utcnow
from bot.outreach.runs import start_run
from bot.outreach.sender import SendRules, release_due
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.mass_campaign import (
    TOKEN,
    Processes,
    duplicates,
    make_audience,
    make_campaign,
    outcome,
    patronbot_env,
    wait_until,
)

FILL_TARGET_S = 5.0
RELEASE_TARGET = 300.0  # deliveries checked and queued a second: ahead of the scaled 300/s sending
SEND_LIMIT, SEND_RATE, SEND_TARGET = 30.0, 29.6, 28.5
WARM_UP_S = 2.0
SCALED_LIMIT, SCALED_RATE, SCALED_TARGET_S = 300.0, 296.0, 360.0
NAMES: list[tuple[str, str, float, str]] = [
    ("campaign_run_fill_100k", "s", FILL_TARGET_S, "<"),
    ("campaign_release_rate", "deliveries/s", RELEASE_TARGET, ">="),
    ("campaign_send_rate_at_30_per_s", "messages/s", SEND_TARGET, ">="),
    ("campaign_send_429s_steady_state", "429s", 1.0, "<"),
    ("campaign_100k_at_300_per_s_two_senders", "s", SCALED_TARGET_S, "<"),
    ("campaign_100k_at_300_per_s_duplicates", "duplicates", 1.0, "<"),
]


def _fill(database: str, patrons: int, released: int) -> list[Result]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-campaigns-") as work,
        crm_database(database, Path(work), "campaign_fill") as url,
    ):
        engine = make_engine(url)
        try:
            campaign_id = make_campaign(engine, segment_id=make_audience(engine, patrons=patrons))
            with Timer() as fill:
                start_run(engine=engine, campaign_id=campaign_id, due_at=utcnow())
            rules = SendRules(quiet_hours=None, cap=100, rates={"telegram": 1e9})
            with Timer() as release:
                queued = 0
                while queued < released:
                    queued += release_due(engine=engine, rules=rules, limit=100).queued
        finally:
            engine.dispose()
    params: dict[str, Any] = {"patrons": patrons, "released": queued, "release_batch": 100}
    return [
        Result(NAMES[0][0], database, round(fill.elapsed, 3), "s", FILL_TARGET_S, "<", params),
        Result(
            NAMES[1][0],
            database,
            round(queued / release.elapsed, 1),
            "deliveries/s",
            RELEASE_TARGET,
            ">=",
            params,
        ),
    ]


def _send_at_30(patrons: int) -> list[Result]:
    """`patronbot campaign run ID` (its own release and send loop) against the fake at 30/s."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-campaigns-") as work,
        crm_database("sqlite", Path(work), "campaign_send") as url,
        FakeTelegramAPI(token=TOKEN) as api,
    ):
        engine = make_engine(url)
        campaign_id = make_campaign(engine, segment_id=make_audience(engine, patrons=patrons))
        engine.dispose()
        api.limit(per_second=SEND_LIMIT, per_chat_seconds=1.0)
        processes = Processes(
            env=patronbot_env(crm_url=url, api_url=api.url, rate=SEND_RATE, workdir=Path(work)),
            workdir=Path(work),
        )
        processes.run("campaign", "run", str(campaign_id), "--quiet", timeout=patrons / 20 + 120)
        calls = api.calls_of("sendMessage")
    start = calls[0].at
    steady = [call for call in calls if call.status == 200 and call.at - start >= WARM_UP_S]
    rejected = [call for call in calls if call.status == 429 and call.at - start >= WARM_UP_S]
    rate = (len(steady) - 1) / (steady[-1].at - steady[0].at) if len(steady) > 1 else 0.0
    params = {"patrons": patrons, "limit_per_s": SEND_LIMIT, "rate_setting": SEND_RATE, "database": "sqlite"}
    return [
        Result(NAMES[2][0], "sqlite", round(rate, 3), "messages/s", SEND_TARGET, ">=", params),
        Result(NAMES[3][0], "sqlite", float(len(rejected)), "429s", 1.0, "<", params),
    ]


def _scaled(patrons: int) -> list[Result]:
    """A run filled, then a `patronbot scheduler` (its releaser) and two `patronbot sender` processes
    send it at a scaled cap; the time from the senders' start until every delivery is settled."""
    reason = postgres_unavailable()
    params: dict[str, Any] = {"patrons": patrons, "limit_per_s": SCALED_LIMIT, "rate_setting": SCALED_RATE}
    if reason:
        return skipped(NAMES[4:], "postgresql", reason, params)
    with (
        tempfile.TemporaryDirectory(prefix="bench-campaigns-") as work,
        crm_database("postgresql", Path(work), "campaign_scaled") as url,
        FakeTelegramAPI(token=TOKEN) as api,
    ):
        engine = make_engine(url)
        campaign_id = make_campaign(engine, segment_id=make_audience(engine, patrons=patrons))
        start_run(engine=engine, campaign_id=campaign_id, due_at=utcnow())
        api.limit(per_second=SCALED_LIMIT, per_chat_seconds=1.0)
        processes = Processes(
            env=patronbot_env(crm_url=url, api_url=api.url, rate=SCALED_RATE, workdir=Path(work)),
            workdir=Path(work),
        )
        try:
            began = time.monotonic()
            processes.start("scheduler", "scheduler")
            processes.start("sender-a", "sender")
            processes.start("sender-b", "sender")
            done = wait_until(
                lambda: outcome(engine, campaign_id).settled, timeout=patrons / 100 + 300, every=1
            )
            took = time.monotonic() - began
        finally:
            processes.stop_all()
        state = outcome(engine, campaign_id)
        engine.dispose()
        received = Counter(call.chat_id for call in api.sent())
        params |= {
            "settled": done,
            "sent": state.count("queued", "delivered"),
            "unknown": state.count("queued", "unknown"),
            "messages_at_fake": sum(received.values()),
            "429s": api.rejected_429,
        }
    return [
        Result(
            NAMES[4][0],
            "postgresql",
            round(took, 1) if done else None,
            "s",
            SCALED_TARGET_S,
            "<",
            params,
            error=None if done else "not every delivery was settled in time",
        ),
        Result(NAMES[5][0], "postgresql", float(duplicates(received)), "duplicates", 1.0, "<", params),
    ]


def run(*, quick: bool) -> list[Result]:
    patrons, released, sent, scaled = (
        (10_000, 2_000, 300, 10_000) if quick else (100_000, 10_000, 1_200, 100_000)
    )
    results: list[Result] = []
    for database in DATABASES:
        reason = postgres_unavailable() if database == "postgresql" else None
        if reason:
            results += skipped(NAMES[:2], database, reason, {"patrons": patrons})
            continue
        results += _fill(database, patrons, released)
    results += _send_at_30(sent)
    results += _scaled(scaled)
    return results


if __name__ == "__main__":
    import json
    import sys

    for result in run(quick="--quick" in sys.argv):
        print(json.dumps(result.as_dict(), indent=2))
