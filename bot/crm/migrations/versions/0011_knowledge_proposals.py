"""Knowledge base proposals: a librarian's answer to a patron proposed as a new alternative or entry,
kept for review (deleted with the patron it quotes).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bot.crm.models

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kb_proposal",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("entry_id", sa.String(length=64), nullable=True),
        sa.Column("lang", sa.String(length=2), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=100), nullable=True),
        sa.Column("patron_id", bot.crm.models.base.BigId(), nullable=True),
        sa.Column("proposed_by", bot.crm.models.base.BigId(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reviewed_by", bot.crm.models.base.BigId(), nullable=True),
        sa.Column("reviewed_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('alternative', 'entry')", name=op.f("ck_kb_proposal_kind")),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'rejected')", name=op.f("ck_kb_proposal_status")
        ),
        sa.CheckConstraint("lang IN ('zh', 'en')", name=op.f("ck_kb_proposal_lang")),
        sa.CheckConstraint(
            "kind = 'entry' OR entry_id IS NOT NULL", name=op.f("ck_kb_proposal_alternative_names_entry")
        ),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_kb_proposal_patron_id_patron"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["proposed_by"],
            ["staff_user.id"],
            name=op.f("fk_kb_proposal_proposed_by_staff_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"],
            ["staff_user.id"],
            name=op.f("fk_kb_proposal_reviewed_by_staff_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kb_proposal")),
    )
    with op.batch_alter_table("kb_proposal", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_kb_proposal_patron_id"), ["patron_id"], unique=False)
        batch_op.create_index("ix_kb_proposal_status_created_at", ["status", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kb_proposal", schema=None) as batch_op:
        batch_op.drop_index("ix_kb_proposal_status_created_at")
        batch_op.drop_index(batch_op.f("ix_kb_proposal_patron_id"))
    op.drop_table("kb_proposal")
