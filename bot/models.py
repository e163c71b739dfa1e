"""The CRM's tables: patrons, the channels they use, and every interaction with them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, declarative_base, relationship
from sqlalchemy.types import TypeEngine

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Base = declarative_base(metadata=MetaData(naming_convention=NAMING_CONVENTION))


class BigId(TypeDecorator):  # type: ignore[type-arg]
    """A 64-bit id on PostgreSQL; INTEGER on SQLite, which only autoincrements an INTEGER PRIMARY KEY."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[int]:
        chosen: TypeEngine[int] = Integer() if dialect.name == "sqlite" else BigInteger()
        return chosen


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):  # type: ignore[type-arg]
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the CRM; pass a timezone-aware one")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Patron(Base):
    """A person the library talks to, known only by what they chose to tell."""

    __tablename__ = "patron"

    id: Mapped[int] = Column(BigId(), primary_key=True)
    display_name = Column(String(200), nullable=True)
    language = Column(String(8), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at = Column(UTCDateTime, nullable=False, default=utcnow)

    identities: Mapped[list[ChannelIdentity]] = relationship(
        "ChannelIdentity", back_populates="patron", cascade="all, delete-orphan"
    )


class ChannelIdentity(Base):
    """A patron on one channel: the channel's own id for them, and how they first arrived."""

    __tablename__ = "channel_identity"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(
        BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False, index=True
    )
    channel = Column(String(32), nullable=False)
    external_id = Column(String(255), nullable=False)
    source = Column(String(200), nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)

    patron: Mapped[Patron] = relationship("Patron", back_populates="identities")


class Interaction(Base):
    """One message in or out, as the patron or the bot said it."""

    __tablename__ = "interaction"
    __table_args__ = (Index("ix_interaction_patron_id_occurred_at", "patron_id", "occurred_at"),)

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id: Mapped[int] = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=False)
    channel = Column(String(32), nullable=False)
    direction = Column(String(3), nullable=False)  # "in" from the patron, "out" to the patron
    text = Column(Text, nullable=True)
    intent = Column(String(100), nullable=True)
    confidence = Column(Float, nullable=True)
    language = Column(String(8), nullable=True)
    produced_by = Column(String(100), nullable=True)  # the action or staff member behind an "out"
    # A digest of the source event: a redelivered event is recognised and not stored twice.
    event_key = Column(String(64), nullable=False, unique=True)
    occurred_at = Column(UTCDateTime, nullable=False)
    recorded_at = Column(UTCDateTime, nullable=False, default=utcnow)


class IngestCursor(Base):
    """How far the ingester has read an event source (a row id in Rasa's SQL event broker)."""

    __tablename__ = "ingest_cursor"

    source = Column(String(200), primary_key=True)
    position = Column(BigInteger, nullable=False, default=0)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow)
