"""Card and bank transfer orders: paid through a payment provider, not to a deposit address.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("kyc_level", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("deposit_orders") as batch:
        batch.alter_column("chain", existing_type=sa.String(length=40), nullable=True)
        batch.alter_column("address", existing_type=sa.String(length=128), nullable=True)
        batch.add_column(sa.Column("provider", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("payment_reference", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("payment", sa.JSON(), nullable=True))
        batch.create_unique_constraint(
            "uq_deposit_orders_merchant_id_provider_payment_reference",
            ["merchant_id", "provider", "payment_reference"],
        )


def downgrade() -> None:
    op.execute("DELETE FROM deposit_orders WHERE chain IS NULL")
    with op.batch_alter_table("deposit_orders") as batch:
        batch.drop_constraint(
            "uq_deposit_orders_merchant_id_provider_payment_reference", type_="unique"
        )
        batch.drop_column("payment")
        batch.drop_column("payment_reference")
        batch.drop_column("provider")
        batch.alter_column("address", existing_type=sa.String(length=128), nullable=False)
        batch.alter_column("chain", existing_type=sa.String(length=40), nullable=False)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("kyc_level")
