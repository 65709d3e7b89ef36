"""Run the long-lived loops of one process, restarting any that fails, until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection
from functools import partial

import structlog

from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.leadership import while_leading
from depositd.db.notify import wake_on_events
from depositd.delivery.poster import HttpPoster
from depositd.domain.assets import AssetBook
from depositd.services.alerts import OpsState
from depositd.services.observations import on_events_committed
from depositd.services.reconcile import ReconcileReport
from depositd.workers import ROLES
from depositd.workers.alerts import alerts_forever
from depositd.workers.backoff import Backoff
from depositd.workers.callbacks import sweep_callbacks_forever
from depositd.workers.orders import expire_orders_forever
from depositd.workers.reconciler import reconcile_forever
from depositd.workers.retention import purge_forever
from depositd.workers.sender import Sender
from depositd.workers.watcher import ChainWatcher, WatcherStatus

log = structlog.get_logger("depositd.workers")

#: waits before restarting a loop that failed: quick at first, at most a minute apart
RESTART_BACKOFF = Backoff(base_seconds=1.0, cap_seconds=60.0)


class Supervisor:
    """Keeps each named loop running: a loop that raises is logged and started again."""

    def __init__(self, backoff: Backoff = RESTART_BACKOFF) -> None:
        self._backoff = backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(self._keep_running(name, loop), name=name)

    async def _keep_running(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures = 0
        while True:
            try:
                await loop()
                log.warning("worker_returned", worker=name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.exception("worker_failed", worker=name, failures=failures)
            await asyncio.sleep(self._backoff.delay(failures + 1))

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


class Workers:
    """Every background loop the configuration asks for: a watcher per chain with a node
    URL, the webhook sender, the deposit order expiry sweeper, the callback sweep, the
    reconciler and the retention job (unless ``retention.enabled`` is false)."""

    def __init__(
        self,
        config: Config,
        db: Database,
        assets: AssetBook,
        *,
        roles: Collection[str] | None = None,
    ) -> None:
        self.roles = frozenset(ROLES if roles is None else roles)
        self.watchers = {
            name: ChainWatcher(db, assets, name, chain)
            for name, chain in config.chains.items()
            if chain.rpc_url is not None and "watchers" in self.roles
        }
        self._db = db
        self._assets = assets
        self._config = config
        self._supervisor = Supervisor()
        #: what the reconciler found last, for the alert rules
        self.ops = OpsState()

    def start(self) -> None:
        # one of each of these runs per deployment: the leader of its role (leadership)
        for name, watcher in self.watchers.items():
            self._supervisor.start(
                f"watcher:{name}",
                partial(
                    while_leading,
                    self._db,
                    f"watcher:{name}",
                    watcher.run,
                    on_change=watcher.status.set_leading,
                ),
            )
        if "sender" in self.roles:
            self._supervisor.start("sender", self._send)
        if "order-expiry" in self.roles:
            self._supervisor.start(
                "order-expiry", lambda: expire_orders_forever(self._db, self._assets)
            )
        if "reconciler" in self.roles:
            self._supervisor.start(
                "reconciler",
                partial(
                    while_leading,
                    self._db,
                    "reconciler",
                    lambda: reconcile_forever(
                        self._db, self._assets, self._config, self._reconciled
                    ),
                ),
            )
        if "callbacks" in self.roles:
            self._supervisor.start(
                "callbacks",
                lambda: sweep_callbacks_forever(self._db, self._assets, self._config),
            )
        if "retention" in self.roles and self._config.retention.enabled:
            self._supervisor.start(
                "retention", lambda: purge_forever(self._db, self._config.retention)
            )

        if "alerts" in self.roles and self._config.alerts.enabled:
            self._supervisor.start(
                "alerts",
                partial(
                    while_leading,
                    self._db,
                    "alerts",
                    lambda: alerts_forever(self._db, self._config, self.ops, self.leading),
                ),
            )

    def leading(self) -> list[WatcherStatus]:
        """The statuses of this process's watchers that lead their chain."""
        return [w.status for w in self.watchers.values() if w.status.leading]

    def _reconciled(self, report: ReconcileReport) -> None:
        self.ops.mismatches = report.mismatches

    async def _send(self) -> None:
        # made here, in the running loop its HTTP session belongs to; a fresh one per restart
        policy = self._config.delivery
        sender = Sender(self._db, policy, HttpPoster.for_policy(policy))
        # recording in this process wakes it at once; on PostgreSQL so does a commit of events
        # in any other process (LISTEN/NOTIFY); its polling finds whatever slips through
        stop_waking = on_events_committed(self._db, sender.wake)
        listening = asyncio.create_task(wake_on_events(self._db, sender.wake))
        try:
            await sender.run()
        finally:
            stop_waking()
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening

    async def stop(self) -> None:
        await self._supervisor.stop()
        for watcher in self.watchers.values():
            await watcher.close()
