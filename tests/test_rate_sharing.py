"""Telegram's rate shared among sender processes: each registers in sender_worker and beats, a dead one
stops counting once its beat is old, and two real `patronbot sender` processes together stay under
the fake Bot API's limit (no 429) while each message goes once."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from collections import Counter
from pathlib import Path

from sqlalchemy.engine import Engine

from bot.crm.models import utcnow
from bot.outbound.sharing import EXPIRES, Pace, RateShare, beat, forget, live_senders, share
from bot.outreach.runs import start_run
from bot.outreach.sender import SendRules, release_due
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.mass_campaign import (
    TOKEN,
    Processes,
    make_audience,
    make_campaign,
    outcome,
    patronbot_env,
    wait_until,
)

LIMIT = 30.0  # the fake's messages a second, as Telegram's
RATE = 29.6  # PATRONBOT_TELEGRAM_RATE: the bot's whole rate, shared
MESSAGES = 600  # three claims of 200: both senders send at once


def test_senders_count_while_they_beat_and_not_after(crm: Engine) -> None:
    now = utcnow()
    beat(engine=crm, worker="a", channels=["telegram"], now=now)
    beat(engine=crm, worker="b", channels=["telegram", "wechat"], now=now)
    assert live_senders(engine=crm, channel="telegram", now=now) == 2
    assert live_senders(engine=crm, channel="wechat", now=now) == 1
    later = now + dt.timedelta(seconds=EXPIRES - 1)
    beat(engine=crm, worker="a", channels=["telegram"], now=later)  # b died: it beats no more
    after = later + dt.timedelta(seconds=2)
    assert live_senders(engine=crm, channel="telegram", now=after) == 1
    forget(engine=crm, worker="a")
    assert live_senders(engine=crm, channel="telegram", now=after) == 0


def test_a_sender_paces_itself_at_its_share_of_the_rate(crm: Engine) -> None:
    beat(engine=crm, worker="other", channels=["telegram"])
    pace = Pace(RATE)
    sharing = RateShare(engine=crm, paces={"telegram": (pace, RATE)}, worker="this")
    assert sharing.refresh() == {"telegram": 2}
    assert pace.per_second == share(total=RATE, senders=2) == RATE / 2
    forget(engine=crm, worker="other")
    sharing.refresh()
    assert pace.per_second == RATE


def test_a_pace_spaces_its_slots_at_the_rate_it_has_when_each_is_taken() -> None:
    async def slots() -> list[float]:
        pace = Pace(50.0)
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def one() -> None:
            await pace.slot()
            times.append(loop.time())
            if len(times) == 3:
                pace.per_second = 10.0

        await asyncio.gather(*(one() for _ in range(5)))
        return times

    times = asyncio.run(slots())
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap >= 1 / 50 - 0.002 for gap in gaps[:2])
    assert all(gap >= 1 / 10 - 0.002 for gap in gaps[2:])  # the new rate from the next slot on


def test_two_senders_together_stay_under_telegrams_limit(crm: Engine, crm_url: str, tmp_path: Path) -> None:
    campaign_id = make_campaign(crm, segment_id=make_audience(crm, patrons=MESSAGES, name="share"))
    start_run(engine=crm, campaign_id=campaign_id, due_at=utcnow())
    rules = SendRules(quiet_hours=None, cap=100, rates={"telegram": 10_000.0})
    while release_due(engine=crm, rules=rules).queued:  # the whole campaign waits in the outbox
        pass
    live: list[int] = []
    with FakeTelegramAPI(token=TOKEN) as api:
        api.limit(per_second=LIMIT, per_chat_seconds=1.0)
        processes = Processes(
            env=patronbot_env(crm_url=crm_url, api_url=api.url, rate=RATE, workdir=tmp_path),
            workdir=tmp_path,
        )
        done = threading.Event()

        def watch() -> None:  # how many senders were alive, sampled while they sent
            while not done.wait(0.5):
                live.append(live_senders(engine=crm, channel="telegram"))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            processes.start("sender-a", "sender")
            processes.start("sender-b", "sender")
            settled = wait_until(lambda: outcome(crm, campaign_id).settled, timeout=120)
            assert settled, processes.output()
        finally:
            done.set()
            watcher.join()
            processes.stop_all()
        received = Counter(call.chat_id for call in api.sent())
        rejected = api.rejected_429
    assert max(live) == 2  # both were sending
    assert outcome(crm, campaign_id).count("queued", "delivered") == MESSAGES
    assert len(received) == MESSAGES
    assert set(received.values()) == {1}
    assert rejected == 0  # the fake answers 429 to anything beyond LIMIT a second
