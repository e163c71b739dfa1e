"""Crash safety of campaign sending: a 10,000-patron campaign sent by real `patronbot sender` processes
that are SIGKILLed at random moments and restarted (and the scheduler process that releases the
deliveries killed once too), against the fake Telegram Bot API. No patron is missed, and a patron
gets a second message only when a request was in flight at a kill, which is recorded as unknown.

On PostgreSQL two senders run at once (they claim rows with FOR UPDATE SKIP LOCKED and share the rate).
The fake's limit is raised to RATE a second, and the senders' PATRONBOT_TELEGRAM_RATE with it, so the
campaign takes seconds rather than Telegram's 6 minutes (tests/fakes/scaled_patronbot.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import Engine

from bot.crm.models import utcnow
from bot.outreach.runs import start_run
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.mass_campaign import (
    TOKEN,
    Processes,
    chats_by_status,
    duplicates,
    make_audience,
    make_campaign,
    outcome,
    patronbot_env,
    wait_until,
)

PATRONS = 10_000
RATE = 1_000.0  # the fake's limit a second; the senders share 96% of it
KILLS = 4
SEED = 25


def test_killed_senders_miss_no_patron_and_resend_only_unknown_outcomes(
    crm: Engine, crm_url: str, tmp_path: Path
) -> None:
    segment_id = make_audience(crm, patrons=PATRONS)
    campaign_id = make_campaign(crm, segment_id=segment_id)
    assert start_run(engine=crm, campaign_id=campaign_id, due_at=utcnow()) is not None
    senders = ["sender-a", "sender-b"] if crm.dialect.name == "postgresql" else ["sender-a"]
    chance = random.Random(SEED)
    with FakeTelegramAPI(token=TOKEN) as api:
        api.limit(per_second=RATE, per_chat_seconds=1.0)
        processes = Processes(
            env=patronbot_env(crm_url=crm_url, api_url=api.url, rate=RATE * 0.96, workdir=tmp_path),
            workdir=tmp_path,
        )
        try:
            processes.start("scheduler", "scheduler")  # its releaser hands due deliveries to the outbox
            for name in senders:
                processes.start(name, "sender")
            assert wait_until(lambda: len(api.sent()) > 200, timeout=60), processes.output()
            killed_while_sending = 0
            for kill in range(KILLS):
                time.sleep(chance.uniform(0.5, 2.5))
                victim = chance.choice(senders) if kill != 1 else "scheduler"
                before = len(api.sent())
                processes.kill(victim)
                killed_while_sending += int(0 < before < PATRONS)
                processes.start(victim, victim.split("-")[0])
            # Claims of killed senders run out (dispatcher LEASE, 15 s); then the others send the rest.
            settled = wait_until(lambda: outcome(crm, campaign_id).settled, timeout=240, every=0.5)
            assert settled, (outcome(crm, campaign_id).states, processes.output())
        finally:
            processes.stop_all()
        received = Counter(call.chat_id for call in api.sent())

    assert killed_while_sending >= KILLS - 1  # the kills fell while the campaign was being sent
    state = outcome(crm, campaign_id)
    assert state.deliveries == PATRONS
    by_status = chats_by_status(crm, campaign_id)
    delivered, unknown = by_status.get("delivered", set()), by_status.get("unknown", set())
    # No patron missed: every delivery was sent or its outcome is unknown (in flight at a kill).
    assert set(by_status) <= {"delivered", "unknown"}
    assert len(delivered) + len(unknown) == PATRONS
    # A patron recorded as sent got exactly one message; one with an unknown outcome none or one.
    assert all(received[chat] == 1 for chat in delivered)
    assert all(received[chat] <= 1 for chat in unknown)
    assert set(received) <= delivered | unknown  # nothing else was sent
    assert duplicates(received) <= len(unknown)
    # The report says the same.
    report = processes.report(campaign_id)
    assert report["deliveries"] == PATRONS
    assert report["sent"] == len(delivered)
    assert report["unknown_outcome"] == len(unknown)
    assert report["failed"] == 0
    assert report["queued"] == 0
