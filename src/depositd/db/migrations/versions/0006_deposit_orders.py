"""Deposit orders, and an index to find one user's deposits of one asset in a time window.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import depositd.db.tables

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deposit_orders",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("asset", sa.String(length=40), nullable=False),
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=128), nullable=False),
        sa.Column("amount", depositd.db.tables.Amount(precision=78, scale=0), nullable=True),
        sa.Column("expires_at", depositd.db.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "expiry_checked_at", depositd.db.tables.UtcDateTime(timezone=True), nullable=True
        ),
        sa.Column("expired_at", depositd.db.tables.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", depositd.db.tables.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"],
            ["merchants.id"],
            name=op.f("fk_deposit_orders_merchant_id_merchants"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_deposit_orders_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deposit_orders")),
    )
    with op.batch_alter_table("deposit_orders") as batch:
        batch.create_index(batch.f("ix_deposit_orders_merchant_id_id"), ["merchant_id", "id"])
        batch.create_index(
            batch.f("ix_deposit_orders_user_id_asset_created_at"),
            ["user_id", "asset", "created_at"],
        )
        batch.create_index(
            batch.f("ix_deposit_orders_expiry_checked_at_expires_at"),
            ["expiry_checked_at", "expires_at"],
        )
    with op.batch_alter_table("deposits") as batch:
        batch.create_index(
            batch.f("ix_deposits_user_id_asset_created_at"), ["user_id", "asset", "created_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("deposits") as batch:
        batch.drop_index(batch.f("ix_deposits_user_id_asset_created_at"))
    op.drop_table("deposit_orders")
