"""Merchant external accounts keep no running balance (a hot row every deposit would lock).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import depositd.db.tables

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.alter_column(
            "balance",
            existing_type=depositd.db.tables.Amount(precision=78, scale=0),
            nullable=True,
        )
    op.execute("UPDATE accounts SET balance = NULL WHERE side = 'external'")


def downgrade() -> None:
    # summed in Python: SQLite's SUM over decimal text is not exact
    bind = op.get_bind()
    amount = depositd.db.tables.Amount()
    totals: dict[int, int] = {}
    for account_id, value in bind.execute(
        sa.text(
            "SELECT accounts.id, ledger_entries.amount FROM accounts"
            " LEFT JOIN ledger_entries ON ledger_entries.account_id = accounts.id"
            " WHERE accounts.balance IS NULL"
        ).columns(sa.column("id", sa.Integer), sa.column("amount", amount))
    ):
        totals[account_id] = totals.get(account_id, 0) + (value or 0)
    for account_id, total in totals.items():
        bind.execute(
            sa.text("UPDATE accounts SET balance = :balance WHERE id = :id").bindparams(
                sa.bindparam("balance", type_=amount)
            ),
            {"balance": total, "id": account_id},
        )
    with op.batch_alter_table("accounts") as batch:
        batch.alter_column(
            "balance",
            existing_type=depositd.db.tables.Amount(precision=78, scale=0),
            nullable=False,
        )
