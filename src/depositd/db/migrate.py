"""Bring a database's schema up to date with Alembic (the same code for both engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from depositd.db.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` in one transaction."""
    config = alembic_config()

    def run(sync_connection: Any) -> None:
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    async with db.writer.begin() as conn:
        await conn.run_sync(run)


async def is_current(db: Database) -> bool:
    """True when every migration has been applied."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())

    def current(sync_connection: Any) -> set[str]:
        return set(MigrationContext.configure(sync_connection).get_current_heads())

    async with db.reader.connect() as conn:
        return await conn.run_sync(current) == heads
