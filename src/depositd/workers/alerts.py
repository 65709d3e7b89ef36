"""The alert evaluator's loop: a round every ``alerts.interval_seconds``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import aiohttp
import structlog

from depositd.config import Config
from depositd.db.engine import Database
from depositd.delivery.poster import HttpPoster
from depositd.services.alerts import Evaluator, LogSink, OpsState, Sink, SlackSink, WatcherView
from depositd.workers.orders import DATABASE_TROUBLE

log = structlog.get_logger("depositd.alerts")


async def alerts_forever(
    db: Database,
    config: Config,
    state: OpsState,
    watchers: Callable[[], Iterable[WatcherView]],
) -> None:
    settings = config.alerts
    sinks: list[Sink] = [LogSink()]
    poster = None
    if settings.webhook_url is not None:
        poster = HttpPoster.for_policy(config.delivery)  # made in the loop it belongs to
        sinks.append(SlackSink(settings.webhook_url, poster))
    evaluator = Evaluator(db, settings, sinks, watchers, state)
    log.info("alerts started", interval_seconds=settings.interval_seconds, sinks=len(sinks))
    try:
        while True:
            try:
                await evaluator.evaluate()
            except (*DATABASE_TROUBLE, aiohttp.ClientError) as exc:
                log.warning("alert round failed; trying again next tick",
                            error=f"{type(exc).__name__}: {exc}")  # fmt: skip
            await asyncio.sleep(settings.interval_seconds)
    finally:
        if poster is not None:
            await poster.close()
        log.info("alerts stopped")
