"""The staff console: staff passwords and language, signed-in sessions, sign-in attempts (for their
limit), and internal notes on escalations.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 15:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

import bot.crm.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _sqlite_sequence(table: str) -> int | None:
    """The highest id SQLite has handed out for `table`: a rebuilt table must not hand it out again."""
    if context.is_offline_mode() or op.get_bind().dialect.name != "sqlite":
        return None
    found = op.get_bind().execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
    return found.scalar_one_or_none()


def upgrade() -> None:
    with op.batch_alter_table("staff_user", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=2), nullable=True))

    op.create_table(
        "staff_session",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("staff_user_id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["staff_user_id"],
            ["staff_user.id"],
            name=op.f("fk_staff_session_staff_user_id_staff_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_session")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_staff_session_token_hash")),
    )
    with op.batch_alter_table("staff_session", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_staff_session_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_staff_session_staff_user_id"), ["staff_user_id"], unique=False)

    op.create_table(
        "login_attempt",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempt")),
    )
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.create_index("ix_login_attempt_address_at", ["address", "at"], unique=False)
        batch_op.create_index("ix_login_attempt_username_at", ["username", "at"], unique=False)

    op.create_table(
        "escalation_note",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("escalation_id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("staff_user_id", bot.crm.models.base.BigId(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["escalation_id"],
            ["escalation.id"],
            name=op.f("fk_escalation_note_escalation_id_escalation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["staff_user_id"],
            ["staff_user.id"],
            name=op.f("fk_escalation_note_staff_user_id_staff_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_note")),
    )
    with op.batch_alter_table("escalation_note", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_escalation_note_escalation_id"), ["escalation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("escalation_note", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escalation_note_escalation_id"))
    op.drop_table("escalation_note")
    with op.batch_alter_table("login_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempt_username_at")
        batch_op.drop_index("ix_login_attempt_address_at")
    op.drop_table("login_attempt")
    with op.batch_alter_table("staff_session", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_staff_session_staff_user_id"))
        batch_op.drop_index(batch_op.f("ix_staff_session_expires_at"))
    op.drop_table("staff_session")
    seq = _sqlite_sequence("staff_user")
    with op.batch_alter_table(
        "staff_user", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("language")
        batch_op.drop_column("password_hash")
    if seq is not None:
        bind = op.get_bind()
        bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'staff_user'"))
        bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('staff_user', :s)"), {"s": seq})
