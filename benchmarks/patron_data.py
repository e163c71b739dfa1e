"""A realistic patron record for the privacy benchmark: a CRM full of patrons, and their Rasa events."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection, Engine

from benchmarks.common import T0, vacuum_analyze
from benchmarks.conversations import Turn, conversation_events, pick_language, plan_turns, utc
from bot.crm.models import (
    AuditLog,
    Base,
    Campaign,
    ChannelIdentity,
    Consent,
    Conversation,
    Delivery,
    Escalation,
    Feedback,
    Interaction,
    Patron,
    Segment,
    SegmentMembership,
    Suggestion,
)

PATRON = "rest:bench-big"
TURNS_PER_CONVERSATION = 5
DAY = 86400.0


class _Ids:
    """Explicit ids for the rows a fill inserts, one counter per table."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def __call__(self, table: str) -> int:
        self._next[table] = self._next.get(table, 0) + 1
        return self._next[table]


def _interaction_rows(
    rng: random.Random,
    *,
    ids: _Ids,
    patron_id: int,
    conversation_id: int,
    turns: list[Turn],
    language: str,
    start: float,
) -> Iterator[dict[str, Any]]:
    """The CRM rows of one conversation, as the ingester writes them (a message in, an answer out)."""
    at = start
    for turn in turns:
        at += rng.uniform(5, 60)
        shared = {"patron_id": patron_id, "conversation_id": conversation_id, "channel": "rest"}
        number = ids("interaction")
        yield shared | {
            "id": number,
            "direction": "in",
            "text": turn.user_text(language),
            "intent": turn.intent,
            "confidence": round(rng.uniform(0.55, 0.99), 4),
            "language": "en" if language == "en" else "zh",
            "produced_by": None,
            "event_key": f"{number:064x}",
            "occurred_at": utc(at),
            "recorded_at": utc(at + 1),
        }
        number = ids("interaction")
        yield shared | {
            "id": number,
            "direction": "out",
            "text": turn.answer(language),
            "intent": None,
            "confidence": None,
            "language": "en" if language == "en" else "zh",
            "produced_by": turn.action,
            "event_key": f"{number:064x}",
            "occurred_at": utc(at + 0.25),
            "recorded_at": utc(at + 1.25),
        }


def _add_patron(
    connection: Connection,
    rng: random.Random,
    *,
    ids: _Ids,
    external_ids: list[str],
    interactions: int,
    span_days: float,
) -> int:
    """A patron with channel identities and `interactions` interactions spread over `span_days`."""
    patron_id = ids("patron")
    language = pick_language(rng)
    first = T0 - span_days * DAY
    connection.execute(
        insert(Patron.__table__).values(
            id=patron_id,
            display_name=None,
            language="en" if language == "en" else "zh",
            patron_type=rng.choice(("undergraduate", "postgraduate", "faculty", "public")),
            interests=rng.sample(["history", "ai", "law", "medicine", "fiction", "maps"], 2),
            created_at=utc(first),
            last_seen_at=utc(T0),
        )
    )
    connection.execute(
        insert(ChannelIdentity.__table__),
        [
            {
                "id": ids("channel_identity"),
                "patron_id": patron_id,
                "channel": channel,
                "external_id": external,
                "source": "poster-2026-east",
                "created_at": utc(first),
            }
            for channel, _, external in (ref.partition(":") for ref in external_ids)
        ],
    )
    conversations = max(1, interactions // (2 * TURNS_PER_CONVERSATION))
    conversation_rows: list[dict[str, Any]] = []
    interaction_rows: list[dict[str, Any]] = []
    for number in range(conversations):
        start = first + span_days * DAY * number / conversations + rng.uniform(0, 3600)
        conversation_id = ids("conversation")
        # A conversation-level language: patrons who mostly write Chinese sometimes write English.
        spoken = language if rng.random() < 0.8 else pick_language(rng)
        rows = list(
            _interaction_rows(
                rng,
                ids=ids,
                patron_id=patron_id,
                conversation_id=conversation_id,
                turns=plan_turns(rng, TURNS_PER_CONVERSATION),
                language=spoken,
                start=start,
            )
        )
        interaction_rows += rows
        conversation_rows.append(
            {
                "id": conversation_id,
                "patron_id": patron_id,
                "channel": "rest",
                "rasa_sender_id": external_ids[0],
                "status": "resolved",
                "started_at": utc(start),
                "last_message_at": rows[-1]["occurred_at"],
                "resolved_at": rows[-1]["occurred_at"],
            }
        )
    connection.execute(insert(Conversation.__table__), conversation_rows)
    for begin in range(0, len(interaction_rows), 5000):
        connection.execute(insert(Interaction.__table__), interaction_rows[begin : begin + 5000])
    return patron_id


def _add_records(
    connection: Connection,
    rng: random.Random,
    *,
    ids: _Ids,
    patron_id: int,
    scale: int,
    campaign_ids: list[int],
) -> None:
    """Consents, feedback, suggestions, escalations, segment memberships, deliveries and audit rows."""
    conversations = list(
        connection.execute(select(Conversation.id).where(Conversation.patron_id == patron_id)).scalars()
    )
    at = utc(T0 - 30 * DAY)
    connection.execute(
        insert(Consent.__table__),
        [
            {
                "id": ids("consent"),
                "patron_id": patron_id,
                "purpose": purpose,
                "granted": rng.random() < 0.7,
                "channel": "rest",
                "wording_version": "2026-03",
                "recorded_at": at,
            }
            for purpose in ("service", "follow_up", "profiling", "cross_border")
        ],
    )
    feedback = [
        {
            "id": ids("feedback"),
            "patron_id": patron_id,
            "conversation_id": rng.choice(conversations),
            "csat": rng.randint(1, 5),
            "nps": rng.randint(0, 10),
            "comment": rng.choice(["自习室太吵了", "Great help, thanks", None]),
            "topic": rng.choice(["spaces", "hours", "staff"]),
            "created_at": at,
        }
        for _ in range(3 * scale)
    ]
    connection.execute(insert(Feedback.__table__), feedback)
    suggestions = [
        {
            "id": ids("suggestion"),
            "patron_id": patron_id,
            "conversation_id": rng.choice(conversations),
            "kind": "purchase",
            "text": "请购买《三体》英文版",
            "status": "new",
            "created_at": at,
        }
        for _ in range(scale)
    ]
    connection.execute(insert(Suggestion.__table__), suggestions)
    escalations = [
        {
            "id": ids("escalation"),
            "patron_id": patron_id,
            "conversation_id": rng.choice(conversations),
            "reason": "low_rating",
            "priority": "normal",
            "status": "resolved",
            "created_at": at,
            "due_at": at + dt.timedelta(days=1),
            "resolution_note": "called back",
        }
        for _ in range(max(1, scale // 2))
    ]
    connection.execute(insert(Escalation.__table__), escalations)
    connection.execute(
        insert(SegmentMembership.__table__), [{"segment_id": 1, "patron_id": patron_id, "added_at": at}]
    )
    connection.execute(
        insert(Delivery.__table__),
        [
            {
                "id": ids("delivery"),
                "campaign_id": campaign,
                "patron_id": patron_id,
                "channel": "rest",
                "state": "sent",
                "attempts": 1,
                "scheduled_at": at,
                "sent_at": at,
                "created_at": at,
            }
            for campaign in campaign_ids[:scale]
        ],
    )
    connection.execute(
        insert(AuditLog.__table__),
        [
            {
                "id": ids("audit_log"),
                "actor": "li.wei",
                "action": "read",
                "patron_id": patron_id,
                "reason": "answering an escalation",
                "at": at,
            }
            for _ in range(2 * scale)
        ],
    )


def fill_crm(engine: Engine, *, interactions: int, background: int, seed: int = 7) -> dict[str, int]:
    """The big patron (every table holds rows of theirs) among `background` ordinary patrons."""
    rng = random.Random(seed)
    ids = _Ids()
    with engine.begin() as connection:
        connection.execute(
            insert(Segment.__table__).values(id=ids("segment"), name="postgraduates", created_at=utc(T0))
        )
        campaign_ids = [ids("campaign") for _ in range(10)]
        connection.execute(
            insert(Campaign.__table__),
            [
                {
                    "id": campaign,
                    "name": f"campaign {campaign}",
                    "segment_id": 1,
                    "purpose": "follow_up",
                    "message": {"zh": "新数据库上线", "en": "A new database"},
                    "status": "done",
                    "created_at": utc(T0),
                }
                for campaign in campaign_ids
            ],
        )
        big = _add_patron(
            connection,
            rng,
            ids=ids,
            external_ids=[PATRON, "telegram:bench-big-tg"],
            interactions=interactions,
            span_days=730,
        )
        _add_records(connection, rng, ids=ids, patron_id=big, scale=10, campaign_ids=campaign_ids)
        for number in range(background):
            other = _add_patron(
                connection,
                rng,
                ids=ids,
                external_ids=[f"rest:bench-bg-{number}"],
                interactions=20,
                span_days=365,
            )
            if number % 3 == 0:
                _add_records(connection, rng, ids=ids, patron_id=other, scale=1, campaign_ids=campaign_ids)
        if engine.dialect.name == "postgresql":
            for table in Base.metadata.sorted_tables:
                if "id" in table.c and table.c.id.primary_key:
                    connection.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))"
                        )
                    )
    if engine.dialect.name == "postgresql":
        vacuum_analyze(engine)
    with engine.connect() as connection:
        total = connection.execute(select(func.count()).select_from(Interaction.__table__)).scalar_one()
    return {"patron_id": big, "interactions_in_table": int(total)}


def tracker_events(*, patron_events: int, background_senders: int, seed: int = 11) -> list[dict[str, Any]]:
    """The tracker store: `patron_events` events of the big patron and as many of other patrons."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []

    def sessions(sender: str, wanted: int, span_days: float) -> list[dict[str, Any]]:
        own: list[dict[str, Any]] = []
        while len(own) < wanted:
            start = T0 - span_days * DAY + rng.uniform(0, span_days * DAY)
            own += conversation_events(rng, sender=sender, start=start, turns=TURNS_PER_CONVERSATION)
        return own[:wanted]

    events += sessions(PATRON, patron_events, 730)
    for number in range(background_senders):
        events += sessions(f"rest:bench-bg-{number}", patron_events // max(1, background_senders), 365)
    events.sort(key=lambda event: float(event["timestamp"]))
    return events
