"""End users: accounts with email and password, email tokens, sessions, KYC submissions.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from depositd.db.tables import UtcDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "end_users",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("email_verified_at", UtcDateTime(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name="fk_end_users_merchant_id_merchants"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_end_users_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_end_users"),
        sa.UniqueConstraint("merchant_id", "email", name="uq_end_users_merchant_id_email"),
        sa.UniqueConstraint("user_id", name="uq_end_users_user_id"),
    )
    op.create_table(
        "email_tokens",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("end_user_id", sa.String(length=40), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("used_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["end_user_id"], ["end_users.id"], name="fk_email_tokens_end_user_id_end_users"
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_email_tokens"),
    )
    op.create_index("ix_email_tokens_end_user_id", "email_tokens", ["end_user_id"])
    op.create_table(
        "end_user_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("end_user_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["end_user_id"], ["end_users.id"], name="fk_end_user_sessions_end_user_id_end_users"
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_end_user_sessions"),
    )
    op.create_index("ix_end_user_sessions_end_user_id", "end_user_sessions", ["end_user_id"])
    op.create_table(
        "kyc_submissions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("end_user_id", sa.String(length=40), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("submitted_at", UtcDateTime(), nullable=False),
        sa.Column("decided_at", UtcDateTime(), nullable=True),
        sa.Column("granted_level", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name="fk_kyc_submissions_merchant_id_merchants"
        ),
        sa.ForeignKeyConstraint(
            ["end_user_id"], ["end_users.id"], name="fk_kyc_submissions_end_user_id_end_users"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_kyc_submissions"),
    )
    op.create_index("ix_kyc_submissions_end_user_id", "kyc_submissions", ["end_user_id"])
    op.create_index(
        "ix_kyc_submissions_merchant_id_status_submitted_at",
        "kyc_submissions",
        ["merchant_id", "status", "submitted_at"],
    )
    op.create_index(
        "uq_kyc_submissions_pending",
        "kyc_submissions",
        ["end_user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("kyc_submissions")
    op.drop_table("end_user_sessions")
    op.drop_table("email_tokens")
    op.drop_table("end_users")
