"""Stored alerts: open incidents, their resolution, and whether the sinks were told."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, TextClause, and_, case, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.repositories import ENDPOINT_DELETED
from depositd.db.tables import (
    DEAD_DELIVERIES,
    HELD_DEPOSITS,
    OPEN_DEPOSITS,
    REVERSALS,
    alerts,
    deliveries,
    delivery_attempts,
    deposits,
    endpoints,
    events,
    inbound_callbacks,
)

#: an endpoint its merchant has not deleted
_LIVE = endpoints.c.disabled_reason.is_distinct_from(ENDPOINT_DELETED)


def _partial(table: Table, condition: str) -> TextClause:
    """A partial index's condition on ``table``, word for word: the index serves the query."""
    return text(f"{table.name}.{condition}")


_STUCK = _partial(deposits, OPEN_DEPOSITS)
_DEAD = _partial(deliveries, DEAD_DELIVERIES)


@dataclass(frozen=True)
class AlertRow:
    id: int
    key: str
    name: str
    subject: str
    merchant_id: str | None
    summary: str
    details: dict[str, Any]
    fired_at: datetime
    resolved_at: datetime | None
    fire_notified_at: datetime | None
    resolve_notified_at: datetime | None

    @property
    def firing(self) -> bool:
        return self.resolved_at is None


_COLUMNS = [getattr(alerts.c, name) for name in AlertRow.__dataclass_fields__]


class AlertRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def open(self, merchant_id: str | None = None) -> list[AlertRow]:
        """The incidents firing now (a merchant's, or all)."""
        stmt = select(*_COLUMNS).where(alerts.c.resolved_at.is_(None))
        if merchant_id is not None:
            stmt = stmt.where(alerts.c.merchant_id == merchant_id)
        rows = await self._conn.execute(stmt.order_by(alerts.c.id))
        return [AlertRow(**row._mapping) for row in rows]

    async def recent(self, limit: int) -> list[AlertRow]:
        rows = await self._conn.execute(select(*_COLUMNS).order_by(alerts.c.id.desc()).limit(limit))
        return [AlertRow(**row._mapping) for row in rows]

    async def fire(
        self,
        key: str,
        name: str,
        subject: str,
        merchant_id: str | None,
        summary: str,
        details: dict[str, Any],
        now: datetime,
    ) -> None:
        await self._conn.execute(
            alerts.insert().values(
                key=key,
                name=name,
                subject=subject,
                merchant_id=merchant_id,
                summary=summary,
                details=details,
                fired_at=now,
            )
        )

    async def resolve(self, ids: Sequence[int], now: datetime) -> None:
        if ids:
            await self._conn.execute(
                update(alerts)
                .where(alerts.c.id.in_(ids), alerts.c.resolved_at.is_(None))
                .values(resolved_at=now)
            )

    async def unannounced(self) -> list[AlertRow]:
        """Firings and resolutions the sinks have not been told of yet, oldest first."""
        stmt = (
            select(*_COLUMNS)
            .where(
                or_(
                    alerts.c.fire_notified_at.is_(None),
                    alerts.c.resolved_at.is_not(None) & alerts.c.resolve_notified_at.is_(None),
                )
            )
            .order_by(alerts.c.id)
        )
        return [AlertRow(**row._mapping) for row in await self._conn.execute(stmt)]

    async def announced(self, row: AlertRow, now: datetime) -> None:
        values = {"fire_notified_at": row.fire_notified_at or now}
        if row.resolved_at is not None:
            values["resolve_notified_at"] = now
        await self._conn.execute(update(alerts).where(alerts.c.id == row.id).values(**values))


class OpsRepository:
    """What the alert rules and the scrape-time gauges read: counts, grouped by what is in
    trouble."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _rows(self, stmt: Select[Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._conn.execute(stmt)]

    async def delivery_attempts(self, since: datetime) -> list[tuple[Any, ...]]:
        """(endpoint id, merchant id, attempts, failed attempts) since then, per endpoint."""
        failed = func.sum(case((delivery_attempts.c.status_code.between(200, 299), 0), else_=1))
        return await self._rows(
            select(endpoints.c.id, endpoints.c.merchant_id, func.count(), failed)
            .select_from(
                delivery_attempts.join(
                    deliveries, deliveries.c.id == delivery_attempts.c.delivery_id
                ).join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            )
            .where(delivery_attempts.c.created_at >= since)
            .group_by(endpoints.c.id, endpoints.c.merchant_id)
        )

    async def callbacks(self, since: datetime) -> list[tuple[Any, ...]]:
        """(provider, callbacks, rejected) received since then, per provider."""
        rejected = func.sum(case((inbound_callbacks.c.outcome == "rejected", 1), else_=0))
        return await self._rows(
            select(inbound_callbacks.c.provider, func.count(), rejected)
            .where(inbound_callbacks.c.received_at >= since)
            .group_by(inbound_callbacks.c.provider)
        )

    async def disabled_endpoints(self) -> list[tuple[Any, ...]]:
        """(endpoint id, merchant id, reason) of every disabled, not deleted, endpoint."""
        stmt = select(endpoints.c.id, endpoints.c.merchant_id, endpoints.c.disabled_reason)
        return await self._rows(stmt.where(endpoints.c.disabled_at.is_not(None), _LIVE))

    async def dead_letters(self, since: datetime) -> list[tuple[Any, ...]]:
        """(endpoint id, merchant id, deliveries) that gave up since then, per endpoint."""
        return await self._rows(
            select(endpoints.c.id, endpoints.c.merchant_id, func.count())
            .select_from(deliveries.join(endpoints, endpoints.c.id == deliveries.c.endpoint_id))
            .where(_DEAD, deliveries.c.finished_at >= since, _LIVE)
            .group_by(endpoints.c.id, endpoints.c.merchant_id)
        )

    async def stuck_deposits(self, before: datetime) -> list[tuple[Any, ...]]:
        """(merchant id, deposits, oldest update) pending or confirming unchanged since
        before then, per merchant."""
        return await self._rows(
            select(deposits.c.merchant_id, func.count(), func.min(deposits.c.updated_at))
            .where(_STUCK, deposits.c.updated_at < before)
            .group_by(deposits.c.merchant_id)
        )

    async def reversals(self, since: datetime) -> list[tuple[Any, ...]]:
        """(merchant id, reversals, one deposit id) since then, per merchant."""
        return await self._rows(
            select(events.c.merchant_id, func.count(), func.max(events.c.deposit_id))
            .where(_partial(events, REVERSALS), events.c.created_at >= since)
            .group_by(events.c.merchant_id)
        )

    async def anomaly_holds(self) -> list[tuple[Any, ...]]:
        """(merchant id, deposits) held by anomaly detection, per merchant."""
        held = and_(_partial(deposits, HELD_DEPOSITS), deposits.c.reason_code.like("anomaly_%"))
        return await self._rows(
            select(deposits.c.merchant_id, func.count())
            .where(held)
            .group_by(deposits.c.merchant_id)
        )

    async def gauges(self, stuck_before: datetime) -> dict[str, Any]:
        """The whole deployment's states at scrape time (``metrics.DatabaseFigures``)."""
        conn = self._conn
        pending = (
            await conn.execute(
                select(func.count(), func.min(deliveries.c.created_at)).where(
                    deliveries.c.status == "pending"
                )
            )
        ).one()
        by_status = await conn.execute(
            select(deposits.c.status, func.count()).group_by(deposits.c.status)
        )
        dead = select(func.count()).select_from(deliveries).where(_DEAD)
        return {
            "deposits_by_status": {status: count for status, count in by_status},
            "outbox_depth": int(pending[0]),
            "outbox_oldest": pending[1],  # aware: min() keeps the column's type
            "endpoints_disabled": int(
                await conn.scalar(
                    select(func.count()).where(endpoints.c.disabled_at.is_not(None), _LIVE)
                )
                or 0
            ),
            "deliveries_dead": int(await conn.scalar(dead) or 0),
            "deposits_stuck": int(
                await conn.scalar(
                    select(func.count()).where(_STUCK, deposits.c.updated_at < stuck_before)
                )
                or 0
            ),
        }
