"""The reconciler: missed-callback recovery and the sums report, every few minutes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import structlog

from depositd import metrics
from depositd.config import Config
from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.services.reconcile import ReconcileReport, reconcile
from depositd.workers.orders import DATABASE_TROUBLE

log = structlog.get_logger("depositd.reconcile")


async def reconcile_forever(
    db: Database,
    assets: AssetBook,
    config: Config,
    on_report: Callable[[ReconcileReport], None] = lambda _report: None,
) -> None:
    """Reconcile every ``reconcile.interval_seconds`` until cancelled; a failed run is logged
    and tried again at the next tick (recording is idempotent). Each report is handed to
    ``on_report`` (the alert rules read its mismatches)."""
    interval = config.reconcile.interval_seconds
    log.info("reconciler started", interval_seconds=interval)
    try:
        while True:
            try:
                report = await reconcile(db, config, assets)
            except (*DATABASE_TROUBLE, aiohttp.ClientError) as exc:
                log.warning("reconciliation failed; trying again next tick",
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            else:
                on_report(report)
                metrics.RECONCILE_MISMATCHES.set(len(report.mismatches))
                metrics.RECONCILE_RECOVERED.inc(len(report.recovered))
                for found in report.recovered:
                    log.info("overdue deposit reconciled", provider=found.provider,
                             deposit=found.provider_deposit_id, before=found.before,
                             after=found.after)  # fmt: skip
                for mismatch in report.mismatches:
                    log.error("reconciliation mismatch", kind=mismatch.kind,
                              subject=mismatch.subject, expected=mismatch.expected,
                              found=mismatch.actual)  # fmt: skip
            await asyncio.sleep(interval)
    finally:
        log.info("reconciler stopped")
