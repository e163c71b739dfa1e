"""Library staff who use the console, and the audit log of every read or change of patron data."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, CheckConstraint, Column, ForeignKey, Index, String
from sqlalchemy.orm import Mapped

from bot.crm.models.base import Base, BigId, UTCDateTime, utcnow

STAFF_ROLES = ("librarian", "outreach", "admin")
AUDIT_ACTIONS = ("read", "update", "export", "erase", "consent")


class StaffUser(Base):
    """A librarian, outreach officer or administrator."""

    __tablename__ = "staff_user"
    __table_args__ = (
        CheckConstraint("role IN ('librarian', 'outreach', 'admin')", name="role"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    username = Column(String(100), nullable=False, unique=True)
    display_name = Column(String(200), nullable=True)
    role = Column(String(20), nullable=False, default="librarian")
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)


class AuditLog(Base):
    """Who read or changed which patron's data, when and why. Holds no patron data itself."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("action IN ('read', 'update', 'export', 'erase', 'consent')", name="action"),
        Index("ix_audit_log_patron_id_at", "patron_id", "at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    # None for the system or for an operator's command line (then `actor` names it).
    staff_user_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    actor = Column(String(100), nullable=False)
    action = Column(String(12), nullable=False)
    patron_id = Column(BigId(), ForeignKey("patron.id", ondelete="SET NULL"), nullable=True)
    reason = Column(String(500), nullable=False)
    detail = Column(JSON, nullable=True)
    at = Column(UTCDateTime, nullable=False, default=utcnow)
