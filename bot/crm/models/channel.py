"""What the messaging channels need kept: updates handled once, shared API tokens, what a turn recorded."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, String, Text

from bot.crm.models.base import Base, UTCDateTime, utcnow


class ChannelUpdate(Base):
    """One update a platform delivered (a Telegram update_id, a WeChat MsgId), recorded before it is
    answered 200, so a redelivery is recognised and an update not yet handled survives a restart."""

    __tablename__ = "channel_update"
    __table_args__ = (Index("ix_channel_update_handled_at_received_at", "handled_at", "received_at"),)

    channel = Column(String(32), primary_key=True)
    update_key = Column(String(128), primary_key=True)
    # The Rasa sender id it belongs to ("telegram:4242"), so that erasing the patron reaches it.
    sender = Column(String(255), nullable=True, index=True)
    # The update as it came, until it is handled; then cleared (the CRM keeps the conversation).
    body = Column(Text, nullable=True)
    received_at = Column(UTCDateTime, nullable=False, default=utcnow)
    # A process handling it holds it until then; after that another may take it over.
    claimed_until = Column(UTCDateTime, nullable=True)
    handled_at = Column(UTCDateTime, nullable=True)


class ChannelToken(Base):
    """An access token a platform issues (WeChat's), shared by every process: fetching a new one
    invalidates the one the others hold."""

    __tablename__ = "channel_token"

    name = Column(String(64), primary_key=True)
    value = Column(Text, nullable=False)
    expires_at = Column(UTCDateTime, nullable=False)
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow)


class TurnEffect(Base):
    """What a custom action recorded for one patron message (a rating, a report, a consent), so that a
    turn run again after a kill (same sender and message id) finds it instead of recording it twice."""

    __tablename__ = "turn_effect"

    sender = Column(String(255), primary_key=True)
    message_id = Column(String(128), primary_key=True)
    action = Column(String(64), primary_key=True)
    # What the first run produced (the row it wrote), handed to the run again.
    result = Column(BigInteger, nullable=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)
