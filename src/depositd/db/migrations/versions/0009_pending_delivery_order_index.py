"""Deliveries: the per-deposit ordering index covers only pending rows.

The sender lets a delivery go only when no earlier event of the same deposit is still pending
for the endpoint (``db.outbox``): that check reads pending rows by (endpoint, ordering key,
seq). Delivered and dead rows, the bulk of the table, never matter to it, so the index holds
the pending ones only and stays as small as the backlog.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_endpoint_id_ordering_key_event_seq"))
        batch.create_index(
            batch.f("ix_deliveries_pending_order"),
            ["endpoint_id", "ordering_key", "event_seq"],
            unique=False,
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_pending_order"))
        batch.create_index(
            batch.f("ix_deliveries_endpoint_id_ordering_key_event_seq"),
            ["endpoint_id", "ordering_key", "event_seq"],
            unique=False,
        )
