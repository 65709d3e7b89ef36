"""Outbound webhooks: endpoint secrets, fallbacks and health; delivery ordering and attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from depositd.db.tables import UtcDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(
            sa.Column("description", sa.String(length=500), nullable=False, server_default="")
        )
        batch.add_column(
            sa.Column("fallback_urls", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch.add_column(
            sa.Column("secret", sa.String(length=100), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("previous_secret", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("disabled_reason", sa.String(length=300), nullable=True))
        batch.add_column(
            sa.Column("failure_streak", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("failing_since", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("circuit_open_until", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("updated_at", UtcDateTime(), nullable=True))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("ordering_key", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("last_attempt_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("last_status_code", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_error", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("finished_at", UtcDateTime(), nullable=True))
        batch.create_index(
            batch.f("ix_deliveries_endpoint_id_ordering_key_event_seq"),
            ["endpoint_id", "ordering_key", "event_seq"],
            unique=False,
        )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response_excerpt", sa.String(length=500), nullable=True),
        sa.Column("error_class", sa.String(length=60), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(
        op.f("ix_delivery_attempts_delivery_id"), "delivery_attempts", ["delivery_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_attempts_delivery_id"), table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index(batch.f("ix_deliveries_endpoint_id_ordering_key_event_seq"))
        for column in (
            "finished_at",
            "last_error",
            "last_status_code",
            "last_attempt_at",
            "ordering_key",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("endpoints") as batch:
        for column in (
            "updated_at",
            "circuit_open_until",
            "failing_since",
            "disabled_reason",
            "previous_secret_until",
            "previous_secret",
            "failure_streak",
            "secret",
            "fallback_urls",
            "description",
        ):
            batch.drop_column(column)
