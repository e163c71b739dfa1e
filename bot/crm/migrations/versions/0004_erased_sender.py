"""erased_sender: late events of an erased patron's conversations are dropped, not re-created

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 01:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.crm.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_sender",
        sa.Column("sender_digest", sa.String(length=64), nullable=False),
        sa.Column("erased_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender_digest", name=op.f("pk_erased_sender")),
    )
    with op.batch_alter_table("erased_sender", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_erased_sender_erased_at"), ["erased_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("erased_sender", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_erased_sender_erased_at"))
    op.drop_table("erased_sender")
