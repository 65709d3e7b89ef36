"""Stored alerts: open incidents, their resolution, and whether the sinks were told."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import alerts


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
