"""outbox for messages no Rasa turn produced; escalation's conversation by sender id; feedback.helpful

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 16:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.crm.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=False),
        sa.Column("patron_id", bot.crm.models.base.BigId(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("produced_by", sa.String(length=100), nullable=False),
        sa.Column("created_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_outbox_patron_id_patron"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_channel_recipient_delivered_at", ["channel", "recipient", "delivered_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_outbox_patron_id"), ["patron_id"], unique=False)

    with op.batch_alter_table("escalation", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("rasa_sender_id", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_escalation_rasa_sender_id"), ["rasa_sender_id"], unique=False)

    # A one-tap "did this help?" answer is feedback on its own: the not-empty check admits it.
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("helpful", sa.Boolean(), nullable=True))
        batch_op.drop_constraint(op.f("ck_feedback_not_empty"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_feedback_not_empty"),
            "csat IS NOT NULL OR nps IS NOT NULL OR helpful IS NOT NULL OR comment IS NOT NULL",
        )


def downgrade() -> None:
    # Answers that are only "did this help?" cannot be kept by the older check.
    op.execute(
        "DELETE FROM feedback WHERE csat IS NULL AND nps IS NULL AND comment IS NULL AND helpful IS NOT NULL"
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_feedback_not_empty"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_feedback_not_empty"), "csat IS NOT NULL OR nps IS NOT NULL OR comment IS NOT NULL"
        )
        batch_op.drop_column("helpful")

    with op.batch_alter_table("escalation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_escalation_rasa_sender_id"))
        batch_op.drop_column("rasa_sender_id")
        batch_op.drop_column("channel")

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_patron_id"))
        batch_op.drop_index("ix_outbox_channel_recipient_delivered_at")

    op.drop_table("outbox")
