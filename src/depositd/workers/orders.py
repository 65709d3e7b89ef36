"""The order expiry sweeper: expires deposit orders past their deadline, every few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog
from sqlalchemy.exc import SQLAlchemyError

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.services.orders import expire_due_orders

log = structlog.get_logger("depositd.orders")

#: failures of the database or the connection to it, which the next tick may not meet
DATABASE_TROUBLE = (SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def expire_orders_forever(
    db: Database,
    assets: AssetBook,
    *,
    interval_seconds: float = 5.0,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Sweep every ``interval_seconds`` until cancelled.

    A failed sweep is logged and tried again at the next tick: its transaction rolled back,
    so nothing is half done and nothing is lost. Anything else (a bug) ends the loop, for
    whoever supervises it to see.
    """
    log.info("order expiry sweeper started", interval_seconds=interval_seconds)
    try:
        while True:
            try:
                expired = await expire_due_orders(db, assets, clock())
            except DATABASE_TROUBLE as exc:
                log.warning(
                    "order expiry sweep failed; trying again next tick",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                if expired:
                    log.info("deposit orders expired", count=expired)
            await asyncio.sleep(interval_seconds)
    finally:
        log.info("order expiry sweeper stopped")
