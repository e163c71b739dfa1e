"""Outreach: personas, patrons' interest vectors, campaign runs, a richer campaign and delivery outbox
(occasions, skip reasons, claims, its outbox row), the scheduler's lease and the live senders; the
patron's pause and persona; an outbox row's in-flight mark; feedback that answers a follow-up.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 09:07:45.437209
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

import bot.crm.models

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _sqlite_sequence(table: str) -> int | None:
    """The highest id SQLite has handed out for `table`: a rebuilt table must not hand it out again."""
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


CAMPAIGN_STATUS = "status IN ('draft', 'scheduled', 'running', 'paused', 'done', 'cancelled')"
OLD_CAMPAIGN_STATUS = "status IN ('draft', 'scheduled', 'running', 'done', 'cancelled')"
DELIVERY_STATE = "state IN ('pending', 'queued', 'sent', 'failed', 'cancelled', 'skipped')"
OLD_DELIVERY_STATE = "state IN ('pending', 'sent', 'failed', 'cancelled', 'skipped')"


def upgrade() -> None:  # noqa: PLR0915 (one step per table, as generated)
    op.create_table(
        "persona",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("name_en", sa.String(length=200), nullable=False),
        sa.Column("name_zh", sa.String(length=200), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("words", sa.JSON(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("centroid", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona")),
        sa.UniqueConstraint("key", name=op.f("uq_persona_key")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("acquired_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduler_lease")),
    )
    op.create_table(
        "sender_worker",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("channels", sa.String(length=200), nullable=False),
        sa.Column("seen_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sender_worker")),
    )
    with op.batch_alter_table("sender_worker", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sender_worker_seen_at"), ["seen_at"], unique=False)

    op.create_table(
        "patron_interest",
        sa.Column("patron_id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("updated_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patron_id"], ["patron.id"], name=op.f("fk_patron_interest_patron_id_patron"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("patron_id", name=op.f("pk_patron_interest")),
    )
    op.create_table(
        "campaign_run",
        sa.Column("id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("campaign_id", bot.crm.models.base.BigId(), nullable=False),
        sa.Column("occasion", sa.String(length=100), nullable=False),
        sa.Column("due_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("filled", sa.Integer(), nullable=False),
        sa.Column("started_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('filling', 'filled', 'missed', 'cancelled')", name=op.f("ck_campaign_run_status")
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaign.id"],
            name=op.f("fk_campaign_run_campaign_id_campaign"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_run")),
        sa.UniqueConstraint("campaign_id", "occasion", name=op.f("uq_campaign_run_campaign_id_occasion")),
        sqlite_autoincrement=True,
    )
    seq = _sqlite_sequence("campaign")
    with op.batch_alter_table(
        "campaign", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_campaign_status"), type_="check")
        batch_op.create_check_constraint("status", CAMPAIGN_STATUS)
        batch_op.add_column(
            sa.Column("kind", sa.String(length=16), server_default="announcement", nullable=False)
        )
        batch_op.add_column(sa.Column("asks", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("buttons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("schedule", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("trigger_event", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("trigger_days", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("updated_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_unique_constraint(batch_op.f("uq_campaign_name"), ["name"])
        batch_op.create_check_constraint("kind", "kind IN ('announcement', 'question')")
    _restore_sqlite_sequence("campaign", seq)

    # Delivery ids are quoted in reports and feedback: from now on SQLite never hands one out twice.
    with op.batch_alter_table(
        "delivery", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_delivery_state"), type_="check")
        batch_op.create_check_constraint("state", DELIVERY_STATE)
        batch_op.add_column(sa.Column("run_id", bot.crm.models.base.BigId(), nullable=True))
        batch_op.add_column(sa.Column("occasion", sa.String(length=100), server_default="", nullable=False))
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("claimed_until", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("queued_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("outbox_id", bot.crm.models.base.BigId(), nullable=True))
        batch_op.drop_index(batch_op.f("ix_delivery_patron_id"))
        batch_op.drop_constraint(batch_op.f("uq_delivery_campaign_id_patron_id"), type_="unique")
        batch_op.create_index(batch_op.f("ix_delivery_outbox_id"), ["outbox_id"], unique=False)
        batch_op.create_index("ix_delivery_patron_id_queued_at", ["patron_id", "queued_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_delivery_run_id"), ["run_id"], unique=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_delivery_campaign_id_patron_id_occasion"), ["campaign_id", "patron_id", "occasion"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_delivery_outbox_id_outbox"), "outbox", ["outbox_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_delivery_run_id_campaign_run"),
            "campaign_run",
            ["run_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_id", bot.crm.models.base.BigId(), nullable=True))
        batch_op.create_index(batch_op.f("ix_feedback_delivery_id"), ["delivery_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_feedback_delivery_id_delivery"),
            "delivery",
            ["delivery_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("in_flight_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )

    seq = _sqlite_sequence("patron")
    with op.batch_alter_table("patron", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.add_column(
            sa.Column("paused_until", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("persona_id", bot.crm.models.base.BigId(), nullable=True))
        batch_op.create_index(batch_op.f("ix_patron_persona_id"), ["persona_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_patron_persona_id_persona"), "persona", ["persona_id"], ["id"], ondelete="SET NULL"
        )
    _restore_sqlite_sequence("patron", seq)

    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("updated_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("refreshed_at", bot.crm.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("member_count", sa.Integer(), nullable=True))


def downgrade() -> None:  # noqa: PLR0915
    with op.batch_alter_table("segment", schema=None) as batch_op:
        batch_op.drop_column("member_count")
        batch_op.drop_column("refreshed_at")
        batch_op.drop_column("updated_at")

    seq = _sqlite_sequence("patron")
    with op.batch_alter_table("patron", schema=None, table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_patron_persona_id_persona"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_patron_persona_id"))
        batch_op.drop_column("persona_id")
        batch_op.drop_column("paused_until")
    _restore_sqlite_sequence("patron", seq)

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("in_flight_at")

    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_feedback_delivery_id_delivery"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_feedback_delivery_id"))
        batch_op.drop_column("delivery_id")

    op.execute("UPDATE delivery SET state = 'sent' WHERE state = 'queued'")
    op.execute(
        "DELETE FROM delivery WHERE id NOT IN (SELECT MIN(id) FROM delivery GROUP BY campaign_id, patron_id)"
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_delivery_state"), type_="check")
        batch_op.create_check_constraint("state", OLD_DELIVERY_STATE)
        batch_op.drop_constraint(batch_op.f("fk_delivery_run_id_campaign_run"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_delivery_outbox_id_outbox"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_delivery_campaign_id_patron_id_occasion"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_delivery_run_id"))
        batch_op.drop_index("ix_delivery_patron_id_queued_at")
        batch_op.drop_index(batch_op.f("ix_delivery_outbox_id"))
        batch_op.create_unique_constraint(
            batch_op.f("uq_delivery_campaign_id_patron_id"), ["campaign_id", "patron_id"]
        )
        batch_op.create_index(batch_op.f("ix_delivery_patron_id"), ["patron_id"], unique=False)
        batch_op.drop_column("outbox_id")
        batch_op.drop_column("queued_at")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("reason")
        batch_op.drop_column("occasion")
        batch_op.drop_column("run_id")

    op.execute("UPDATE campaign SET status = 'scheduled' WHERE status = 'paused'")
    seq = _sqlite_sequence("campaign")
    with op.batch_alter_table(
        "campaign", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_campaign_kind"), type_="check")
        batch_op.drop_constraint(batch_op.f("ck_campaign_status"), type_="check")
        batch_op.create_check_constraint("status", OLD_CAMPAIGN_STATUS)
        batch_op.drop_constraint(batch_op.f("uq_campaign_name"), type_="unique")
        batch_op.drop_column("updated_at")
        batch_op.drop_column("trigger_days")
        batch_op.drop_column("trigger_event")
        batch_op.drop_column("schedule")
        batch_op.drop_column("buttons")
        batch_op.drop_column("asks")
        batch_op.drop_column("kind")
    _restore_sqlite_sequence("campaign", seq)

    op.drop_table("campaign_run")
    op.drop_table("patron_interest")
    with op.batch_alter_table("sender_worker", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sender_worker_seen_at"))

    op.drop_table("sender_worker")
    op.drop_table("scheduler_lease")
    op.drop_table("persona")
