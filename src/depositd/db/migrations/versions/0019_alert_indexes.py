"""Indexes for the alert rules and the scrape: each reads only recent or troubled rows.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the conditions as in ``db.tables`` at this revision
_PARTIAL = [
    (
        "ix_deposits_open_updated",
        "deposits",
        ["merchant_id", "updated_at"],
        "status IN ('pending', 'confirming')",
    ),
    ("ix_deposits_held", "deposits", ["merchant_id"], "status = 'held'"),
    ("ix_events_reversed", "events", ["merchant_id", "created_at"], "type = 'deposit.reversed'"),
    ("ix_deliveries_dead", "deliveries", ["finished_at"], "status = 'dead'"),
]
_PLAIN = [
    ("ix_delivery_attempts_created_at", "delivery_attempts", ["created_at"]),
    ("ix_inbound_callbacks_received_at", "inbound_callbacks", ["received_at"]),
]


def upgrade() -> None:
    for name, table, columns, where in _PARTIAL:
        condition = sa.text(where)
        op.create_index(name, table, columns, postgresql_where=condition, sqlite_where=condition)
    for name, table, columns in _PLAIN:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(_PLAIN):
        op.drop_index(name, table_name=table)
    for name, table, _columns, _where in reversed(_PARTIAL):
        op.drop_index(name, table_name=table)
