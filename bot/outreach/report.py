"""What a campaign achieved: deliveries by outcome, skips by reason, and what patrons did after it.

The ratings are those given in answer to the campaign's follow-up question (feedback.delivery_id names
one of its deliveries) and, for any campaign, those patrons gave within 7 days of its message.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, func, literal_column, select
from sqlalchemy.orm import Session

from bot.crm.models import Campaign, Consent, Delivery, DeliveryAttempt, Feedback, Interaction, OutboxMessage
from bot.outreach.questions import patron_wrote

# A patron's message, opt-out or rating this long after a campaign message counts as an answer to it.
AFTER = dt.timedelta(days=7)


class CampaignNotFoundError(LookupError):
    """No campaign has the id given."""


@dataclass
class CampaignReport:
    """The figures of `patronbot campaign report`."""

    id: int
    name: str
    status: str
    deliveries: int = 0
    queued: int = 0  # checked and handed to the outbox, not yet sent
    sent: int = 0
    failed: int = 0
    unknown_outcome: int = 0
    waiting: int = 0  # pending: not yet due, or waiting for the end of quiet hours
    cancelled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    replies: int = 0  # patrons who wrote to the library within 7 days of it
    opt_outs: int = 0  # patrons who withdrew the campaign's consent within 7 days of it
    # Answers to a follow-up question: the deliveries whose patron answered it (feedback.delivery_id).
    answers: int = 0
    # Ratings of the answers and of feedback given within 7 days: count and mean of csat and nps,
    # helpful yes / no, and comments.
    ratings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def campaign_report(*, session: Session, campaign_id: int) -> CampaignReport:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFoundError(f"no campaign {campaign_id}: `patronbot campaign list` lists them")
    report = CampaignReport(id=int(campaign.id), name=str(campaign.name), status=str(campaign.status))
    rows = session.execute(
        select(Delivery.state, Delivery.reason, OutboxMessage.status, func.count())
        .outerjoin(OutboxMessage, OutboxMessage.id == Delivery.outbox_id)
        .where(Delivery.campaign_id == campaign_id)
        .group_by(Delivery.state, Delivery.reason, OutboxMessage.status)
    ).all()
    skipped: dict[str, int] = {}
    for state, reason, outbox_status, count in rows:
        report.deliveries += count
        if state == "skipped":
            skipped[str(reason or "other")] = skipped.get(str(reason or "other"), 0) + count
        elif state == "pending":
            report.waiting += count
        elif state == "cancelled":
            report.cancelled += count
        elif outbox_status in (None, "pending"):
            report.queued += count
        elif outbox_status == "delivered":
            report.sent += count
        elif outbox_status == "unknown":
            report.unknown_outcome += count
        elif outbox_status == "failed":
            report.failed += count
    # Skipped by the channel itself when it came to sending (WeChat's window closed meanwhile).
    channel_skips = session.execute(
        select(DeliveryAttempt.reason, func.count())
        .join(Delivery, Delivery.outbox_id == DeliveryAttempt.outbox_id)
        .where(Delivery.campaign_id == campaign_id, DeliveryAttempt.outcome == "skipped")
        .group_by(DeliveryAttempt.reason)
    ).all()
    for reason, count in channel_skips:
        skipped[str(reason or "other")] = skipped.get(str(reason or "other"), 0) + count
    report.skipped = dict(sorted(skipped.items()))
    _after(session, campaign, report)
    return report


def _after(session: Session, campaign: Campaign, report: CampaignReport) -> None:
    """Replies, opt-outs and ratings of the patrons it reached, within AFTER of their message."""
    reached = (
        select(Delivery.patron_id, Delivery.queued_at)
        .where(
            Delivery.campaign_id == campaign.id, Delivery.state == "queued", Delivery.patron_id.is_not(None)
        )
        .subquery()
    )
    dialect = session.get_bind().dialect.name

    def within(column: Any) -> Any:
        if dialect == "sqlite":  # SQLite compares the stored text; the bound limit is computed per row
            return and_(
                column > reached.c.queued_at,
                func.julianday(column) - func.julianday(reached.c.queued_at) <= AFTER.days,
            )
        return and_(
            column > reached.c.queued_at,
            column <= reached.c.queued_at + literal_column(f"interval '{AFTER.days} days'"),
        )

    report.replies = int(
        session.execute(
            select(func.count(func.distinct(Interaction.patron_id)))
            .join(reached, reached.c.patron_id == Interaction.patron_id)
            .where(Interaction.direction == "in", patron_wrote(), within(Interaction.occurred_at))
        ).scalar_one()
    )
    report.opt_outs = int(
        session.execute(
            select(func.count(func.distinct(Consent.patron_id)))
            .join(reached, reached.c.patron_id == Consent.patron_id)
            .where(
                Consent.purpose == campaign.purpose, Consent.granted.is_(False), within(Consent.recorded_at)
            )
        ).scalar_one()
    )
    figures = (
        func.count(Feedback.csat),
        func.sum(Feedback.csat),
        func.count(Feedback.nps),
        func.sum(Feedback.nps),
        func.count(Feedback.helpful).filter(Feedback.helpful.is_(True)),
        func.count(Feedback.helpful).filter(Feedback.helpful.is_(False)),
        func.count(Feedback.comment),
    )
    answered = session.execute(
        select(*figures, func.count(func.distinct(Feedback.delivery_id)))
        .join(Delivery, Delivery.id == Feedback.delivery_id)
        .where(Delivery.campaign_id == campaign.id)
    ).one()
    report.answers = int(answered[-1] or 0)
    # Feedback given after it that answers no question of its own (a rating after an announcement).
    after = session.execute(
        select(*figures)
        .join(reached, reached.c.patron_id == Feedback.patron_id)
        .where(Feedback.delivery_id.is_(None), within(Feedback.created_at))
    ).one()
    total = [int(a or 0) + int(b or 0) for a, b in zip(answered[:-1], after, strict=True)]
    csat_count, csat_sum, nps_count, nps_sum, helpful_yes, helpful_no, comments = total
    report.ratings = {
        "csat_count": csat_count,
        "csat_mean": round(csat_sum / csat_count, 2) if csat_count else None,
        "nps_count": nps_count,
        "nps_mean": round(nps_sum / nps_count, 2) if nps_count else None,
        "helpful_yes": helpful_yes,
        "helpful_no": helpful_no,
        "comments": comments,
    }
