"""The retention job: purge what the policy says has expired, every ``interval_seconds``."""

from __future__ import annotations

import asyncio

import structlog

from depositd.config import RetentionConfig
from depositd.db.engine import Database
from depositd.domain.audit import WORKER_ACTOR
from depositd.services.retention import purge
from depositd.workers.orders import DATABASE_TROUBLE

log = structlog.get_logger("depositd.retention")


async def purge_forever(db: Database, policy: RetentionConfig) -> None:
    """Purge until cancelled; a failed run is logged and tried again at the next tick (each
    batch is its own transaction: what one removed stays removed)."""
    log.info("retention started", interval_seconds=policy.interval_seconds)
    try:
        while True:
            try:
                report = await purge(db, policy, actor=WORKER_ACTOR)
            except DATABASE_TROUBLE as exc:
                log.warning("retention purge failed; trying again next tick",
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            else:
                if report.total:
                    log.info("retention purged", **report.removed,
                             events_purged_through=report.events_purged_through)  # fmt: skip
            await asyncio.sleep(policy.interval_seconds)
    finally:
        log.info("retention stopped")
