"""The callback sweep: records accepted provider callbacks that nobody has processed yet.

A callback is processed right after it is acknowledged by the process that received it; one
whose processing was cut short (a crash, a database outage, an API replica that only ingests)
stays queued in the database, and this loop records it within a few seconds.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from depositd.config import Config
from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.services.callbacks import CallbackLog, ClaimVerifier, process_callbacks
from depositd.services.group_commit import Recorder
from depositd.workers.orders import DATABASE_TROUBLE

log = structlog.get_logger("depositd.callbacks")


async def sweep_callbacks_forever(db: Database, assets: AssetBook, config: Config) -> None:
    """Sweep every ``callbacks.sweep_interval_seconds`` until cancelled; a failed sweep is
    logged and tried again at the next tick (each callback's processing is idempotent)."""
    policy = config.callbacks
    recorder = Recorder(db, assets)
    callbacks = CallbackLog(db)
    verifier = ClaimVerifier(config, assets)
    older_than = timedelta(seconds=policy.sweep_after_seconds)
    log.info("callback sweep started", interval_seconds=policy.sweep_interval_seconds)
    try:
        while True:
            try:
                done = await process_callbacks(
                    callbacks, recorder, verifier=verifier, older_than=older_than
                )
            except DATABASE_TROUBLE as exc:
                log.warning(
                    "callback sweep failed; trying again next tick",
                    error=f"{type(exc).__name__}: {exc}",
                )
            else:
                if done:
                    log.info("queued callbacks processed", count=len(done))
            await asyncio.sleep(policy.sweep_interval_seconds)
    finally:
        await verifier.close()
        log.info("callback sweep stopped")
