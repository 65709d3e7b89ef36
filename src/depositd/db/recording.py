"""The write path of recording observations: one transaction, tuned per engine.

``open_recording`` yields a ``RecordingStore`` whose transaction rolls back unless
``commit()`` is called. On SQLite it runs the SQLAlchemy repositories on the single writer
connection. On PostgreSQL — the scale-out target, where every round trip and every statement's
client-side cost is paid by every deposit — it talks to asyncpg directly with set-based
statements over arrays: one statement locks, one inserts, one updates, and one posts the
ledger, advances the event cursor, appends the events and queues their deliveries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from depositd.db.engine import Database
from depositd.db.repositories import (
    AccountRepository,
    DepositRepository,
    EventRepository,
    deposit_changes,
    deposit_from_row,
    deposit_row,
)
from depositd.domain.deposits import DepositState
from depositd.domain.events import PendingEvent
from depositd.domain.ledger import Entry


class RecordingStore(Protocol):
    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        """Load and row-lock the deposits with these identities, in identity order."""

    async def insert_new(self, new: Sequence[DepositState]) -> set[str]:
        """Insert first sightings; the identities actually inserted (others raced us)."""

    async def update(self, changed: Sequence[DepositState]) -> None:
        """Store the new state of deposits already locked."""

    async def post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        """Post ledger entries, then append events and queue deliveries; the events' seqs.

        Call last: from here the event cursor is locked until commit.
        """

    async def commit(self) -> None: ...


@asynccontextmanager
async def open_recording(db: Database) -> AsyncIterator[RecordingStore]:
    if db.is_sqlite:
        async with db.writer.connect() as conn, conn.begin():
            # leaving without commit() rolls back (conn.begin's context does it)
            yield _SqlAlchemyStore(conn)
        return
    pool = await db.driver_pool()
    async with pool.acquire() as raw:
        transaction = raw.transaction()
        await transaction.start()
        pg = _PostgresStore(raw, transaction)
        try:
            yield pg
        finally:
            if not pg.committed:
                await transaction.rollback()


class _SqlAlchemyStore:
    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._deposits = DepositRepository(conn)
        self._accounts = AccountRepository(conn, sqlite=True)
        self._events = EventRepository(conn)

    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        return await self._deposits.lock(identities)

    async def insert_new(self, new: Sequence[DepositState]) -> set[str]:
        return await self._deposits.insert_new(new)

    async def update(self, changed: Sequence[DepositState]) -> None:
        await self._deposits.update(changed)

    async def post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        await self._accounts.post(postings, now)
        return await self._events.append(events, now)

    async def commit(self) -> None:
        await self._conn.commit()


_LOCK = """
SELECT d.*, u.external_id
FROM deposits d JOIN users u ON u.id = d.user_id
WHERE d.identity = ANY($1::text[])
ORDER BY d.identity
FOR UPDATE OF d
"""

_INSERT = """
INSERT INTO deposits (id, identity, merchant_id, user_id, asset, amount, source, chain,
    tx_hash, log_index, provider, provider_deposit_id, block_number, block_hash, status,
    confirmations, required_confirmations, reason_code, reason_params, version,
    credit_generation, created_at, updated_at)
SELECT id, identity, merchant_id, user_id, asset, amount, source, chain, tx_hash, log_index,
    provider, provider_deposit_id, block_number, block_hash, status, confirmations,
    required_confirmations, reason_code, reason_params::json, version, credit_generation,
    created_at, updated_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[],
    $7::text[], $8::text[], $9::text[], $10::int[], $11::text[], $12::text[], $13::bigint[],
    $14::text[], $15::text[], $16::int[], $17::int[], $18::text[], $19::text[], $20::int[],
    $21::int[], $22::timestamptz[], $23::timestamptz[])
    AS t(id, identity, merchant_id, user_id, asset, amount, source, chain, tx_hash, log_index,
         provider, provider_deposit_id, block_number, block_hash, status, confirmations,
         required_confirmations, reason_code, reason_params, version, credit_generation,
         created_at, updated_at)
ON CONFLICT (identity) DO NOTHING
RETURNING identity
"""
_INSERT_COLUMNS = (
    "id",
    "identity",
    "merchant_id",
    "user_id",
    "asset",
    "amount",
    "source",
    "chain",
    "tx_hash",
    "log_index",
    "provider",
    "provider_deposit_id",
    "block_number",
    "block_hash",
    "status",
    "confirmations",
    "required_confirmations",
    "reason_code",
    "reason_params",
    "version",
    "credit_generation",
    "created_at",
    "updated_at",
)

_UPDATE = """
UPDATE deposits d SET status = t.status, confirmations = t.confirmations,
    required_confirmations = t.required_confirmations, block_hash = t.block_hash,
    block_number = t.block_number, reason_code = t.reason_code,
    reason_params = t.reason_params::json, version = t.version,
    credit_generation = t.credit_generation, updated_at = t.updated_at
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::bigint[],
    $7::text[], $8::text[], $9::int[], $10::int[], $11::timestamptz[])
    AS t(id, status, confirmations, required_confirmations, block_hash, block_number,
         reason_code, reason_params, version, credit_generation, updated_at)
WHERE d.id = t.id
"""
_UPDATE_COLUMNS = (
    "status",
    "confirmations",
    "required_confirmations",
    "block_hash",
    "block_number",
    "reason_code",
    "reason_params",
    "version",
    "credit_generation",
    "updated_at",
)

# Data-modifying CTEs all run to completion whether or not the final SELECT reads them.
_POST_AND_APPEND = """
WITH moved AS (
    INSERT INTO accounts (key, merchant_id, user_id, asset, side, balance)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::numeric[])
    ON CONFLICT (key) DO UPDATE SET balance = accounts.balance + excluded.balance
    RETURNING id, key
), posted AS (
    INSERT INTO ledger_entries (account_id, deposit_id, kind, generation, amount, created_at)
    SELECT moved.id, e.deposit_id, e.kind, e.generation, e.amount, $20
    FROM unnest($7::text[], $8::text[], $9::text[], $10::int[], $11::numeric[])
        AS e(key, deposit_id, kind, generation, amount)
    JOIN moved ON moved.key = e.key
), counter AS (
    UPDATE event_counter SET last_seq = last_seq + $12 WHERE id = 1 RETURNING last_seq
), appended AS (
    INSERT INTO events (seq, id, merchant_id, type, deposit_id, version, data, created_at)
    SELECT counter.last_seq - $12 + e.ord, e.id, e.merchant_id, e.type, e.deposit_id,
           e.version, e.data::json, e.created
    FROM counter, unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::int[],
                         $18::text[], $19::timestamptz[])
        WITH ORDINALITY AS e(id, merchant_id, type, deposit_id, version, data, created, ord)
    RETURNING seq, merchant_id, type
), queued AS (
    INSERT INTO deliveries (endpoint_id, event_seq, status, attempts, next_attempt_at,
                            created_at)
    SELECT DISTINCT endpoints.id, appended.seq, 'pending', 0, $20, $20
    FROM appended
    JOIN endpoints ON endpoints.merchant_id = appended.merchant_id
                  AND endpoints.disabled_at IS NULL
    JOIN endpoint_subscriptions ON endpoint_subscriptions.endpoint_id = endpoints.id
                  AND endpoint_subscriptions.event_type IN (appended.type, '*')
)
SELECT last_seq FROM counter
"""


def _pg_value(column: str, value: Any) -> Any:
    if column in ("amount", "balance"):
        return Decimal(value)
    if column == "reason_params":
        return json.dumps(value)
    return value


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    return [[_pg_value(column, row[column]) for row in rows] for column in columns]


class _PostgresStore:
    def __init__(self, conn: asyncpg.Connection, transaction: Any) -> None:
        self._conn = conn
        self._transaction = transaction
        self.committed = False

    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        rows = await self._conn.fetch(_LOCK, sorted(set(identities)))
        return {row["identity"]: deposit_from_row(row) for row in rows}

    async def insert_new(self, new: Sequence[DepositState]) -> set[str]:
        if not new:
            return set()
        rows = [deposit_row(deposit) for deposit in new]
        inserted = await self._conn.fetch(_INSERT, *_columns(rows, _INSERT_COLUMNS))
        return {row["identity"] for row in inserted}

    async def update(self, changed: Sequence[DepositState]) -> None:
        if not changed:
            return
        rows = [{"id": deposit.id, **deposit_changes(deposit)} for deposit in changed]
        await self._conn.execute(_UPDATE, *_columns(rows, ("id", *_UPDATE_COLUMNS)))

    async def post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        if not events:
            assert not postings, "ledger postings always come with an event"
            return []
        deltas: dict[str, int] = defaultdict(int)
        entry_of: dict[str, Entry] = {}
        for _deposit_id, entry in postings:
            deltas[entry.account.key] += entry.amount
            entry_of[entry.account.key] = entry
        keys = sorted(deltas)  # a fixed lock order keeps concurrent posters deadlock-free
        accounts = [entry_of[key].account for key in keys]
        last = await self._conn.fetchval(
            _POST_AND_APPEND,
            keys,
            [a.merchant_id for a in accounts],
            [a.user_id for a in accounts],
            [a.asset for a in accounts],
            [a.side.value for a in accounts],
            [Decimal(deltas[key]) for key in keys],
            [entry.account.key for _, entry in postings],
            [deposit_id for deposit_id, _ in postings],
            [entry.kind.value for _, entry in postings],
            [entry.generation for _, entry in postings],
            [Decimal(entry.amount) for _, entry in postings],
            len(events),
            [event.id for event in events],
            [event.merchant_id for event in events],
            [event.type for event in events],
            [event.deposit_id for event in events],
            [event.version for event in events],
            [json.dumps(event.data) for event in events],
            [event.created_at for event in events],
            now,
        )
        return list(range(last - len(events) + 1, last + 1))

    async def commit(self) -> None:
        await self._transaction.commit()
        self.committed = True
