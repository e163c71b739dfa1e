"""Patrons, the channels they use and where they came from, and the consents they gave."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, CheckConstraint, Column, ForeignKey, Index, String, UniqueConstraint, true
from sqlalchemy.orm import Mapped, relationship

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

PATRON_TYPES = ("undergraduate", "postgraduate", "faculty", "staff", "public")
CONSENT_PURPOSES = ("service", "follow_up", "profiling", "cross_border")


class Patron(Base):
    """A person the library talks to, known only by what they chose to tell."""

    __tablename__ = "patron"
    __table_args__ = (
        CheckConstraint(
            "patron_type IS NULL OR patron_type IN ('undergraduate', 'postgraduate', 'faculty', 'staff', 'public')",
            name="patron_type",
        ),
        # Ids are quoted by staff and in exports: SQLite must never hand an erased patron's id to another.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    display_name = Column(String(200), nullable=True)
    language = Column(String(8), nullable=True)
    patron_type = Column(String(20), nullable=True)
    interests = Column(JSON, nullable=False, default=list, server_default="[]")
    time_zone = Column(String(64), nullable=True)
    # False once a channel reports the patron cannot be reached (blocked the bot, left the channel).
    reachable = Column(Boolean, nullable=False, default=True, server_default=true())
    # Campaign messages held until then ("pause" / "暂停推送"); the bot still answers.
    paused_until = Column(UTCDateTime, nullable=True)
    persona_id = Column(BigId(), ForeignKey("persona.id", ondelete="SET NULL"), nullable=True, index=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)

    identities: Mapped[list[ChannelIdentity]] = relationship(
        "ChannelIdentity", back_populates="patron", cascade="all, delete-orphan", passive_deletes=True
    )


class ChannelIdentity(Base):
    """A patron on one channel: the channel's own id for them, and how they first arrived (their source)."""

    __tablename__ = "channel_identity"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False, index=True)
    channel = Column(String(32), nullable=False)
    external_id = Column(String(255), nullable=False)
    # The deep-link payload, QR code or campaign the patron first came through ("poster-2026-east").
    source = Column(String(200), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    patron: Mapped[Patron] = relationship("Patron", back_populates="identities")


class Consent(Base):
    """One consent decision. Never updated: the latest row per patron and purpose is in force."""

    __tablename__ = "consent"
    __table_args__ = (
        CheckConstraint(
            "purpose IN ('service', 'follow_up', 'profiling', 'cross_border')",
            name="purpose",
        ),
        Index("ix_consent_patron_id_purpose_recorded_at", "patron_id", "purpose", "recorded_at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False)
    purpose = Column(String(20), nullable=False)
    granted = Column(Boolean, nullable=False)
    channel = Column(String(32), nullable=True)
    # Which text of the consent question the patron answered (the privacy notice's version).
    wording_version = Column(String(40), nullable=True)
    recorded_at = Column(UTCDateTime, nullable=False, default=utcnow)
