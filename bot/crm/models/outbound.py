"""The outbox: messages no Rasa turn produced (staff replies, campaigns), and each attempt to deliver them."""

from __future__ import annotations

from sqlalchemy import JSON, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

# pending: waiting to be sent (or fetched); delivered: the channel took it; skipped: not attempted, by
# rule (reason on its attempt: window_closed, unreachable); failed: refused for good (blocked);
# unknown: the request went out and no answer came, so it is not blindly sent again.
OUTBOX_STATUSES = ("pending", "delivered", "skipped", "failed", "unknown")
ATTEMPT_OUTCOMES = ("sent", "retry", "blocked", "unknown", "skipped", "failed")


class OutboxMessage(Base):
    """One message for a patron, kept until its channel delivers it (or the patron's client fetches it)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_channel_recipient_delivered_at", "channel", "recipient", "delivered_at"),
        Index("ix_outbox_status_channel", "status", "channel"),
        CheckConstraint(
            "status IN ('pending', 'delivered', 'skipped', 'failed', 'unknown')",
            name="status",
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    channel = Column(String(32), nullable=False)
    # The Rasa sender id of the conversation it belongs to ("rest:abc").
    recipient = Column(String(255), nullable=False)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=True, index=True)
    text = Column(Text, nullable=False)
    # Rasa buttons ([{"title": ..., "payload": ...}]) shown with the text, as each channel can.
    buttons = Column(JSON(none_as_null=True), nullable=True)
    produced_by = Column(String(100), nullable=False)  # "staff:<username>", or the service that sent it
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    delivered_at = Column(UTCDateTime, nullable=True)
    status = Column(String(16), nullable=False, default="pending", server_default="pending")
    attempts = Column(Integer, nullable=False, default=0, server_default="0")
    # Not sent before this (a channel asked to wait); a sender holds the row until claimed_until.
    next_attempt_at = Column(UTCDateTime, nullable=True)
    claimed_until = Column(UTCDateTime, nullable=True)
    # Set just before the request goes out: a row still in flight when its claim ran out was being
    # sent by a process that died, so its outcome is unknown and it is not sent again.
    in_flight_at = Column(UTCDateTime, nullable=True)


class DeliveryAttempt(Base):
    """One attempt to deliver an outbox message through its channel, and what came of it."""

    __tablename__ = "delivery_attempt"
    __table_args__ = (
        CheckConstraint(
            "outcome IN ('sent', 'retry', 'blocked', 'unknown', 'skipped', 'failed')",
            name="outcome",
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    outbox_id = Column(BigId(), ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False, index=True)
    channel = Column(String(32), nullable=False)
    attempted_at = Column(UTCDateTime, nullable=False, default=utcnow)
    outcome = Column(String(16), nullable=False)
    # Why, in a word or two (window_closed, http_429, timeout, blocked); never patron data.
    reason = Column(String(64), nullable=True)
