"""The migrated schema is exactly the declared one, on both engines."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from depositd.db.engine import Database
from depositd.db.migrate import is_current, upgrade
from depositd.db.tables import metadata


async def test_migrations_produce_the_declared_tables(db: Database) -> None:
    def diff(sync_connection: Any) -> list[Any]:
        context = MigrationContext.configure(sync_connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with db.reader.connect() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []
    assert await is_current(db)


async def test_migrating_twice_changes_nothing(db: Database) -> None:
    await upgrade(db)
    assert await is_current(db)
