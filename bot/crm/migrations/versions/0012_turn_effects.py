"""Turn effects: what a custom action recorded for one patron message, so a turn run again after a kill
records nothing twice.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 07:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.crm.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "turn_effect",
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("result", sa.BigInteger(), nullable=False),
        sa.Column("created_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender", "message_id", "action", name=op.f("pk_turn_effect")),
    )
    op.create_index(op.f("ix_turn_effect_created_at"), "turn_effect", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_turn_effect_created_at"), table_name="turn_effect")
    op.drop_table("turn_effect")
