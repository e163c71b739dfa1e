"""What patrons tell the library about its service: ratings, suggestions, and escalations to staff.

These rows outlive an erased patron in anonymous form (patron and free text removed), so that
satisfaction and response-time figures stay true.
"""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

SUGGESTION_STATUSES = ("new", "under_review", "accepted", "declined", "done")
ESCALATION_REASONS = ("requested", "fallback", "complaint", "low_rating", "other")
ESCALATION_PRIORITIES = ("low", "normal", "high", "urgent")
ESCALATION_STATUSES = ("open", "assigned", "resolved", "cancelled")
# Escalations staff still have to answer.
ACTIVE_ESCALATION_STATUSES = ("open", "assigned")


class Feedback(Base):
    """A rating (CSAT 1-5, NPS 0-10, "did this help?") and an optional comment, on a conversation or topic."""

    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint("csat IS NULL OR (csat >= 1 AND csat <= 5)", name="csat_range"),
        CheckConstraint("nps IS NULL OR (nps >= 0 AND nps <= 10)", name="nps_range"),
        CheckConstraint(
            "csat IS NOT NULL OR nps IS NOT NULL OR helpful IS NOT NULL OR comment IS NOT NULL",
            name="not_empty",
        ),
        # The rows still waiting for their conversation (bot.crm.conversations.link_to_conversations).
        Index("ix_feedback_conversation_id_rasa_sender_id", "conversation_id", "rasa_sender_id"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True, index=True)
    conversation_id = Column(BigId(), ForeignKey("conversation.id", ondelete="SET NULL"), nullable=True)
    # The Rasa conversation it was given in: the ingester links the conversation row once it has made it.
    rasa_sender_id = Column(String(255), nullable=True, index=True)
    csat = Column(Integer, nullable=True)
    nps = Column(Integer, nullable=True)
    comment = Column(Text, nullable=True)
    topic = Column(String(40), nullable=True)
    helpful = Column(Boolean, nullable=True)  # a one-tap "did this help?" answer
    # The follow-up question this answers (a campaign's delivery), when it answers one.
    delivery_id = Column(BigId(), ForeignKey("delivery.id", ondelete="SET NULL"), nullable=True, index=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, index=True)


class Suggestion(Base):
    """A patron's idea for a service or a purchase request, and the library's answer (co-creation)."""

    __tablename__ = "suggestion"
    __table_args__ = (
        CheckConstraint("kind IN ('service', 'purchase', 'complaint')", name="kind"),
        CheckConstraint("status IN ('new', 'under_review', 'accepted', 'declined', 'done')", name="status"),
        Index("ix_suggestion_status_created_at", "status", "created_at"),
        # The rows still waiting for their conversation (bot.crm.conversations.link_to_conversations).
        Index("ix_suggestion_conversation_id_rasa_sender_id", "conversation_id", "rasa_sender_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True, index=True)
    conversation_id = Column(BigId(), ForeignKey("conversation.id", ondelete="SET NULL"), nullable=True)
    # The Rasa conversation it was given in: the ingester links the conversation row once it has made it.
    rasa_sender_id = Column(String(255), nullable=True, index=True)
    # The escalation that hands a complaint to staff (several complaints of one conversation share one).
    escalation_id = Column(
        BigId(), ForeignKey("escalation.id", ondelete="SET NULL"), nullable=True, index=True
    )
    kind = Column(String(20), nullable=False, default="service")
    text = Column(Text, nullable=True)
    topic = Column(String(40), nullable=True)
    status = Column(String(20), nullable=False, default="new")
    library_answer = Column(Text, nullable=True)
    answered_by_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    answered_at = Column(UTCDateTime, nullable=True)
    patron_notified_at = Column(UTCDateTime, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class Escalation(Base):
    """A conversation handed to staff: why, how urgent, who has it, and by when it is due."""

    __tablename__ = "escalation"
    __table_args__ = (
        CheckConstraint(
            "reason IN ('requested', 'fallback', 'complaint', 'low_rating', 'other')", name="reason"
        ),
        CheckConstraint("priority IN ('low', 'normal', 'high', 'urgent')", name="priority"),
        CheckConstraint("status IN ('open', 'assigned', 'resolved', 'cancelled')", name="status"),
        Index("ix_escalation_status_created_at", "status", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True, index=True)
    conversation_id = Column(BigId(), ForeignKey("conversation.id", ondelete="SET NULL"), nullable=True)
    # The conversation it came from, known before the ingester has created its conversation row.
    channel = Column(String(32), nullable=True)
    rasa_sender_id = Column(String(255), nullable=True, index=True)
    reason = Column(String(20), nullable=False)
    priority = Column(String(10), nullable=False, default="normal")
    status = Column(String(12), nullable=False, default="open")
    assignee_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True, index=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    due_at = Column(UTCDateTime, nullable=False)
    resolved_at = Column(UTCDateTime, nullable=True)
    resolution_note = Column(Text, nullable=True)
