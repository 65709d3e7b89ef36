"""Stored inbound callbacks: the audit record of every request, and the processing queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import inbound_callbacks

#: ``inbound_callbacks.outcome``
ACCEPTED, REJECTED, REPLAYED = "accepted", "rejected", "replayed"
_FIRST_ACCEPTED = inbound_callbacks.c.outcome == ACCEPTED


@dataclass(frozen=True)
class Received:
    """One request to ``/v1/callbacks/<provider>`` as it arrived."""

    id: str
    provider: str
    merchant_id: str | None
    received_at: datetime
    source_ip: str
    headers: dict[str, str]
    body: bytes
    body_bytes: int


@dataclass(frozen=True)
class Unprocessed:
    """An accepted callback whose claim has not been recorded yet."""

    id: str
    provider: str
    merchant_id: str
    claim: dict[str, Any]
    attempts: int


class CallbackRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_rejected(self, received: Received, code: str, reason: str) -> None:
        await self._conn.execute(
            inbound_callbacks.insert().values(
                **_columns(received), outcome=REJECTED, rejection_code=code, rejection=reason
            )
        )

    async def add_accepted(
        self, received: Received, event_id: str, claim: dict[str, Any]
    ) -> str | None:
        """Store an accepted callback; if its event id was accepted before, store it as a
        replay of that one instead and return the original's id (else None).

        The partial unique index on (provider, event_id) of accepted rows decides races: the
        caller retries a transaction that lost one (``retry_transient``), which then finds the
        winner here.
        """
        original = await self._conn.scalar(
            select(inbound_callbacks.c.id).where(
                and_(
                    inbound_callbacks.c.provider == received.provider,
                    inbound_callbacks.c.event_id == event_id,
                    _FIRST_ACCEPTED,
                )
            )
        )
        await self._conn.execute(
            inbound_callbacks.insert().values(
                **_columns(received),
                outcome=ACCEPTED if original is None else REPLAYED,
                event_id=event_id,
                replay_of=original,
                claim=claim if original is None else None,
            )
        )
        return original

    async def unprocessed(
        self, received_before: datetime, limit: int, *, ids: list[str] | None = None
    ) -> list[Unprocessed]:
        """Accepted callbacks not yet processed, oldest first (or just ``ids`` among them)."""
        c = inbound_callbacks.c
        query = select(c.id, c.provider, c.merchant_id, c.claim, c.attempts).where(
            and_(c.outcome == ACCEPTED, c.processed_at.is_(None))
        )
        if ids is not None:
            query = query.where(c.id.in_(ids))
        else:
            query = query.where(c.received_at < received_before)
        rows = await self._conn.execute(query.order_by(c.received_at).limit(limit))
        return [Unprocessed(r.id, r.provider, r.merchant_id, r.claim, r.attempts) for r in rows]

    async def mark_processed(
        self, callback_id: str, deposit_id: str | None, result: str, now: datetime
    ) -> None:
        await self._conn.execute(
            update(inbound_callbacks)
            .where(inbound_callbacks.c.id == callback_id)
            .values(
                processed_at=now,
                deposit_id=deposit_id,
                result=result,
                attempts=inbound_callbacks.c.attempts + 1,
            )
        )

    async def mark_failed(self, callback_id: str, error: str) -> None:
        """Count a failed attempt; the callback stays queued for the next sweep."""
        await self._conn.execute(
            update(inbound_callbacks)
            .where(inbound_callbacks.c.id == callback_id)
            .values(attempts=inbound_callbacks.c.attempts + 1, last_error=error[:300])
        )

    async def get(self, callback_id: str) -> dict[str, Any] | None:
        row = await self._conn.execute(
            select(inbound_callbacks).where(inbound_callbacks.c.id == callback_id)
        )
        found = row.mappings().first()
        return dict(found) if found is not None else None


def _columns(received: Received) -> dict[str, Any]:
    return {
        "id": received.id,
        "provider": received.provider,
        "merchant_id": received.merchant_id,
        "received_at": received.received_at,
        "source_ip": received.source_ip,
        "headers": received.headers,
        "body": received.body,
        "body_bytes": received.body_bytes,
    }
