"""Outreach: patron segments, campaigns sent to them, and the outbox of one delivery per patron."""

from __future__ import annotations

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

DELIVERY_STATES = ("pending", "sent", "failed", "cancelled", "skipped")


class Segment(Base):
    """A named group of patrons, by rule (attributes, behaviour, consent, interests) or by hand."""

    __tablename__ = "segment"

    id: Mapped[int] = Column(BigId(), primary_key=True)
    name = Column(String(100), nullable=False, unique=True)
    description = Column(Text, nullable=True)
    definition = Column(JSON(none_as_null=True), nullable=True)  # the rule; None for a hand-made segment
    created_by_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class SegmentMembership(Base):
    """A patron in a segment."""

    __tablename__ = "segment_membership"

    segment_id: Mapped[int] = Column(BigId(), ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    patron_id: Mapped[int] = Column(
        BigId(), ForeignKey("patron.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at = Column(UTCDateTime, nullable=False, default=utcnow)


class Campaign(Base):
    """A message to a segment, for a consent purpose, in each language, sent from a given time."""

    __tablename__ = "campaign"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'scheduled', 'running', 'done', 'cancelled')", name="status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    name = Column(String(200), nullable=False)
    segment_id = Column(BigId(), ForeignKey("segment.id", ondelete="RESTRICT"), nullable=True)
    purpose = Column(String(20), nullable=False, default="follow_up")  # the consent it needs
    message = Column(JSON, nullable=False)  # {"zh": "...", "en": "..."}
    status = Column(String(12), nullable=False, default="draft")
    scheduled_at = Column(UTCDateTime, nullable=True)
    created_by_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class Delivery(Base):
    """The outbox: one row per campaign and patron, moved from pending to sent, failed, cancelled or skipped."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("campaign_id", "patron_id"),
        CheckConstraint("state IN ('pending', 'sent', 'failed', 'cancelled', 'skipped')", name="state"),
        Index("ix_delivery_state_scheduled_at", "state", "scheduled_at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    campaign_id: Mapped[int] = Column(BigId(), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    # Kept without the patron after erasure, so a campaign's figures stay true.
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True, index=True)
    channel = Column(String(32), nullable=True)
    state = Column(String(12), nullable=False, default="pending")
    attempts = Column(Integer, nullable=False, default=0)
    last_error = Column(String(500), nullable=True)
    scheduled_at = Column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = Column(UTCDateTime, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
