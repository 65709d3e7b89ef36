"""Anomaly detection state: users' recent deposits per asset, assets' recent first deposits.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from depositd.db.tables import UtcDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "anomaly_histories",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("asset", sa.String(length=40), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_anomaly_histories_user_id_users"
        ),
        sa.PrimaryKeyConstraint("user_id", "asset", name="pk_anomaly_histories"),
    )
    op.create_table(
        "anomaly_first_deposits",
        sa.Column("asset", sa.String(length=40), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("asset", name="pk_anomaly_first_deposits"),
    )


def downgrade() -> None:
    op.drop_table("anomaly_first_deposits")
    op.drop_table("anomaly_histories")
