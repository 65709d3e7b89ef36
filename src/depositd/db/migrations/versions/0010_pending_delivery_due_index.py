"""Deliveries: the sender's claim reads the pending rows in due order from a partial index.

The claim takes due deliveries in (next_attempt_at, id) order and probes each for an earlier
pending event of its deposit (ix_deliveries_pending_order). An index of the pending rows in
that order lets it stop after a batch instead of sorting the whole backlog; it replaces the
index on (status, next_attempt_at), which only the claim used.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_status_next_attempt_at"))
        batch.create_index(
            batch.f("ix_deliveries_pending_due"),
            ["next_attempt_at", "id"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_pending_due"))
        batch.create_index(
            batch.f("ix_deliveries_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )
