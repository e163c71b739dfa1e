"""Library staff who use the console, and the audit log of every read or change of patron data."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, CheckConstraint, Column, ForeignKey, Index, String, Text
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
    # An argon2 hash; None for a name the command line made (`--staff NAME`), which cannot sign in.
    password_hash = Column(String(255), nullable=True)
    # The console's language for this staff member ("zh" or "en"), remembered from their choice.
    language = Column(String(2), nullable=True)


class StaffSession(Base):
    """A signed-in console session: the browser holds the token, the CRM only its SHA-256."""

    __tablename__ = "staff_session"

    id: Mapped[int] = Column(BigId(), primary_key=True)
    token_hash = Column(String(64), nullable=False, unique=True)
    staff_user_id = Column(
        BigId(), ForeignKey("staff_user.id", ondelete="CASCADE"), nullable=False, index=True
    )
    csrf_token = Column(String(64), nullable=False)
    created_at = Column(UTCDateTime, nullable=False, default=utcnow)
    last_seen_at = Column(UTCDateTime, nullable=False, default=utcnow)
    expires_at = Column(UTCDateTime, nullable=False, index=True)


class LoginAttempt(Base):
    """One sign-in attempt, kept a day, so attempts are limited per account and per address in every
    console process."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_username_at", "username", "at"),
        Index("ix_login_attempt_address_at", "address", "at"),
    )

    id: Mapped[int] = Column(BigId(), primary_key=True)
    username = Column(String(100), nullable=False)
    address = Column(String(64), nullable=False)
    succeeded = Column(Boolean, nullable=False)
    at = Column(UTCDateTime, nullable=False, default=utcnow)


class EscalationNote(Base):
    """A staff member's internal note on an escalation: never sent to the patron."""

    __tablename__ = "escalation_note"

    id: Mapped[int] = Column(BigId(), primary_key=True)
    escalation_id = Column(
        BigId(), ForeignKey("escalation.id", ondelete="CASCADE"), nullable=False, index=True
    )
    staff_user_id = Column(BigId(), ForeignKey("staff_user.id", ondelete="SET NULL"), nullable=True)
    text = Column(Text, nullable=False)
    at = Column(UTCDateTime, nullable=False, default=utcnow)


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
