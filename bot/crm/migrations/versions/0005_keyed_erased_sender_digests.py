"""erased_sender: digests keyed with the installation's secret, so that no one can find the ids again

0004 named an erased patron's Rasa conversation id by its plain SHA-256, which trying every likely
id (a REST name, a 10-digit Telegram id) reverses. Each row becomes HMAC-SHA256(secret, that
SHA-256), as `bot.privacy.erasure.sender_digest` now computes it, so late events of patrons erased
before the upgrade are still dropped. The secret is the one the code reads: `PATRONBOT_SECRET_KEY`,
or the data folder's `secret.key`, made on first need.

Downgrade raises when `erased_sender` holds rows: the plain digests cannot be computed back from the
keyed ones, and deleting the rows would let those patrons' late events be written as new patrons.
An empty table downgrades freely.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 09:00:00.000000
"""

from __future__ import annotations

import hashlib
import hmac

import sqlalchemy as sa
from alembic import context, op

import bot.pseudonyms

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if context.is_offline_mode():
        raise RuntimeError(
            "migration 0005 computes digests with the installation's secret and cannot be written as"
            " an SQL script: run `patronbot db upgrade` against the database"
        )
    connection = op.get_bind()
    plain = connection.execute(sa.text("SELECT sender_digest FROM erased_sender")).scalars().all()
    if not plain:
        return  # nothing to convert: the secret is made when it is first needed, not here
    key = bot.pseudonyms.installation_key()
    # The formula as of this revision, written out so that a later change to the code cannot change
    # what this migration did.
    keyed = [
        {"old": digest, "new": hmac.new(key, digest.encode("utf-8"), hashlib.sha256).hexdigest()}
        for digest in plain
    ]
    connection.execute(
        sa.text("UPDATE erased_sender SET sender_digest = :new WHERE sender_digest = :old"), keyed
    )


def downgrade() -> None:
    if context.is_offline_mode():
        raise RuntimeError("migration 0005 cannot be undone in an SQL script: it must see erased_sender")
    connection = op.get_bind()
    count = connection.execute(sa.text("SELECT count(*) FROM erased_sender")).scalar_one()
    if count:
        raise RuntimeError(
            f"migration 0005 cannot be undone: erased_sender holds {count} keyed digests, from which"
            " 0004's plain SHA-256 digests cannot be computed back; delete those rows first only if"
            " erased patrons' late events may be written as new patrons"
        )
