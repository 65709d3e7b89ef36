"""The chain watcher's cursor and reorg window, and an index to find new addresses.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_blocks",
        sa.Column("chain", sa.String(length=40), nullable=False),
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("parent_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("chain", "number", name=op.f("pk_chain_blocks")),
    )
    op.create_index(
        op.f("ix_addresses_chain_created_at"), "addresses", ["chain", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_addresses_chain_created_at"), table_name="addresses")
    op.drop_table("chain_blocks")
