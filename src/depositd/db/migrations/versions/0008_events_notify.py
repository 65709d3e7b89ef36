"""Committing events notifies channel ``depositd_events`` (PostgreSQL): WebSocket hubs wake.

One statement-level trigger covers every path that appends events, in every process. The
notification is sent when the transaction commits (never for one that rolls back), and
PostgreSQL folds a transaction's identical notifications into one. It carries no payload:
a hub reads the committed log itself, so a lost or late notification delays and never drops.
SQLite has no such channel; there the hub is woken in-process and polls.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the channel ``depositd.delivery.hub`` listens on (spelt out: migrations stay as written)
CHANNEL = "depositd_events"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute(
        f"""
        CREATE FUNCTION events_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events"
        " FOR EACH STATEMENT EXECUTE FUNCTION events_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("DROP TRIGGER events_notify ON events")
    op.execute("DROP FUNCTION events_notify()")
