"""Prometheus metrics: counters and histograms kept in this process, and gauges read from the
database at scrape time.

Event-driven figures (callbacks received, deliveries, reorgs, holds) are counted where they
happen, in this process's registry. What is a state rather than an event — deposits by
status, the outbox's depth and oldest age — is read from the database when ``/metrics`` is
scraped, so every process reports the same, true figure. Watchers report their head, cursor
and lag from the process that runs them. With ``serve --processes N`` the counters are those
of whichever process answers the scrape: scrape separate processes (``depositd worker``,
``serve --no-workers`` replicas on their own ports) for complete counts.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork

REGISTRY = CollectorRegistry(auto_describe=True)

CALLBACKS = Counter(
    "depositd_callbacks",
    "Inbound provider callbacks by outcome (accepted, replayed, rejected)",
    ["provider", "outcome"],
    registry=REGISTRY,
)
CALLBACK_REJECTIONS = Counter(
    "depositd_callback_rejections",
    "Rejected inbound callbacks by reason code",
    ["provider", "code"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "depositd_deliveries",
    "Webhook delivery attempts' results (delivered, retrying, dead)",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "depositd_delivery_latency_seconds",
    "From an event's append to its delivery's 2xx",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "depositd_deposit_transitions",
    "Deposit state changes recorded, by the status entered",
    ["status"],
    registry=REGISTRY,
)
HOLDS = Counter(
    "depositd_holds",
    "Deposits held for review, by reason code",
    ["reason"],
    registry=REGISTRY,
)
REORGS = Counter(
    "depositd_reorgs", "Chain reorganisations the watcher undid", ["chain"], registry=REGISTRY
)
RECONCILE_MISMATCHES = Gauge(
    "depositd_reconciliation_mismatches",
    "Sums that disagreed at the last reconciliation",
    registry=REGISTRY,
)
RECONCILE_RECOVERED = Counter(
    "depositd_reconciliation_recovered",
    "Overdue deposits the reconciler learned about from a provider or our node",
    registry=REGISTRY,
)
ALERTS_FIRING = Gauge(
    "depositd_alerts_firing", "Alerts firing now, by name", ["alert"], registry=REGISTRY
)


@dataclass(frozen=True)
class ChainGauge:
    """What a chain's watcher reports, for the scrape."""

    chain: str
    head: int | None
    cursor: int | None
    lag_blocks: int | None
    node_up: bool


@dataclass
class DatabaseFigures:
    """The states read from the database at scrape time."""

    deposits_by_status: dict[str, int] = field(default_factory=dict)
    outbox_depth: int = 0
    outbox_oldest_age_seconds: float = 0.0
    endpoints_disabled: int = 0
    deliveries_dead: int = 0
    deposits_stuck: int = 0


async def read_figures(
    db: Database, stuck_after: timedelta, now: datetime | None = None
) -> DatabaseFigures:
    """``stuck_after``: deposits pending or confirming with no change for this long count
    as stuck."""
    now = now or utcnow()
    async with UnitOfWork(db, write=False) as uow:
        found = await uow.ops.gauges(now - stuck_after)
    oldest = found.pop("outbox_oldest")
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return DatabaseFigures(**found, outbox_oldest_age_seconds=age)


class _Snapshot(Collector):
    def __init__(self, figures: DatabaseFigures, chains: Iterable[ChainGauge]) -> None:
        self.figures, self.chains = figures, list(chains)

    def collect(self) -> Iterable[Metric]:
        states = GaugeMetricFamily(
            "depositd_deposits", "Deposits by current status", labels=["status"]
        )
        for status, count in sorted(self.figures.deposits_by_status.items()):
            states.add_metric([status], count)
        yield states
        yield GaugeMetricFamily(
            "depositd_outbox_depth",
            "Webhook deliveries waiting to go out",
            value=self.figures.outbox_depth,
        )
        yield GaugeMetricFamily(
            "depositd_outbox_oldest_age_seconds",
            "Age of the oldest delivery waiting to go out",
            value=self.figures.outbox_oldest_age_seconds,
        )
        for name, help_text, count in (
            ("endpoints_disabled", "Webhook endpoints disabled", self.figures.endpoints_disabled),
            ("deliveries_dead", "Deliveries that gave up (dead letters)",
             self.figures.deliveries_dead),
            ("deposits_stuck", "Deposits pending or confirming with no change for too long",
             self.figures.deposits_stuck),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"depositd_{name}", help_text, value=count)
        gauges = {
            "head": GaugeMetricFamily("depositd_chain_head", "The node's head", labels=["chain"]),
            "cursor": GaugeMetricFamily(
                "depositd_watcher_cursor", "Highest block scanned", labels=["chain"]
            ),
            "lag": GaugeMetricFamily(
                "depositd_watcher_lag_blocks", "Head minus cursor", labels=["chain"]
            ),
            "up": GaugeMetricFamily(
                "depositd_chain_node_up", "1 if the last call to the node worked", labels=["chain"]
            ),
        }
        for chain in self.chains:
            for name, value in (
                ("head", chain.head),
                ("cursor", chain.cursor),
                ("lag", chain.lag_blocks),
                ("up", int(chain.node_up)),
            ):
                if value is not None:
                    gauges[name].add_metric([chain.chain], value)
        yield from gauges.values()


def exposition(figures: DatabaseFigures, chains: Iterable[ChainGauge]) -> bytes:
    """The text format: this process's counters, then the scrape-time gauges."""
    snapshot = CollectorRegistry(auto_describe=True)
    snapshot.register(_Snapshot(figures, chains))
    return generate_latest(REGISTRY) + generate_latest(snapshot)


def count_recorded(statuses: Iterable[tuple[str, str]]) -> None:
    """Count committed transitions: (status entered, reason code) pairs."""
    # a catch-up round commits thousands: one increment per label, not per transition
    counted = Tally(statuses)
    for (status, reason), count in counted.items():
        TRANSITIONS.labels(status).inc(count)
        if status == "held":
            HOLDS.labels(reason).inc(count)


def set_alerts(firing: Mapping[str, bool]) -> None:
    for name, on in firing.items():
        ALERTS_FIRING.labels(name).set(1 if on else 0)
