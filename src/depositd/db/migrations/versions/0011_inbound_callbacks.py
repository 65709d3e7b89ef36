"""Inbound provider callbacks: every request stored before it is acted on, for audit and replay.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from depositd.db.tables import UtcDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACCEPTED = sa.text("outcome = 'accepted'")
_UNPROCESSED = sa.text("outcome = 'accepted' AND processed_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "inbound_callbacks",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=60), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_bytes", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("rejection_code", sa.String(length=40), nullable=True),
        sa.Column("rejection", sa.String(length=300), nullable=True),
        sa.Column("event_id", sa.String(length=200), nullable=True),
        sa.Column("replay_of", sa.String(length=40), nullable=True),
        sa.Column("claim", sa.JSON(), nullable=True),
        sa.Column("processed_at", UtcDateTime(), nullable=True),
        sa.Column("deposit_id", sa.String(length=40), nullable=True),
        sa.Column("result", sa.String(length=60), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_callbacks")),
    )
    with op.batch_alter_table("inbound_callbacks") as batch:
        batch.create_index(
            "uq_inbound_callbacks_event",
            ["provider", "event_id"],
            unique=True,
            postgresql_where=_ACCEPTED,
            sqlite_where=_ACCEPTED,
        )
        batch.create_index(
            "ix_inbound_callbacks_unprocessed",
            ["received_at"],
            unique=False,
            postgresql_where=_UNPROCESSED,
            sqlite_where=_UNPROCESSED,
        )
        batch.create_index(
            batch.f("ix_inbound_callbacks_merchant_id_received_at"),
            ["merchant_id", "received_at"],
            unique=False,
        )


def downgrade() -> None:
    op.drop_table("inbound_callbacks")
