"""Retention: raw callbacks, delivery attempt logs and old events expire by policy.

What goes (``[retention]``, DESIGN §7): stored inbound callbacks received before their cutoff
that are done with (processed, rejected, or a replay; an accepted one still waiting to be
processed stays); attempts logged before theirs; and the oldest events created before theirs,
with their finished deliveries, in seq order up to the first event a pending delivery still
needs (the event log then starts after the last one removed). The ledger, deposits and the
audit log never expire.

Each batch (at most ``batch_size`` rows of each kind) is one transaction, with one
``retention.purged`` audit record of what it removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from depositd.clock import utcnow
from depositd.config import RetentionConfig
from depositd.db.engine import Database
from depositd.db.retention import EventSpan, SpanCounts
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import AuditEntry

#: the tables retention removes rows from, in the order it reports them
TABLES = ("inbound_callbacks", "delivery_attempts", "deliveries", "events")


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these go."""

    inbound_callbacks: datetime
    delivery_attempts: datetime
    events: datetime

    @classmethod
    def of(cls, policy: RetentionConfig, now: datetime) -> Cutoffs:
        return cls(
            inbound_callbacks=now - timedelta(days=policy.inbound_callbacks_days),
            delivery_attempts=now - timedelta(days=policy.delivery_attempts_days),
            events=now - timedelta(days=policy.events_days),
        )

    def of_table(self, table: str) -> datetime:
        """The cutoff a table's rows go by (deliveries go with their events)."""
        if table == "inbound_callbacks":
            return self.inbound_callbacks
        if table == "delivery_attempts":
            return self.delivery_attempts
        return self.events


@dataclass
class PurgeReport:
    cutoffs: Cutoffs
    dry_run: bool
    #: rows removed (or that would be), by table
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    #: the event log starts after this seq (afterwards, or once purged for real)
    events_purged_through: int = 0

    @property
    def total(self) -> int:
        return sum(self.removed.values())


@dataclass(frozen=True)
class _Batch:
    removed: dict[str, int]
    through: int
    #: every kind came back short of a full batch: nothing more to do
    last: bool


async def purge(
    db: Database,
    policy: RetentionConfig,
    *,
    actor: str,
    dry_run: bool = False,
    clock: Callable[[], datetime] = utcnow,
) -> PurgeReport:
    """Remove what the policy says has expired, a batch at a time; with ``dry_run``, count
    it and remove nothing."""
    report = PurgeReport(Cutoffs.of(policy, clock()), dry_run)
    if dry_run:
        await _count(db, report, policy.batch_size)
        return report
    while True:
        batch = await retry_transient(
            lambda: _purge_batch(db, report.cutoffs, policy.batch_size, actor, clock)
        )
        for table, count in batch.removed.items():
            report.removed[table] += count
        report.events_purged_through = batch.through
        if batch.last:
            return report


async def _purge_batch(
    db: Database, cutoffs: Cutoffs, size: int, actor: str, clock: Callable[[], datetime]
) -> _Batch:
    async with UnitOfWork(db, write=True) as uow:
        attempts = await uow.retention.purge_attempts(cutoffs.delivery_attempts, size)
        callbacks = await uow.retention.purge_callbacks(cutoffs.inbound_callbacks, size)
        after = await uow.retention.purged_through()
        through = await uow.retention.expired_events(after, cutoffs.events, size)
        span = SpanCounts(0, 0, 0)
        if through > after:
            span = await uow.retention.purge_span(EventSpan(after, through))
        removed = {
            "inbound_callbacks": callbacks,
            "delivery_attempts": attempts + span.attempts,
            "deliveries": span.deliveries,
            "events": span.events,
        }
        last = attempts < size and callbacks < size and through - after < size
        if not any(removed.values()):
            return _Batch(removed, through, last)
        details = {
            "removed": removed,
            "cutoffs": {t: cutoffs.of_table(t).isoformat() for t in TABLES},
            "events_purged_through": through,
        }
        await uow.audit.append(AuditEntry(actor, "retention.purged", "retention", None, details),
                               clock())  # fmt: skip
        if through > after:
            await uow.retention.mark_purged_through(through)
        await uow.commit()
    return _Batch(removed, through, last)


async def _count(db: Database, report: PurgeReport, size: int) -> None:
    cutoffs = report.cutoffs
    async with UnitOfWork(db, write=False) as uow:
        report.removed["inbound_callbacks"] = await uow.retention.count_callbacks(
            cutoffs.inbound_callbacks
        )
        report.removed["delivery_attempts"] = await uow.retention.count_attempts(
            cutoffs.delivery_attempts
        )
        after = await uow.retention.purged_through()
        while True:
            through = await uow.retention.expired_events(after, cutoffs.events, size)
            if through == after:
                break
            span = await uow.retention.count_span(
                EventSpan(after, through), cutoffs.delivery_attempts
            )
            report.removed["events"] += span.events
            report.removed["deliveries"] += span.deliveries
            report.removed["delivery_attempts"] += span.attempts
            after = through
        report.events_purged_through = after
