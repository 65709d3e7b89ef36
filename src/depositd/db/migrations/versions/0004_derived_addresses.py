"""Merchants carry an xpub; addresses record their derivation index, one per user and chain.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("xpub", sa.String(length=200), nullable=True))
    with op.batch_alter_table("addresses") as batch:
        batch.add_column(sa.Column("derivation_index", sa.Integer(), nullable=True))
        batch.create_unique_constraint(batch.f("uq_addresses_user_id_chain"), ["user_id", "chain"])
        batch.create_unique_constraint(
            batch.f("uq_addresses_merchant_id_chain_derivation_index"),
            ["merchant_id", "chain", "derivation_index"],
        )


def downgrade() -> None:
    with op.batch_alter_table("addresses") as batch:
        batch.drop_constraint(batch.f("uq_addresses_merchant_id_chain_derivation_index"))
        batch.drop_constraint(batch.f("uq_addresses_user_id_chain"))
        batch.drop_column("derivation_index")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("xpub")
