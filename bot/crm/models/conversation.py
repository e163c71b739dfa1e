"""Conversations and every message in them, plus the anonymous counts that outlive the messages."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

CONVERSATION_STATUSES = ("open", "pending_review", "with_staff", "resolved")


class Conversation(Base):
    """A session of messages with one patron on one channel (a Rasa conversation session)."""

    __tablename__ = "conversation"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'pending_review', 'with_staff', 'resolved')", name="status"),
        Index("ix_conversation_patron_id_started_at", "patron_id", "started_at"),
        Index("ix_conversation_status_last_message_at", "status", "last_message_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False)
    channel = Column(String(32), nullable=False)
    # Rasa's conversation id (CHANNEL:ID): where this conversation's tracker lives.
    rasa_sender_id = Column(String(255), nullable=False, index=True)
    status = Column(String(20), nullable=False, default="open")
    started_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_message_at = Column(UTCDateTime, nullable=False, default=utcnow)
    resolved_at = Column(UTCDateTime, nullable=True)


class Interaction(Base):
    """One message in or out, as the patron, the bot or a librarian said it."""

    __tablename__ = "interaction"
    __table_args__ = (
        CheckConstraint("direction IN ('in', 'out')", name="direction"),
        Index("ix_interaction_patron_id_occurred_at", "patron_id", "occurred_at"),
        Index("ix_interaction_occurred_at", "occurred_at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False)
    conversation_id = Column(BigId(), ForeignKey("conversation.id", ondelete="CASCADE"), nullable=True, index=True)
    channel = Column(String(32), nullable=False)
    direction = Column(String(3), nullable=False)  # "in" from the patron, "out" to the patron
    text = Column(Text, nullable=True)  # None once the retention period has purged it
    intent = Column(String(100), nullable=True)
    confidence = Column(Float, nullable=True)
    language = Column(String(8), nullable=True)
    produced_by = Column(String(100), nullable=True)  # the action, or "staff:<username>", behind an "out"
    # A digest of the source event: a redelivered event is recognised and not stored twice.
    event_key = Column(String(64), nullable=False, unique=True)
    occurred_at = Column(UTCDateTime, nullable=False)
    recorded_at = Column(UTCDateTime, nullable=False, default=utcnow)


class InteractionStat(Base):
    """Anonymous daily counts of interactions that were erased with their patron."""

    __tablename__ = "interaction_stat"

    day = Column(Date, primary_key=True)
    channel = Column(String(32), primary_key=True)
    direction = Column(String(3), primary_key=True)
    intent = Column(String(100), primary_key=True)  # "" where none
    language = Column(String(8), primary_key=True)  # "" where unknown
    count = Column(Integer, nullable=False, default=0)


class IngestCursor(Base):
    """How far the ingester has read an event source (a row id in Rasa's SQL event broker)."""

    __tablename__ = "ingest_cursor"

    source = Column(String(200), primary_key=True)
    position = Column(BigInteger, nullable=False, default=0)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)


class ErasedSender(Base):
    """A Rasa conversation id whose patron was erased, as a digest, and when: events of it from before
    then that reach the ingester late (still in a RabbitMQ queue, or in a batch it holds) are dropped,
    not written as a new patron. Kept as long as the retention period, after which no such event is left."""

    __tablename__ = "erased_sender"

    # HMAC-SHA256, with the installation's secret, of the sender id's SHA-256, hex (`sender_digest`)
    sender_digest = Column(String(64), primary_key=True)
    erased_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
