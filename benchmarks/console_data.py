"""A staff console's CRM for the console benchmark: patrons on their channels, a year of bilingual
conversations, open escalations in the inbox, feedback, consents, suggestions and campaign deliveries,
loaded with PostgreSQL's COPY."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.engine import Engine

from benchmarks.conversations import TURNS, Turn, pick_language, plan_turns
from bot.crm.database import session_scope
from bot.crm.models import Campaign, Segment, utcnow
from console.accounts import add_staff

DAY = 86400.0
CHANNELS = ("telegram", "wechat", "webchat")
SOURCES = ("poster-2026-east", "orientation-week", "website", None)
PATRON_TYPES = ("undergraduate", "postgraduate", "faculty", "public")
INTERESTS = ("history", "ai", "law", "medicine", "fiction", "maps", "economics", "art")
PURPOSES = ("service", "follow_up", "profiling", "cross_border")
SLA_MINUTES = {"urgent": 15, "high": 30, "normal": 60, "low": 240}
HANDOFF = Turn(
    "human_handoff",
    "我要找馆员，人工服务",
    "I need to talk to a librarian, please",
    "请帮我转 librarian",
    "action_escalate",
    "好的，正在为您转接馆员，请稍候。",
    "Of course: a librarian will be with you shortly.",
)
LIBRARIAN = "bench.librarian"
PASSWORD = "bench console password"
CAMPAIGNS = 10
# The tables filled with explicit ids.
FILLED = ("patron", "conversation", "interaction", "escalation", "segment", "campaign")


@dataclass
class ConsoleCrm:
    """What was loaded: the patrons whose profiles are read, and the row counts."""

    long_patrons: list[int] = field(default_factory=list)
    typical_patrons: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _copy(cursor: Any, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> int:
    """Load rows with COPY (CSV: an unquoted empty field is NULL); the number of rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)", buffer)
    return count


def _at(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


@dataclass
class _Conversation:
    patron: int
    start: float
    turns: list[Turn]
    language: str
    status: str = "resolved"
    id: int = 0


class _Filler:
    """The rows of one CRM, made in time order with explicit ids."""

    def __init__(self, cursor: Any, rng: random.Random, now: float) -> None:
        self.cursor, self.rng, self.now = cursor, rng, now
        self.languages: dict[int, str] = {}
        self.senders: dict[int, tuple[str, str]] = {}  # patron -> (channel, Rasa sender id)
        self.conversations_of: dict[int, list[int]] = {}
        self.interactions = 0

    def patrons(self, count: int) -> None:
        rng, first = self.rng, self.now - 400 * DAY
        rows, identities = [], []
        for patron in range(1, count + 1):
            language = pick_language(rng)
            self.languages[patron] = language
            channels = rng.sample(CHANNELS, 2 if rng.random() < 0.2 else 1)
            for number, channel in enumerate(channels):
                external = f"{patron}{number}" if channel == "telegram" else f"bench-{patron}-{number}"
                identities.append((patron, channel, external, rng.choice(SOURCES), _at(first)))
            self.senders[patron] = (channels[0], f"{channels[0]}:{identities[-len(channels)][2]}")
            interests = '["' + '", "'.join(rng.sample(INTERESTS, rng.randint(0, 3))) + '"]'
            rows.append(
                (
                    patron,
                    f"Patron {patron}" if rng.random() < 0.3 else None,
                    "en" if language == "en" else "zh",
                    rng.choice(PATRON_TYPES),
                    interests if interests != '[""]' else "[]",
                    _at(first + rng.uniform(0, 30 * DAY)),
                    _at(self.now - rng.uniform(0, 30 * DAY)),
                )
            )
        columns = "id, display_name, language, patron_type, interests, created_at, last_seen_at"
        _copy(self.cursor, "patron", columns, rows)
        _copy(
            self.cursor, "channel_identity", "patron_id, channel, external_id, source, created_at", identities
        )

    def _rows(self, conversation: _Conversation) -> Iterator[tuple[Any, ...]]:
        channel, _ = self.senders[conversation.patron]
        language, at = conversation.language, conversation.start
        for turn in conversation.turns:
            at += self.rng.uniform(5, 60)
            for direction in ("in", "out"):
                self.interactions += 1
                incoming = direction == "in"
                yield (
                    self.interactions,
                    conversation.patron,
                    conversation.id,
                    channel,
                    direction,
                    turn.user_text(language) if incoming else turn.answer(language),
                    turn.intent if incoming else None,
                    round(self.rng.uniform(0.45, 0.99), 4) if incoming else None,
                    "en" if language == "en" else "zh",
                    None if incoming else turn.action,
                    f"{self.interactions:064x}",
                    _at(at if incoming else at + 0.3),
                    _at(at + 1),
                )

    def conversations(self, plans: list[_Conversation], chunk: int = 100_000) -> None:
        """Conversations and their interactions, in the order they started (as a live CRM fills)."""
        plans.sort(key=lambda plan: plan.start)
        offset = sum(len(ids) for ids in self.conversations_of.values())
        rows = []
        for number, plan in enumerate(plans, start=offset + 1):
            plan.id = number
            self.conversations_of.setdefault(plan.patron, []).append(number)
            channel, sender = self.senders[plan.patron]
            last = plan.start + 60 * len(plan.turns)
            resolved = _at(last) if plan.status == "resolved" else None
            rows.append(
                (number, plan.patron, channel, sender, plan.status, _at(plan.start), _at(last), resolved)
            )
        columns = "id, patron_id, channel, rasa_sender_id, status, started_at, last_message_at, resolved_at"
        _copy(self.cursor, "conversation", columns, rows)
        columns = (
            "id, patron_id, conversation_id, channel, direction, text, intent, confidence, language,"
            " produced_by, event_key, occurred_at, recorded_at"
        )
        batch: list[tuple[Any, ...]] = []
        for plan in plans:
            batch += self._rows(plan)
            if len(batch) >= chunk:
                _copy(self.cursor, "interaction", columns, batch)
                batch = []
        _copy(self.cursor, "interaction", columns, batch)

    def plan(self, patron: int, start: float, turns: int) -> _Conversation:
        language = self.languages[patron] if self.rng.random() < 0.8 else pick_language(self.rng)
        return _Conversation(patron, start, plan_turns(self.rng, turns), language)


def _staff(engine: Engine) -> list[int]:
    with session_scope(engine) as session:
        return [
            int(add_staff(session=session, username=name, role="librarian", password=PASSWORD).id)
            for name in (LIBRARIAN, "bench.wang", "bench.smith")
        ]


def _escalations(filler: _Filler, escalated: list[int], staff: list[int], resolved: int) -> int:
    """The open inbox (each on a recent conversation ending in a request for a librarian) and older
    resolved escalations."""
    rng, now = filler.rng, filler.now
    recent = []
    for patron in escalated:
        plan = filler.plan(patron, now - rng.uniform(300, 8 * 3600), rng.randint(1, 3))
        plan.turns.append(HANDOFF)
        plan.status = "with_staff"
        recent.append(plan)
    filler.conversations(recent)
    rows: list[tuple[Any, ...]] = []
    for number, plan in enumerate(recent, start=1):
        priority = rng.choices(("urgent", "high", "normal", "low"), weights=(5, 20, 60, 15))[0]
        created = plan.start + 60 * len(plan.turns)
        assigned = rng.random() < 0.25
        channel, sender = filler.senders[plan.patron]
        rows.append(
            (
                number, plan.patron, plan.id, channel, sender,
                rng.choice(("requested", "requested", "fallback", "complaint", "low_rating")), priority,
                "assigned" if assigned else "open", rng.choice(staff) if assigned else None,
                _at(created), _at(created + 60 * SLA_MINUTES[priority]), None, None,
            )
        )  # fmt: skip
    patrons = list(filler.conversations_of)
    for number in range(len(rows) + 1, len(rows) + resolved + 1):
        patron = rng.choice(patrons)
        created = now - rng.uniform(2 * DAY, 365 * DAY)
        channel, sender = filler.senders[patron]
        rows.append(
            (
                number, patron, rng.choice(filler.conversations_of[patron]), channel, sender, "requested",
                "normal", "resolved", rng.choice(staff), _at(created), _at(created + 3600),
                _at(created + rng.uniform(600, 7200)), "answered by phone",
            )
        )  # fmt: skip
    columns = (
        "id, patron_id, conversation_id, channel, rasa_sender_id, reason, priority, status, assignee_id,"
        " created_at, due_at, resolved_at, resolution_note"
    )
    return _copy(filler.cursor, "escalation", columns, rows)


def _records(filler: _Filler, long_patrons: list[int], engine: Engine) -> dict[str, int]:
    """Consents (with their history), feedback, suggestions, segments and campaign deliveries."""
    rng, now, cursor = filler.rng, filler.now, filler.cursor
    patrons = list(filler.senders)
    with engine.begin() as connection:
        for number, name in enumerate(("postgraduates", "night owls"), start=1):
            connection.execute(insert(Segment.__table__).values(id=number, name=name, created_at=utcnow()))
        connection.execute(
            insert(Campaign.__table__),
            [
                {"id": number, "name": f"bench campaign {number}", "segment_id": 1 + number % 2,
                 "purpose": "follow_up", "message": {"zh": "新数据库上线", "en": "A new database"},
                 "status": "done", "created_at": utcnow()}
                for number in range(1, CAMPAIGNS + 1)
            ],
        )  # fmt: skip
    consenting = set(rng.sample(patrons, len(patrons) * 2 // 5)) | set(long_patrons)
    consents = [
        (
            patron,
            purpose,
            rng.random() < 0.7,
            filler.senders[patron][0],
            "2026-03",
            _at(now - rng.uniform(0, 300 * DAY)),
        )
        for patron in consenting
        for purpose in rng.sample(
            PURPOSES, 8 if patron in long_patrons else rng.randint(1, 3), counts=[2] * 4
        )
    ]
    talked = list(filler.conversations_of)
    feedback = [
        (
            patron,
            rng.choice(filler.conversations_of[patron]),
            rng.randint(1, 5),
            rng.randint(0, 10),
            rng.choice(("自习室太吵了", "Great help, thanks", None, None)),
            rng.choice(TURNS).intent,
            _at(now - rng.uniform(0, 365 * DAY)),
        )
        for patron in rng.sample(talked, len(talked) // 4) + long_patrons * 20
    ]
    suggestions = [
        (
            patron,
            rng.choice(filler.conversations_of[patron]),
            "purchase",
            "请购买《三体》英文版 <b>please</b>",
            rng.choice(("new", "under_review", "accepted", "done")),
            _at(now - rng.uniform(0, 365 * DAY)),
        )
        for patron in rng.sample(talked, len(talked) // 20) + long_patrons * 5
    ]
    members = set(rng.sample(patrons, len(patrons) // 5)) | set(long_patrons)
    memberships = [(1 + patron % 2, patron, _at(now - 30 * DAY)) for patron in members]
    deliveries = [
        (campaign, patron, filler.senders[patron][0], "sent", 1, _at(sent), _at(sent), _at(sent), _at(sent))
        for patron in members
        for campaign in range(1 + patron % 2, CAMPAIGNS + 1, 2)
        for sent in (now - rng.uniform(0, 200 * DAY),)
    ]
    tables: dict[str, tuple[str, list[tuple[Any, ...]]]] = {
        "consent": ("patron_id, purpose, granted, channel, wording_version, recorded_at", consents),
        "feedback": ("patron_id, conversation_id, csat, nps, comment, topic, created_at", feedback),
        "suggestion": ("patron_id, conversation_id, kind, text, status, created_at", suggestions),
        "segment_membership": ("segment_id, patron_id, added_at", memberships),
        "delivery": (
            "campaign_id, patron_id, channel, state, attempts, scheduled_at, queued_at, sent_at, created_at",
            deliveries,
        ),
    }
    return {table: _copy(cursor, table, columns, rows) for table, (columns, rows) in tables.items()}


def fill_console_crm(
    engine: Engine,
    *,
    patrons: int,
    interactions: int,
    long_patrons: int,
    long_history: int,
    open_escalations: int,
    seed: int = 26,
) -> ConsoleCrm:
    """A CRM of `patrons` patrons and about `interactions` interactions, `long_patrons` of whom have
    `long_history` each, with `open_escalations` escalations in the inbox (the long patrons' among them)."""
    rng, now = random.Random(seed), utcnow().timestamp()
    staff = _staff(engine)
    loaded = ConsoleCrm(long_patrons=list(range(1, long_patrons + 1)))
    escalated = loaded.long_patrons + rng.sample(
        range(long_patrons + 1, patrons + 1), open_escalations - long_patrons
    )
    raw = engine.raw_connection()
    try:
        filler = _Filler(raw.cursor(), rng, now)
        filler.patrons(patrons)
        first, last = now - 365 * DAY, now - DAY
        plans = []
        for patron in loaded.long_patrons:  # five turns a conversation: long_history / 10 of them
            plans += [filler.plan(patron, rng.uniform(first, last), 5) for _ in range(long_history // 10)]
        budget = interactions - long_patrons * long_history - 8 * open_escalations
        while budget > 0:
            plan = filler.plan(
                rng.randint(long_patrons + 1, patrons), rng.uniform(first, last), rng.randint(3, 7)
            )
            plans.append(plan)
            budget -= 2 * len(plan.turns)
        filler.conversations(plans)
        escalations = _escalations(filler, escalated, staff, resolved=max(open_escalations, patrons // 30))
        counts = _records(filler, loaded.long_patrons, engine)
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as connection:  # the next rows the console writes take the next ids
        for table in FILLED:
            connection.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
            )
    typical = [patron for patron in escalated if patron not in loaded.long_patrons]
    loaded.typical_patrons = typical[:50] + rng.sample(
        [patron for patron in filler.conversations_of if patron > long_patrons], 50
    )
    loaded.counts = counts | {
        "patron": patrons,
        "conversation": sum(len(ids) for ids in filler.conversations_of.values()),
        "interaction": filler.interactions,
        "escalation": escalations,
        "open_escalations": open_escalations,
    }
    return loaded
