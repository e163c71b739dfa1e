"""suggestion.escalation_id: a patron's report number finds its escalation; feedback and suggestions keep
the Rasa conversation they were given in (rasa_sender_id), so the ingester can link their conversation

Several complaints of one conversation share its one open escalation, so the link is on the suggestion.
Rows written before this revision have neither: they stay as they were (no conversation, no escalation).

Escalations left open by an erasure before this revision (no patron any more: every escalation opens
with one) are closed as an erasure now closes them: cancelled, with a note that says why. Downgrade
leaves them closed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 17:00:00.000000
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import context, op

import bot.crm.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _sqlite_sequence() -> int | None:
    """The highest report number SQLite has handed out (a rebuilt table would start from its highest
    remaining row instead)."""
    if context.is_offline_mode() or op.get_bind().dialect.name != "sqlite":
        return None
    found = op.get_bind().execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'suggestion'"))
    return found.scalar_one_or_none()


def _restore_sqlite_sequence(seq: int | None) -> None:
    if seq is None:
        return
    connection = op.get_bind()
    connection.execute(
        sa.text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'suggestion'"), {"seq": seq}
    )
    connection.execute(
        sa.text(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'suggestion', :seq"
            " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'suggestion')"
        ),
        {"seq": seq},
    )


# As bot.privacy.erasure.ERASED_NOTE says it at this revision.
ERASED_NOTE = "closed: the patron's data was erased at their request"


def _close_escalations_of_erased_patrons() -> None:
    closing = (
        "UPDATE escalation SET status = 'cancelled', resolved_at = {now}, resolution_note = {note}"
        " WHERE status IN ('open', 'assigned') AND patron_id IS NULL"
    )
    if context.is_offline_mode():
        op.execute(closing.format(now="CURRENT_TIMESTAMP", note="'" + ERASED_NOTE.replace("'", "''") + "'"))
        return
    op.get_bind().execute(
        sa.text(closing.format(now=":now", note=":note")).bindparams(
            sa.bindparam("now", type_=bot.crm.models.base.UTCDateTime())
        ),
        {"now": dt.datetime.now(dt.UTC), "note": ERASED_NOTE},
    )


def upgrade() -> None:
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rasa_sender_id", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_feedback_rasa_sender_id"), ["rasa_sender_id"], unique=False)
        batch_op.create_index(
            "ix_feedback_conversation_id_rasa_sender_id", ["conversation_id", "rasa_sender_id"], unique=False
        )

    # SQLite rebuilds the table to add the foreign key: keep its AUTOINCREMENT and its sequence, so a
    # report number a patron was told is never given to another report.
    seq = _sqlite_sequence()
    with op.batch_alter_table(
        "suggestion", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.add_column(sa.Column("rasa_sender_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("escalation_id", bot.crm.models.base.BigId(), nullable=True))
        batch_op.create_index(batch_op.f("ix_suggestion_rasa_sender_id"), ["rasa_sender_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_suggestion_escalation_id"), ["escalation_id"], unique=False)
        batch_op.create_index(
            "ix_suggestion_conversation_id_rasa_sender_id",
            ["conversation_id", "rasa_sender_id"],
            unique=False,
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_suggestion_escalation_id_escalation"),
            "escalation",
            ["escalation_id"],
            ["id"],
            ondelete="SET NULL",
        )
    _restore_sqlite_sequence(seq)
    _close_escalations_of_erased_patrons()


def downgrade() -> None:
    seq = _sqlite_sequence()
    with op.batch_alter_table(
        "suggestion", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_suggestion_escalation_id_escalation"), type_="foreignkey")
        batch_op.drop_index("ix_suggestion_conversation_id_rasa_sender_id")
        batch_op.drop_index(batch_op.f("ix_suggestion_escalation_id"))
        batch_op.drop_index(batch_op.f("ix_suggestion_rasa_sender_id"))
        batch_op.drop_column("escalation_id")
        batch_op.drop_column("rasa_sender_id")
    _restore_sqlite_sequence(seq)

    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_conversation_id_rasa_sender_id")
        batch_op.drop_index(batch_op.f("ix_feedback_rasa_sender_id"))
        batch_op.drop_column("rasa_sender_id")
