"""Outreach: segments and personas of patrons, campaigns with their runs, and the outbox of deliveries."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

# pending: waiting for its time and the patron's say; queued: checked and handed to the outbox (its
# outbox row says what came of it); skipped: not sent, by rule (`reason`); cancelled: the campaign was.
DELIVERY_STATES = ("pending", "queued", "sent", "failed", "cancelled", "skipped")
SKIP_REASONS = (
    "no_consent",
    "opted_out",
    "paused",
    "quiet_hours",
    "cap",
    "unreachable",
    "window_closed",
    "no_channel",
    "erased",
)
CAMPAIGN_STATUSES = ("draft", "scheduled", "running", "paused", "done", "cancelled")
CAMPAIGN_KINDS = ("announcement", "question")
RUN_STATUSES = ("filling", "filled", "missed", "cancelled")
# The events a triggered campaign can follow, N days after.
TRIGGER_EVENTS = ("first_conversation", "low_rating", "escalation_resolved", "suggestion_answered")


class Segment(Base):
    """A named group of patrons, by rule (attributes, behaviour, consent, interests) or by hand."""

    __tablename__ = "segment"

    id: Mapped[int] = Column(BigId(), primary_key=True)
    name = Column(String(100), nullable=False, unique=True)
    description = Column(Text, nullable=True)
    definition = Column(JSON(none_as_null=True), nullable=True)  # the rule; None for a hand-made segment
    created_by_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime, nullable=True)
    # When segment_membership was last computed from the rule, and how many it held then.
    refreshed_at = Column(UTCDateTime, nullable=True)
    member_count = Column(Integer, nullable=True)


class SegmentMembership(Base):
    """A patron in a segment."""

    __tablename__ = "segment_membership"

    segment_id: Mapped[int] = Column(BigId(), ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    patron_id: Mapped[int] = Column(
        BigId(), ForeignKey("patron.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at = Column(UTCDateTime, nullable=False, default=utcnow)


class Persona(Base):
    """A group of patrons who ask about the same things, found by clustering and named in both languages."""

    __tablename__ = "persona"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = Column(BigId(), primary_key=True)
    # Stable within one clustering ("p1", "p2", ...): what segment rules name.
    key = Column(String(40), nullable=False, unique=True)
    name_en = Column(String(200), nullable=False)
    name_zh = Column(String(200), nullable=False)
    topics = Column(JSON, nullable=False, default=list)  # the intents/topics it asks about most
    words = Column(JSON, nullable=False, default=dict)  # {"en": [...], "zh": [...]}
    size = Column(Integer, nullable=False, default=0)
    centroid = Column(LargeBinary, nullable=True)  # float32 vector, for placing new patrons
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class PatronInterest(Base):
    """A patron's interest as one vector: the mean of their questions' and stated interests' embeddings."""

    __tablename__ = "patron_interest"

    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), primary_key=True)
    vector = Column(LargeBinary, nullable=False)  # float32, L2-normalised
    dims = Column(Integer, nullable=False)
    model = Column(String(200), nullable=False)  # the encoder it came from: vectors of two models never mix
    messages = Column(Integer, nullable=False, default=0)  # how many texts the mean is over
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow)


class Campaign(Base):
    """A message to a segment, for a consent purpose, in each language, sent at a time, on a cron
    schedule, or N days after an event."""

    __tablename__ = "campaign"
    __table_args__ = (
        CheckConstraint(
            "status IN ('draft', 'scheduled', 'running', 'paused', 'done', 'cancelled')", name="status"
        ),
        CheckConstraint("kind IN ('announcement', 'question')", name="kind"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    name = Column(String(200), nullable=False, unique=True)
    segment_id = Column(BigId(), ForeignKey("segment.id", ondelete="RESTRICT"), nullable=True)
    purpose = Column(String(20), nullable=False, default="follow_up")  # the consent it needs
    message = Column(JSON, nullable=False)  # {"zh": "...", "en": "..."}
    # announcement: sent as written; question: asked through Rasa, the answer recorded against it.
    kind = Column(String(16), nullable=False, default="announcement", server_default="announcement")
    # What a question asks (csat, nps, helpful, open): how the patron's answer is recorded.
    asks = Column(String(16), nullable=True)
    buttons = Column(JSON, nullable=True)  # [{"title": {"en":..,"zh":..}, "payload": ".."}]
    # {"at": iso} | {"cron": "0 9 * * MON"} | {"after": {"event": .., "days": ..}}
    schedule = Column(JSON, nullable=True)
    trigger_event = Column(String(40), nullable=True)
    trigger_days = Column(Float, nullable=True)
    status = Column(String(12), nullable=False, default="draft")
    scheduled_at = Column(UTCDateTime, nullable=True)
    created_by_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    updated_at = Column(UTCDateTime, nullable=True)


class CampaignRun(Base):
    """One run of a campaign (its one time, one cron firing, or one day's triggered patrons): made once."""

    __tablename__ = "campaign_run"
    __table_args__ = (
        UniqueConstraint("campaign_id", "occasion"),
        CheckConstraint("status IN ('filling', 'filled', 'missed', 'cancelled')", name="status"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    campaign_id: Mapped[int] = Column(BigId(), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    # What makes the run itself: the time it was due ("2027-03-01T01:00:00+00:00"), or "manual:<n>".
    occasion = Column(String(100), nullable=False)
    due_at = Column(UTCDateTime, nullable=False)
    status = Column(String(12), nullable=False, default="filling")
    filled = Column(Integer, nullable=False, default=0)
    started_at = Column(UTCDateTime, nullable=False, default=utcnow)
    finished_at = Column(UTCDateTime, nullable=True)


class Delivery(Base):
    """The campaign outbox: one row per campaign, patron and occasion, moved from pending to queued
    (checked and handed to the outbox), skipped (with its reason) or cancelled."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("campaign_id", "patron_id", "occasion"),
        CheckConstraint(
            "state IN ('pending', 'queued', 'sent', 'failed', 'cancelled', 'skipped')", name="state"
        ),
        Index("ix_delivery_state_scheduled_at", "state", "scheduled_at"),
        Index("ix_delivery_patron_id_queued_at", "patron_id", "queued_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    campaign_id: Mapped[int] = Column(BigId(), ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False)
    run_id = Column(BigId(), ForeignKey("campaign_run.id", ondelete="SET NULL"), nullable=True, index=True)
    # "" for a one-off or cron run's patrons; the event for a triggered one ("low_rating:42").
    occasion = Column(String(100), nullable=False, default="", server_default="")
    # Kept without the patron after erasure, so a campaign's figures stay true.
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True)
    channel = Column(String(32), nullable=True)
    state = Column(String(12), nullable=False, default="pending")
    reason = Column(String(32), nullable=True)  # why it was skipped (SKIP_REASONS)
    attempts = Column(Integer, nullable=False, default=0)
    last_error = Column(String(500), nullable=True)
    scheduled_at = Column(UTCDateTime, nullable=False, default=utcnow)
    claimed_until = Column(UTCDateTime, nullable=True)
    queued_at = Column(UTCDateTime, nullable=True)
    outbox_id = Column(BigId(), ForeignKey("outbox.id", ondelete="SET NULL"), nullable=True, index=True)
    sent_at = Column(UTCDateTime, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class SchedulerLease(Base):
    """Who runs the scheduler of one job store: the leader holds the lease and renews it; a standby
    takes it over once it has expired."""

    __tablename__ = "scheduler_lease"

    name = Column(String(64), primary_key=True)
    holder = Column(String(128), nullable=False)
    acquired_at = Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = Column(UTCDateTime, nullable=False)


class SenderWorker(Base):
    """A process sending the outbox, seen recently: each channel's rate is shared among the live ones."""

    __tablename__ = "sender_worker"

    id = Column(String(128), primary_key=True)
    channels = Column(String(200), nullable=False)  # "telegram,wechat"
    seen_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
