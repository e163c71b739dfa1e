"""A campaign to thousands of Telegram patrons made with bulk inserts, and real `patronbot` processes that
send it against the fake Bot API: shared by the crash tests and the campaign benchmarks."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import String, cast, func, insert, literal, select, text
from sqlalchemy.engine import Engine

from bot.crm.database import session_scope
from bot.crm.models import (
    Campaign,
    ChannelIdentity,
    Consent,
    Conversation,
    Delivery,
    OutboxMessage,
    Patron,
    Segment,
    SegmentMembership,
    UTCDateTime,
    utcnow,
)
from bot.settings import PROJECT_ROOT

TOKEN = "565656:MASS-token"
# Chat ids are patron ids plus this (distinct, positive: private chats).
CHAT_BASE = 1_000_000
# Patrons are inserted this many at a time.
CHUNK = 5_000


def make_audience(engine: Engine, *, patrons: int, name: str = "mass") -> int:
    """`patrons` patrons on Telegram with follow_up consent, each with a conversation, in a hand-made
    segment (start_run keeps it as it is); returns the segment's id. Bulk inserts: 100,000 in seconds."""
    now = utcnow()
    seen = now - dt.timedelta(hours=1)
    with session_scope(engine) as session:
        first = int(session.execute(select(func.coalesce(func.max(Patron.id), 0))).scalar_one()) + 1
        for start in range(0, patrons, CHUNK):
            rows = [
                {
                    "display_name": f"{name}-{n}",
                    "language": "zh" if n % 3 == 0 else "en",
                    "reachable": True,
                    "created_at": now,
                    "last_seen_at": seen,
                }
                for n in range(start, min(start + CHUNK, patrons))
            ]
            session.execute(insert(Patron), rows)
        segment = Segment(name=f"{name}-{now.timestamp()}", definition=None, created_at=now)
        session.add(segment)
        session.flush()
        segment_id = int(segment.id)
        ours = select(Patron.id).where(Patron.id >= first)
        chat = cast(Patron.id + CHAT_BASE, String)
        session.execute(
            insert(ChannelIdentity).from_select(
                ["patron_id", "channel", "external_id", "source", "created_at"],
                select(Patron.id, literal("telegram"), chat, literal("mass"), _at(now)).where(
                    Patron.id >= first
                ),
            )
        )
        session.execute(
            insert(Conversation).from_select(
                ["patron_id", "channel", "rasa_sender_id", "status", "started_at", "last_message_at"],
                select(
                    Patron.id,
                    literal("telegram"),
                    literal("telegram:") + chat,
                    literal("open"),
                    _at(seen),
                    _at(seen),
                ).where(Patron.id >= first),
            )
        )
        session.execute(
            insert(Consent).from_select(
                ["patron_id", "purpose", "granted", "channel", "recorded_at"],
                select(Patron.id, literal("follow_up"), literal(True), literal("telegram"), _at(seen)).where(
                    Patron.id >= first
                ),
            )
        )
        session.execute(
            insert(SegmentMembership).from_select(
                ["segment_id", "patron_id", "added_at"],
                select(literal(segment_id), ours.subquery().c.id, _at(now)),
            )
        )
        segment.member_count = patrons
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return segment_id


def _at(when: dt.datetime) -> Any:
    return literal(when, UTCDateTime())


def make_campaign(
    engine: Engine, *, segment_id: int, name: str = "mass", schedule: dict[str, object] | None = None
) -> int:
    """A running announcement campaign to the segment (follow_up consent, a message per language)."""
    with session_scope(engine) as session:
        campaign = Campaign(
            name=f"{name}-{utcnow().timestamp()}",
            segment_id=segment_id,
            purpose="follow_up",
            message={
                "en": "Hello {display_name}, the workshop is on Monday.",
                "zh": "{display_name}您好，周一有讲座。",
            },
            schedule=schedule,
            status="scheduled" if schedule else "running",
        )
        session.add(campaign)
        session.flush()
        return int(campaign.id)


@dataclass(frozen=True)
class Outcome:
    """Where a campaign's deliveries stand: by delivery state and outbox status."""

    deliveries: int
    states: Mapping[tuple[str, str | None], int]

    def count(self, state: str, status: str | None = None) -> int:
        return sum(n for (s, o), n in self.states.items() if s == state and (status is None or o == status))

    @property
    def settled(self) -> bool:
        """Every delivery queued and sent or given up (none pending, none waiting in the outbox)."""
        done = sum(n for (s, o), n in self.states.items() if s == "queued" and o not in (None, "pending"))
        return self.deliveries > 0 and done == self.deliveries


def outcome(engine: Engine, campaign_id: int) -> Outcome:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Delivery.state, OutboxMessage.status, func.count())
            .outerjoin(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.state, OutboxMessage.status)
        ).all()
    states = {(str(state), status): int(n) for state, status, n in rows}
    return Outcome(deliveries=sum(states.values()), states=states)


def chats_by_status(engine: Engine, campaign_id: int) -> dict[str, set[int]]:
    """The chat ids of the campaign's outbox messages, by outbox status."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(OutboxMessage.status, OutboxMessage.recipient)
            .join(Delivery, Delivery.outbox_id == OutboxMessage.id)
            .where(Delivery.campaign_id == campaign_id)
        ).all()
    found: dict[str, set[int]] = {}
    for status, recipient in rows:
        found.setdefault(str(status), set()).add(int(str(recipient).removeprefix("telegram:")))
    return found


def duplicates(received: Mapping[int | None, int]) -> int:
    """Messages beyond the first to the same chat."""
    return sum(count - 1 for count in received.values() if count > 1)


# --- processes -------------------------------------------------------------------------------------------


def patronbot_env(*, crm_url: str, api_url: str, rate: float, workdir: Path) -> dict[str, str]:
    """The environment of a `patronbot` process sending to the fake Bot API at `rate` (shared)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PATRONBOT_")}
    return env | {
        "PATRONBOT_DATABASE_URL": crm_url,
        "PATRONBOT_TELEGRAM_TOKEN": TOKEN,
        "PATRONBOT_TELEGRAM_API_URL": api_url,
        "PATRONBOT_TELEGRAM_RATE": str(rate),
        "PATRONBOT_QUIET_HOURS": "",
        "PATRONBOT_CAMPAIGN_CAP": "100",
        "PATRONBOT_DATA_DIR": str(workdir / "var"),
        "PATRONBOT_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(PROJECT_ROOT),
    }


class Processes:
    """`patronbot` commands run as processes (the scaled command line: tests/fakes/scaled_patronbot.py),
    killed and restarted at will, their output kept in `workdir`."""

    def __init__(self, *, env: Mapping[str, str], workdir: Path) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self._started = Counter[str]()

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        self._started[name] += 1
        log = (self.workdir / f"{name}-{self._started[name]}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.scaled_patronbot", *command],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.running[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL: no handler runs, no claim or lease is given back."""
        process = self.running[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def output(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-2000:] for path in sorted(self.workdir.glob("*.log"))
        )

    def run(self, *command: str, timeout: float = 60) -> str:
        """A one-off command's standard output (it must succeed)."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.fakes.scaled_patronbot", *command],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"patronbot {' '.join(command)} failed: {done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode()

    def report(self, campaign_id: int) -> dict[str, object]:
        """`patronbot campaign report ID --format json`."""
        found: dict[str, object] = json.loads(
            self.run("campaign", "report", str(campaign_id), "--format", "json")
        )
        return found


def wait_until(condition: Callable[[], bool], *, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()
