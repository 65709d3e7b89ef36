"""What the operators' dashboard reads: charts, a deposit's whole timeline, endpoint health,
failing deliveries, the reconciliation report. Reads only, each for one merchant."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from depositd.clock import utcnow
from depositd.db.dashboard import EntryRow
from depositd.db.engine import Database
from depositd.db.repositories import Endpoint
from depositd.db.uow import UnitOfWork
from depositd.domain.deposits import DepositState
from depositd.services.callbacks import Provider
from depositd.services.deliveries import (
    Delivery,
    DeliveryDetail,
    get_delivery,
    list_deliveries,
)
from depositd.services.queries import get_deposit
from depositd.services.reconcile import Mismatch, compare_sums

#: minutes the charts cover
CHART_MINUTES = 30
#: requests an endpoint's failure rate is taken over
HEALTH_WINDOW = 50


@dataclass(frozen=True)
class Series:
    """One value a minute, oldest first; ``labels`` are ``HH:MM`` (UTC)."""

    labels: list[str]
    values: list[float]


@dataclass(frozen=True)
class Charts:
    deposits_per_minute: Series
    #: mean latency of delivery attempts, a minute (0 in a minute without attempts)
    delivery_latency_ms: Series
    #: deliveries queued and not finished, at the end of each minute
    outbox_depth: Series


async def charts(
    db: Database,
    merchant_id: str,
    *,
    minutes: int = CHART_MINUTES,
    clock: Callable[[], datetime] = utcnow,
) -> Charts:
    now = clock()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    starts = [first + timedelta(minutes=i) for i in range(minutes)]
    keys = [start.strftime("%Y-%m-%d %H:%M") for start in starts]
    labels = [start.strftime("%H:%M") for start in starts]
    marks = [min(start + timedelta(minutes=1), now) for start in starts]
    async with UnitOfWork(db, write=False) as uow:
        counts = await uow.dashboard.deposits_per_minute(merchant_id, first)
        latency = {m.minute: m for m in await uow.dashboard.latency_per_minute(merchant_id, first)}
        depth = await uow.dashboard.outbox_depth(merchant_id, marks)
    return Charts(
        Series(labels, [float(counts.get(key, 0)) for key in keys]),
        Series(labels, [latency[key].mean_ms if key in latency else 0.0 for key in keys]),
        Series(labels, [float(value) for value in depth]),
    )


@dataclass(frozen=True)
class Timeline:
    deposit: DepositState
    #: the deposit's events (each observation that changed it, each transition), oldest first
    transitions: list[dict[str, Any]]
    entries: list[EntryRow]
    #: deliveries of its events, each with its latest attempts
    deliveries: list[DeliveryDetail]


async def deposit_timeline(db: Database, merchant_id: str, deposit_id: str) -> Timeline:
    """The merchant's deposit with everything that happened to it (``NotFound`` otherwise)."""
    history = await get_deposit(db, merchant_id, deposit_id)
    async with UnitOfWork(db, write=False) as uow:
        entries = await uow.dashboard.entries_of_deposit(merchant_id, deposit_id)
        rows = await uow.deliveries.of_deposit(merchant_id, deposit_id)
    details = [await get_delivery(db, merchant_id, row.id) for row in rows]
    return Timeline(history.deposit, history.transitions, entries, details)


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: Endpoint
    #: ``enabled``, ``circuit_open`` (no attempts for a while) or ``disabled``
    state: str
    #: requests counted, and how many of them failed (no answer, or not 2xx)
    requests: int
    failures: int

    @property
    def failure_rate(self) -> float | None:
        return None if not self.requests else self.failures / self.requests


async def endpoint_health(
    db: Database,
    merchant_id: str,
    *,
    window: int = HEALTH_WINDOW,
    clock: Callable[[], datetime] = utcnow,
) -> list[EndpointHealth]:
    now = clock()
    found = []
    async with UnitOfWork(db, write=False) as uow:
        for endpoint in await uow.endpoints.of_merchant(merchant_id):
            outcomes = await uow.dashboard.recent_outcomes(endpoint.id, window)
            failures = sum(1 for code in outcomes if code is None or not 200 <= code < 300)
            if endpoint.disabled_at is not None:
                state = "disabled"
            elif endpoint.circuit_open_until is not None and endpoint.circuit_open_until > now:
                state = "circuit_open"
            else:
                state = "enabled"
            found.append(EndpointHealth(endpoint, state, len(outcomes), failures))
    return found


async def failing_deliveries(db: Database, merchant_id: str, *, limit: int = 100) -> list[Delivery]:
    """Dead deliveries, and pending ones that have failed at least once, newest first."""
    dead = await list_deliveries(db, merchant_id, status="dead", limit=limit)
    pending = await list_deliveries(db, merchant_id, status="pending", limit=min(limit * 4, 500))
    failing = [d for d in pending.items if d.attempts > 0]
    return sorted([*dead.items, *failing], key=lambda d: d.id, reverse=True)[:limit]


@dataclass(frozen=True)
class ReconciliationView:
    since: datetime
    mismatches: list[Mismatch]


async def reconciliation(
    db: Database,
    providers: Mapping[str, Provider],
    merchant_id: str,
    window: timedelta,
    sla: timedelta,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> ReconciliationView:
    """The sums that disagree for the merchant, as of now (no provider is asked anything;
    claims younger than ``sla`` may still be settling and are left out)."""
    now = clock()
    since = now - window
    mismatches = await compare_sums(db, providers, since, now - sla, merchant_id=merchant_id)
    return ReconciliationView(since, mismatches)
