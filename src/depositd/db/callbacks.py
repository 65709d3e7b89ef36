"""Stored inbound callbacks: the audit record of every request, and the processing queue."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.engine import Database
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

    async def unprocessed(self, received_before: datetime, limit: int) -> list[Unprocessed]:
        """Accepted callbacks not yet processed, received before then, oldest first."""
        c = inbound_callbacks.c
        query = select(c.id, c.provider, c.merchant_id, c.claim, c.attempts).where(
            and_(c.outcome == ACCEPTED, c.processed_at.is_(None), c.received_at < received_before)
        )
        rows = await self._conn.execute(query.order_by(c.received_at).limit(limit))
        return [Unprocessed(r.id, r.provider, r.merchant_id, r.claim, r.attempts) for r in rows]

    async def claims_since(
        self, since: datetime, until: datetime, merchant_id: str | None = None
    ) -> list[Unprocessed]:
        """Every accepted callback received from ``since`` to before ``until`` (for
        ``merchant_id``, if given), in the order received."""
        c = inbound_callbacks.c
        query = select(c.id, c.provider, c.merchant_id, c.claim, c.attempts).where(
            c.outcome == ACCEPTED, c.received_at >= since, c.received_at < until
        )
        if merchant_id is not None:
            query = query.where(c.merchant_id == merchant_id)
        rows = await self._conn.execute(query.order_by(c.received_at, c.id))
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


@dataclass(frozen=True)
class ToStore:
    """A received callback and what became of it: accepted (an event id and a claim) or
    rejected (a code and a reason)."""

    received: Received
    event_id: str | None = None
    claim: dict[str, Any] | None = None
    rejection_code: str | None = None
    rejection: str | None = None


async def store_callbacks(db: Database, items: Sequence[ToStore]) -> list[str | None]:
    """Store a batch in one transaction; for each, the id of the accepted callback it repeats
    (then it is stored as ``replayed``), else None.

    On PostgreSQL the batch is a few set-based statements straight to asyncpg: this is the
    write every provider callback waits for.
    """
    if db.is_sqlite:
        async with db.writer.begin() as conn:
            repository = CallbackRepository(conn)
            originals: list[str | None] = []
            for item in items:
                if item.event_id is None:
                    await repository.add_rejected(
                        item.received, item.rejection_code or "", item.rejection or ""
                    )
                    originals.append(None)
                else:
                    assert item.claim is not None
                    originals.append(
                        await repository.add_accepted(item.received, item.event_id, item.claim)
                    )
            return originals
    pool = await db.driver_pool()
    async with pool.acquire() as conn, conn.transaction():
        accepted = [item for item in items if item.event_id is not None]
        rejected = [item for item in items if item.event_id is None]
        if rejected:
            await conn.execute(
                _PG_INSERT_REJECTED,
                *_pg_received([item.received for item in rejected]),
                [item.rejection_code for item in rejected],
                [item.rejection for item in rejected],
            )
        replays: dict[str, str] = {}
        if accepted:
            received = _pg_received([item.received for item in accepted])
            event_ids = [item.event_id for item in accepted]
            claims = [json.dumps(item.claim) for item in accepted]
            inserted = {r["id"] for r in await conn.fetch(_PG_INSERT_ACCEPTED, *received,
                                                         event_ids, claims)}  # fmt: skip
            repeats = [i for i, item in enumerate(accepted) if item.received.id not in inserted]
            if repeats:
                rows = await conn.fetch(
                    _PG_INSERT_REPLAYED,
                    *_pg_received([accepted[i].received for i in repeats]),
                    [accepted[i].event_id for i in repeats],
                )
                replays = {row["id"]: row["replay_of"] for row in rows}
                if len(replays) != len(repeats):
                    raise RuntimeError("a replayed callback's original is not visible")
        return [replays.get(item.received.id) for item in items]


async def mark_processed(db: Database, outcomes: Sequence[Outcome]) -> list[None]:
    """Mark a batch of callbacks processed: (callback id, deposit id, result, when) each."""
    if db.is_sqlite:
        async with db.writer.begin() as conn:
            repository = CallbackRepository(conn)
            for callback_id, deposit_id, result, now in outcomes:
                await repository.mark_processed(callback_id, deposit_id, result, now)
    else:
        pool = await db.driver_pool()
        async with pool.acquire() as conn:
            await conn.execute(PG_MARK_PROCESSED, *pg_mark_arguments(outcomes))
    return [None] * len(outcomes)


#: a processed callback's outcome: (callback id, deposit id, result, when)
Outcome = tuple[str, str | None, str, datetime]


def pg_mark_arguments(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    """The parameters of ``PG_MARK_PROCESSED`` for these outcomes."""
    return [
        [callback_id for callback_id, _, _, _ in outcomes],
        [deposit_id for _, deposit_id, _, _ in outcomes],
        [result for _, _, result, _ in outcomes],
        [now for _, _, _, now in outcomes],
    ]


def _pg_received(received: Sequence[Received]) -> list[list[Any]]:
    return [
        [r.id for r in received],
        [r.provider for r in received],
        [r.merchant_id for r in received],
        [r.received_at for r in received],
        [r.source_ip for r in received],
        [json.dumps(r.headers) for r in received],
        [r.body for r in received],
        [r.body_bytes for r in received],
    ]


_PG_RECEIVED = """unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[],
    $6::text[], $7::bytea[], $8::int[], $9::text[], $10::text[])
    AS t(id, provider, merchant_id, received_at, source_ip, headers, body, body_bytes, a, b)"""
_PG_COLUMNS = "id, provider, merchant_id, received_at, source_ip, headers, body, body_bytes"
_PG_VALUES = """t.id, t.provider, t.merchant_id, t.received_at, t.source_ip, t.headers::json,
    t.body, t.body_bytes"""
_PG_INSERT_REJECTED = f"""
INSERT INTO inbound_callbacks ({_PG_COLUMNS}, outcome, rejection_code, rejection, attempts)
SELECT {_PG_VALUES}, 'rejected', t.a, t.b, 0 FROM {_PG_RECEIVED}
"""  # noqa: S608 (our own SQL)
# a callback whose event id was accepted before conflicts with that row (or waits for its
# transaction, and then conflicts), and is left out: the caller stores it as a replay
_PG_INSERT_ACCEPTED = f"""
INSERT INTO inbound_callbacks ({_PG_COLUMNS}, outcome, event_id, claim, attempts)
SELECT {_PG_VALUES}, 'accepted', t.a, t.b::json, 0 FROM {_PG_RECEIVED}
ON CONFLICT (provider, event_id) WHERE outcome = 'accepted' DO NOTHING
RETURNING id
"""  # noqa: S608 (our own SQL)
_PG_INSERT_REPLAYED = f"""
INSERT INTO inbound_callbacks ({_PG_COLUMNS}, outcome, event_id, replay_of, attempts)
SELECT {_PG_VALUES}, 'replayed', t.a, original.id, 0
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
    $7::bytea[], $8::int[], $9::text[])
    AS t(id, provider, merchant_id, received_at, source_ip, headers, body, body_bytes, a)
JOIN inbound_callbacks original ON original.provider = t.provider
    AND original.event_id = t.a AND original.outcome = 'accepted'
RETURNING id, replay_of
"""  # noqa: S608 (our own SQL)
PG_MARK_PROCESSED = """
UPDATE inbound_callbacks c SET processed_at = t.processed_at, deposit_id = t.deposit_id,
    result = t.result, attempts = c.attempts + 1
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
    AS t(id, deposit_id, result, processed_at)
WHERE c.id = t.id
"""
