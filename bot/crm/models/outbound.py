"""The outbox: messages to patrons that no Rasa turn produced (staff replies, later campaigns)."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow


class OutboxMessage(Base):
    """One message for a patron, kept until its channel delivers it (or the patron's client fetches it)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_channel_recipient_delivered_at", "channel", "recipient", "delivered_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    channel = Column(String(32), nullable=False)
    # The Rasa sender id of the conversation it belongs to ("rest:abc").
    recipient = Column(String(255), nullable=False)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=True, index=True)
    text = Column(Text, nullable=False)
    produced_by = Column(String(100), nullable=False)  # "staff:<username>", or the service that sent it
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    delivered_at = Column(UTCDateTime, nullable=True)
