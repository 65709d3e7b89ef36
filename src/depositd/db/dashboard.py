"""Read-only figures the dashboard shows: per-minute counts, outbox depth, a deposit's ledger
entries, endpoints' recent outcomes. Every query is bounded to one merchant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import (
    accounts,
    deliveries,
    delivery_attempts,
    deposits,
    endpoints,
    ledger_entries,
)


@dataclass(frozen=True)
class MinuteLatency:
    #: ``YYYY-MM-DD HH:MM`` (UTC)
    minute: str
    attempts: int
    mean_ms: float
    max_ms: int


@dataclass(frozen=True)
class EntryRow:
    id: int
    account_key: str
    asset: str
    side: str
    kind: str
    generation: int
    amount: int
    created_at: datetime


class DashboardRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    def _minute(self, column: Any) -> Any:
        """The UTC minute of a timestamp column as ``YYYY-MM-DD HH:MM`` text."""
        if self._conn.dialect.name == "sqlite":
            return func.substr(column, 1, 16)  # stored as naive UTC text
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD HH24:MI")

    async def deposits_per_minute(self, merchant_id: str, since: datetime) -> dict[str, int]:
        minute = self._minute(deposits.c.created_at).label("minute")
        result = await self._conn.execute(
            select(minute, func.count())
            .where(deposits.c.merchant_id == merchant_id, deposits.c.created_at >= since)
            .group_by(minute)
        )
        return {row[0]: row[1] for row in result}

    async def latency_per_minute(self, merchant_id: str, since: datetime) -> list[MinuteLatency]:
        """Delivery attempts to the merchant's endpoints: how many and how long, a minute."""
        minute = self._minute(delivery_attempts.c.created_at).label("minute")
        result = await self._conn.execute(
            select(
                minute,
                func.count(),
                func.avg(delivery_attempts.c.latency_ms),
                func.max(delivery_attempts.c.latency_ms),
            )
            .select_from(
                delivery_attempts.join(
                    deliveries, deliveries.c.id == delivery_attempts.c.delivery_id
                ).join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            )
            .where(endpoints.c.merchant_id == merchant_id, delivery_attempts.c.created_at >= since)
            .group_by(minute)
            .order_by(minute)
        )
        return [MinuteLatency(row[0], row[1], float(row[2]), int(row[3])) for row in result]

    async def outbox_depth(self, merchant_id: str, marks: Sequence[datetime]) -> list[int]:
        """At each mark, how many of the merchant's deliveries were queued and not finished
        (delivered or dead) — one statement for all marks."""
        if not marks:
            return []
        c = deliveries.c
        counts = [
            func.coalesce(
                func.sum(
                    case(
                        (
                            and_(
                                c.created_at <= t, or_(c.finished_at.is_(None), c.finished_at > t)
                            ),
                            1,
                        ),
                        else_=0,
                    )
                ),
                0,
            )
            for t in marks
        ]
        row = (
            await self._conn.execute(
                select(*counts)
                .select_from(deliveries.join(endpoints, endpoints.c.id == c.endpoint_id))
                .where(
                    endpoints.c.merchant_id == merchant_id,
                    c.created_at <= max(marks),
                    or_(c.finished_at.is_(None), c.finished_at > min(marks)),
                )
            )
        ).one()
        return [int(value) for value in row]

    async def entries_of_deposit(self, merchant_id: str, deposit_id: str) -> list[EntryRow]:
        """Every ledger entry a deposit caused, both sides of each posting, oldest first."""
        result = await self._conn.execute(
            select(
                ledger_entries.c.id,
                accounts.c.key.label("account_key"),
                accounts.c.asset,
                accounts.c.side,
                ledger_entries.c.kind,
                ledger_entries.c.generation,
                ledger_entries.c.amount,
                ledger_entries.c.created_at,
            )
            .join(accounts, accounts.c.id == ledger_entries.c.account_id)
            .where(ledger_entries.c.deposit_id == deposit_id, accounts.c.merchant_id == merchant_id)
            .order_by(ledger_entries.c.id)
        )
        return [EntryRow(**row._mapping) for row in result]

    async def recent_outcomes(self, endpoint_id: str, limit: int) -> list[int | None]:
        """The HTTP status of the endpoint's latest ``limit`` requests (None: no answer)."""
        result = await self._conn.execute(
            select(delivery_attempts.c.status_code)
            .join(deliveries, deliveries.c.id == delivery_attempts.c.delivery_id)
            .where(deliveries.c.endpoint_id == endpoint_id)
            .order_by(delivery_attempts.c.id.desc())
            .limit(limit)
        )
        return list(result.scalars())
