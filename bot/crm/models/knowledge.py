"""Proposals for the knowledge base from the console: a librarian's answer to a patron, kept for review
until a person accepts it into the knowledge base (the bot never learns from patrons unreviewed)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

PROPOSAL_KINDS = ("alternative", "entry")
PROPOSAL_STATUSES = ("pending", "accepted", "rejected")


class KnowledgeProposal(Base):
    """A patron's question (and a librarian's answer) proposed as a new way of asking an existing entry
    (`alternative`) or as a new entry (`entry`). Quoting a patron, it goes when the patron is erased."""

    __tablename__ = "kb_proposal"
    __table_args__ = (
        CheckConstraint("kind IN ('alternative', 'entry')", name="kind"),
        CheckConstraint("status IN ('pending', 'accepted', 'rejected')", name="status"),
        CheckConstraint("lang IN ('zh', 'en')", name="lang"),
        CheckConstraint("kind = 'entry' OR entry_id IS NOT NULL", name="alternative_names_entry"),
        Index("ix_kb_proposal_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    kind = Column(String(12), nullable=False)
    entry_id = Column(String(64), nullable=True)  # the knowledge base entry's id (in the YAML file)
    lang = Column(String(2), nullable=False)
    question = Column(Text, nullable=False)
    answer = Column(Text, nullable=True)
    source = Column(String(100), nullable=True)  # where it came from, e.g. "escalation:12"
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="CASCADE"), nullable=True, index=True)
    proposed_by = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    status = Column(String(10), nullable=False, default="pending")
    reviewed_by = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    reviewed_at = Column(UTCDateTime, nullable=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
