"""Feedback insight for staff: CSAT and NPS over time, by topic and by channel (counts only, no patron)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.crm.models import Feedback


@dataclass(frozen=True)
class Score:
    """One group's ratings: CSAT (1-5) mean, NPS (-100..100), and the share of "did this help?" yes."""

    group: str
    csat: float | None
    csat_count: int
    nps: float | None
    nps_count: int
    helpful_share: float | None
    helpful_count: int


def _score(group: str, rows: list[Feedback]) -> Score:
    csats = [int(row.csat) for row in rows if row.csat is not None]
    npss = [int(row.nps) for row in rows if row.nps is not None]
    helps = [bool(row.helpful) for row in rows if row.helpful is not None]
    nps = None
    if npss:
        promoters = sum(1 for value in npss if value >= 9)
        detractors = sum(1 for value in npss if value <= 6)
        nps = round(100 * (promoters - detractors) / len(npss), 1)
    return Score(
        group=group,
        csat=round(sum(csats) / len(csats), 2) if csats else None,
        csat_count=len(csats),
        nps=nps,
        nps_count=len(npss),
        helpful_share=round(sum(helps) / len(helps), 3) if helps else None,
        helpful_count=len(helps),
    )


def _week(at: dt.datetime, zone: ZoneInfo) -> str:
    day = at.astimezone(zone).date()
    return (day - dt.timedelta(days=day.weekday())).isoformat()


def _channel(row: Feedback) -> str:
    sender = row.rasa_sender_id or ""
    return sender.split(":", 1)[0] if ":" in sender else "unknown"


GROUPINGS = ("week", "topic", "channel")


def feedback_scores(
    *, session: Session, by: str, zone: ZoneInfo, since: dt.datetime | None = None
) -> list[Score]:
    """Scores grouped `by` week (Monday, in `zone`; oldest first), topic or channel (most rated first)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    query = select(Feedback).where(
        (Feedback.csat.is_not(None)) | (Feedback.nps.is_not(None)) | (Feedback.helpful.is_not(None))
    )
    if since is not None:
        query = query.where(Feedback.created_at >= since)
    groups: dict[str, list[Feedback]] = defaultdict(list)
    for row in session.execute(query).scalars():
        key = (
            _week(row.created_at, zone)
            if by == "week"
            else (row.topic or "none")
            if by == "topic"
            else _channel(row)
        )
        groups[key].append(row)
    scores = [_score(key, rows) for key, rows in groups.items()]
    if by == "week":
        return sorted(scores, key=lambda score: score.group)
    return sorted(
        scores, key=lambda score: (-(score.csat_count + score.nps_count + score.helpful_count), score.group)
    )
