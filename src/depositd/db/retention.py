"""Retention's reads and deletes: expired callbacks, attempt logs and the oldest events.

Nothing here touches the ledger, deposits or the audit log. Every delete is bounded (a
batch at a time) and runs in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import (
    deliveries,
    delivery_attempts,
    event_counter,
    events,
    inbound_callbacks,
)

_cb = inbound_callbacks.c
#: a callback is done with once processed, rejected, or a replay (never processed itself)
_CALLBACK_DONE = or_(_cb.outcome != "accepted", _cb.processed_at.is_not(None))


@dataclass(frozen=True)
class EventSpan:
    """The events retention removes next, seqs ``after`` < seq <= ``through``, with their
    deliveries and those deliveries' attempts."""

    after: int
    through: int


@dataclass(frozen=True)
class SpanCounts:
    events: int
    deliveries: int
    attempts: int


def _old_callbacks(cutoff: datetime) -> Any:
    return (_cb.received_at < cutoff, _CALLBACK_DONE)


class RetentionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def count_callbacks(self, cutoff: datetime) -> int:
        stmt = select(func.count()).select_from(inbound_callbacks).where(*_old_callbacks(cutoff))
        return int((await self._conn.execute(stmt)).scalar_one())

    async def purge_callbacks(self, cutoff: datetime, limit: int) -> int:
        """Remove up to ``limit`` of the callbacks received before ``cutoff`` that are done
        with (an accepted one still waiting to be processed stays)."""
        batch = select(_cb.id).where(*_old_callbacks(cutoff)).order_by(_cb.received_at).limit(limit)
        result = await self._conn.execute(delete(inbound_callbacks).where(_cb.id.in_(batch)))
        return int(result.rowcount)

    async def count_attempts(self, cutoff: datetime) -> int:
        stmt = select(func.count()).select_from(delivery_attempts)
        stmt = stmt.where(delivery_attempts.c.created_at < cutoff)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def purge_attempts(self, cutoff: datetime, limit: int) -> int:
        """Remove up to ``limit`` of the attempts logged before ``cutoff``, oldest first."""
        a = delivery_attempts.c
        batch = select(a.id).where(a.created_at < cutoff).order_by(a.id).limit(limit)
        result = await self._conn.execute(delete(delivery_attempts).where(a.id.in_(batch)))
        return int(result.rowcount)

    async def purged_through(self) -> int:
        result = await self._conn.execute(
            select(event_counter.c.purged_through).where(event_counter.c.id == 1)
        )
        return int(result.scalar_one())

    async def expired_events(self, after: int, cutoff: datetime, limit: int) -> int:
        """The end of the run of events after seq ``after`` (at most ``limit``) that were
        created before ``cutoff`` and that no pending delivery needs; ``after`` when the next
        event is not one of them. The run also stops at a seq with no event: one still being
        written."""
        e, d = events.c, deliveries.c
        rows = (
            await self._conn.execute(
                select(e.seq, e.created_at).where(e.seq > after).order_by(e.seq).limit(limit)
            )
        ).all()
        if not rows:
            return after
        needed = set(
            (
                await self._conn.execute(
                    select(d.event_seq)
                    .where(d.event_seq > after, d.event_seq <= rows[-1].seq, d.status == "pending")
                    .distinct()
                )
            ).scalars()
        )
        through = after
        for row in rows:
            if row.seq != through + 1 or row.created_at >= cutoff or row.seq in needed:
                break
            through = row.seq
        return through

    async def count_span(self, span: EventSpan, attempts_cutoff: datetime) -> SpanCounts:
        """What ``purge_span`` would remove; of the attempts, those logged at or after
        ``attempts_cutoff`` (``count_attempts`` counts the older ones)."""
        logged_since = delivery_attempts.c.created_at >= attempts_cutoff
        counted = (
            await self._conn.execute(
                select(
                    select(func.count())
                    .select_from(events)
                    .where(*self._events(span))
                    .scalar_subquery(),
                    select(func.count())
                    .select_from(deliveries)
                    .where(*self._deliveries(span))
                    .scalar_subquery(),
                    select(func.count())
                    .select_from(delivery_attempts)
                    .where(self._attempts(span), logged_since)
                    .scalar_subquery(),
                )
            )
        ).one()
        return SpanCounts(*counted)

    async def purge_span(self, span: EventSpan) -> SpanCounts:
        """Remove the span's events, their deliveries (finished: ``expired_events`` saw none
        pending) and those deliveries' attempts; the event log starts after it from now on."""
        attempts = await self._conn.execute(delete(delivery_attempts).where(self._attempts(span)))
        finished = await self._conn.execute(delete(deliveries).where(*self._deliveries(span)))
        removed = await self._conn.execute(delete(events).where(*self._events(span)))
        return SpanCounts(int(removed.rowcount), int(finished.rowcount), int(attempts.rowcount))

    async def mark_purged_through(self, seq: int) -> None:
        """Call last: every event writer waits on this row until commit."""
        await self._conn.execute(
            update(event_counter).where(event_counter.c.id == 1).values(purged_through=seq)
        )

    @staticmethod
    def _events(span: EventSpan) -> Any:
        return (events.c.seq > span.after, events.c.seq <= span.through)

    @staticmethod
    def _deliveries(span: EventSpan) -> Any:
        # never a pending one: should a replay have queued one since ``expired_events`` looked,
        # its event cannot be deleted under it (the foreign key) and the batch rolls back
        return (
            deliveries.c.event_seq > span.after,
            deliveries.c.event_seq <= span.through,
            deliveries.c.status != "pending",
        )

    @classmethod
    def _attempts(cls, span: EventSpan) -> Any:
        of_span = select(deliveries.c.id).where(*cls._deliveries(span))
        return delivery_attempts.c.delivery_id.in_(of_span)
