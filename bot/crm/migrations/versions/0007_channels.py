"""Channels: platform updates handled once (channel_update), shared API tokens (channel_token), and the
outbox's delivery status with every attempt recorded (outbox.status, delivery_attempt).

Outbox rows already delivered become 'delivered', the others 'pending'.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 07:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

import bot.crm.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _sqlite_sequence(table: str) -> int | None:
    """The highest id SQLite has handed out for `table` (a rebuilt table would restart from its highest
    remaining row instead, and an outbox id quoted in an attempt must never be reused)."""
    if context.is_offline_mode() or op.get_bind().dialect.name != "sqlite":
        return None
    found = op.get_bind().execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
    return found.scalar_one_or_none()


def _restore_sqlite_sequence(table: str, seq: int | None) -> None:
    if seq is None:
        return
    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
    bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"), {"t": table, "s": seq})


def upgrade() -> None:
    op.create_table(
        "channel_update",
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("update_key", sa.String(length=128), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("received_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("handled_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("channel", "update_key", name=op.f("pk_channel_update")),
    )
    with op.batch_alter_table("channel_update", schema=None) as batch_op:
        batch_op.create_index(
            "ix_channel_update_handled_at_received_at", ["handled_at", "received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_channel_update_sender"), ["sender"], unique=False)

    op.create_table(
        "channel_token",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("expires_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_channel_token")),
    )

    seq = _sqlite_sequence("outbox")
    with op.batch_alter_table("outbox", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="pending", nullable=False)
        )
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("next_attempt_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("claimed_until", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_outbox_status_channel", ["status", "channel"], unique=False)
        batch_op.create_check_constraint(
            "status", "status IN ('pending', 'delivered', 'skipped', 'failed', 'unknown')"
        )
    _restore_sqlite_sequence("outbox", seq)
    op.execute("UPDATE outbox SET status = 'delivered' WHERE delivered_at IS NOT NULL")

    op.create_table(
        "delivery_attempt",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("outbox_id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("attempted_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('sent', 'retry', 'blocked', 'unknown', 'skipped', 'failed')",
            name=op.f("ck_delivery_attempt_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["outbox_id"],
            ["outbox.id"],
            name=op.f("fk_delivery_attempt_outbox_id_outbox"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempt")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_attempt_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delivery_attempt_outbox_id"))
    op.drop_table("delivery_attempt")

    seq = _sqlite_sequence("outbox")
    with op.batch_alter_table("outbox", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_outbox_status"), type_="check")
        batch_op.drop_index("ix_outbox_status_channel")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
        batch_op.drop_column("status")
    _restore_sqlite_sequence("outbox", seq)

    op.drop_table("channel_token")
    with op.batch_alter_table("channel_update", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_update_sender"))
        batch_op.drop_index("ix_channel_update_handled_at_received_at")
    op.drop_table("channel_update")
