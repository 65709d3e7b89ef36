"""The write path of recording observations: one transaction, tuned per engine.

``open_recording`` yields a ``RecordingStore`` whose transaction rolls back unless
``commit()`` is called. On SQLite it runs SQLAlchemy Core statements on the single writer
connection. On PostgreSQL — the scale-out target, where every round trip and every statement's
client-side cost is paid by every deposit — it talks to asyncpg directly with set-based
statements over arrays: one statement locks, one inserts, one updates, and one posts the
ledger, advances the event cursor, appends the events and queues their deliveries.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy.engine import Connection

from depositd.db.audit import append_sync, pg_append
from depositd.db.callbacks import PG_MARK_PROCESSED, Outcome, pg_mark_arguments
from depositd.db.engine import Database
from depositd.db.repositories import (
    QUEUE_DELIVERIES,
    Owner,
    deposit_changes,
    deposit_from_row,
    deposit_row,
)
from depositd.db.transient import RetryTransaction
from depositd.domain.audit import AuditEntry, AuditRecord
from depositd.domain.deposits import ChainRef, DepositState
from depositd.domain.events import PendingEvent
from depositd.domain.ledger import Entry
from depositd.domain.limits import LimitCheck
from depositd.jsontext import dump_json

T = TypeVar("T")


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

    async def limit_check(
        self, user_ids: Collection[str], assets: Collection[str], since: datetime
    ) -> LimitCheck:
        """These users' KYC levels and what was credited to them of these assets since
        ``since``; the users stay locked until commit, so concurrent credits queue."""

    async def screening(self, user_ids: Collection[str], assets: Collection[str]) -> Screening:
        """What anomaly detection knows of these users and assets; the users stay locked
        until commit, so concurrent credits of one user queue."""

    async def save_screening(self, screening: Screening, now: datetime) -> None:
        """Store the histories and first deposits ``screening`` changed."""

    async def mark_callbacks(self, outcomes: Sequence[Outcome]) -> None:
        """Mark the stored callbacks whose claims this transaction records as processed."""

    async def append_audit(self, entry: AuditEntry, now: datetime) -> AuditRecord:
        """Append to the audit log in this transaction (an operator's decision recorded here)."""

    async def commit(self) -> None: ...


@dataclass
class Screening:
    """Anomaly detection's state for one recording batch, as JSON documents
    (``UserHistory.to_json``, ``FirstDeposits.to_json``)."""

    #: each user's KYC level (a structuring run stays under their limit)
    levels: dict[str, int]
    #: (user id, asset) → history; users without one are not listed
    histories: dict[tuple[str, str], dict[str, Any]]
    #: asset → its recent first deposits
    first: dict[str, dict[str, Any]]
    #: what the batch changed, to be saved
    changed_histories: set[tuple[str, str]] = field(default_factory=set)
    changed_first: set[str] = field(default_factory=set)

    def history_rows(self) -> list[tuple[str, str, str]]:
        return [(user, asset, dump_json(self.histories[user, asset]))
                for user, asset in sorted(self.changed_histories)]  # fmt: skip

    def first_rows(self) -> list[tuple[str, str]]:
        return [(asset, dump_json(self.first[asset])) for asset in sorted(self.changed_first)]


@asynccontextmanager
async def open_recording(db: Database) -> AsyncIterator[RecordingStore]:
    if db.is_sqlite:
        async with db.recorder_lock:
            store = _SqliteStore(db)
            await store.open()
            try:
                yield store
            finally:
                await store.close()
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


#: who owns a deposit: ``("user", merchant id, external id)`` or ``("address", chain,
#: lower-case address)``
OwnerKey = tuple[str, str, str]


async def find_owners(db: Database, keys: Collection[OwnerKey]) -> dict[OwnerKey, Owner]:
    """The users these keys name (unknown ones are left out), one query per merchant or chain.

    Runs on the recording path's own connections, outside its transactions: a block's
    thousands of look-ups cost less there than through the general query layer.
    """
    queries: dict[tuple[str, str], list[str]] = defaultdict(list)
    for kind, scope, value in keys:
        queries[kind, scope].append(value)
    if db.is_sqlite:
        async with db.recorder_lock:
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(
                db.recorder_thread, _sqlite_owner_rows, db, list(queries.items())
            )
    else:
        pool = await db.driver_pool()
        rows = []
        async with pool.acquire() as conn:
            for (kind, scope), values in queries.items():
                sql = _PG_OWNERS_BY_USER if kind == "user" else _PG_OWNERS_BY_ADDRESS
                rows += [(kind, scope, *row) for row in await conn.fetch(sql, scope, values)]
    return {
        (kind, scope, value): Owner(merchant_id, user_id, external_id)
        for kind, scope, value, merchant_id, user_id, external_id in rows
    }


def _sqlite_owner_rows(
    db: Database, queries: list[tuple[tuple[str, str], list[str]]]
) -> list[tuple[Any, ...]]:
    raw = db.recorder_engine.raw_connection()
    try:
        cursor = raw.cursor()
        rows = []
        for (kind, scope), values in queries:
            sql = _SQLITE_OWNERS_BY_USER if kind == "user" else _SQLITE_OWNERS_BY_ADDRESS
            cursor.execute(sql, (scope, dump_json(values)))
            rows += [(kind, scope, *row) for row in cursor.fetchall()]
        return rows
    finally:
        raw.close()


_SQLITE_OWNERS_BY_USER = """
SELECT external_id, merchant_id, id, external_id FROM users
WHERE merchant_id = ? AND external_id IN (SELECT value FROM json_each(?))
"""
# addresses are stored lower-case; the (chain, address) key answers each one
_SQLITE_OWNERS_BY_ADDRESS = """
SELECT a.address, u.merchant_id, u.id, u.external_id
FROM addresses a JOIN users u ON u.id = a.user_id
WHERE a.chain = ? AND a.address IN (SELECT value FROM json_each(?))
"""
_PG_OWNERS_BY_USER = """
SELECT external_id, merchant_id, id, external_id FROM users
WHERE merchant_id = $1 AND external_id = ANY($2::text[])
"""
_PG_OWNERS_BY_ADDRESS = """
SELECT a.address, u.merchant_id, u.id, u.external_id
FROM addresses a JOIN users u ON u.id = a.user_id
WHERE a.chain = $1 AND a.address = ANY($2::text[])
"""


class _SqliteStore:
    """SQLite: the recording connection, in a ``BEGIN IMMEDIATE`` transaction.

    Every step runs in the database's one recording thread (``Database.recorder_thread``),
    whole: one thread hop per step. The statements go to the sqlite3 connection itself with
    rows as tuples already in SQLite's storage form (``sqlite_value``): SQLAlchemy's per-row
    parameter processing cost twice what SQLite spent executing them.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Connection | None = None

    async def _in_thread(self, step: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db.recorder_thread, partial(step, *args))

    async def open(self) -> None:
        self._conn = await self._in_thread(self._open)

    def _open(self) -> Connection:
        conn = self._db.recorder_engine.connect()
        conn.begin()
        return conn

    async def close(self) -> None:
        await self._in_thread(self._close)

    def _close(self) -> None:
        if self._conn is not None:
            if self._conn.in_transaction():
                self._conn.rollback()
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Connection:
        assert self._conn is not None, "open() first"
        return self._conn

    def _cursor(self) -> sqlite3.Cursor:
        raw = self.conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        return raw.cursor()

    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        return await self._in_thread(self._lock, sorted(set(identities)))

    def _lock(self, identities: list[str]) -> dict[str, DepositState]:
        # the write lock is already ours (BEGIN IMMEDIATE): reading is locking
        cursor = self._cursor()
        cursor.execute(_SQLITE_LOCK, (dump_json(identities),))
        names = [column[0] for column in cursor.description]
        found = {}
        for values in cursor:
            row = dict(zip(names, values, strict=True))
            row["created_at"] = _sqlite_datetime(row["created_at"])
            row["updated_at"] = _sqlite_datetime(row["updated_at"])
            found[row["identity"]] = deposit_from_row(row)
        return found

    async def insert_new(self, new: Sequence[DepositState]) -> set[str]:
        if not new:
            return set()
        rows = [_sqlite_new_deposit(deposit) for deposit in new]
        await self._in_thread(self._executemany, _SQLITE_INSERT, rows)
        # no other writer can have inserted one since ``lock`` read them: the write lock has
        # been ours throughout (and a duplicate would fail the insert, not vanish)
        return {deposit.ref.key for deposit in new}

    async def update(self, changed: Sequence[DepositState]) -> None:
        if changed:
            rows = [(*_sqlite_changes(deposit), deposit.id) for deposit in changed]
            await self._in_thread(self._executemany, _SQLITE_UPDATE, rows)

    def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._cursor().executemany(sql, rows)

    async def post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        return await self._in_thread(self._post_and_append, postings, events, now)

    def _post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        cursor = self._cursor()
        stamp = _sqlite_stamp(now)
        if postings:
            self._post(cursor, postings, stamp)
        if not events:
            return []
        cursor.execute(_SQLITE_ADVANCE_COUNTER, (len(events),))
        (last,) = cursor.fetchone()
        cursor.fetchall()  # finish the statement
        first = last - len(events) + 1
        cursor.executemany(
            _SQLITE_APPEND,
            [
                (
                    first + offset,
                    event.id,
                    event.merchant_id,
                    event.type,
                    event.deposit_id,
                    event.version,
                    dump_json(event.data),
                    _sqlite_stamp(event.created_at),
                )
                for offset, event in enumerate(events)
            ],
        )
        self.conn.execute(QUEUE_DELIVERIES, {"first": first, "last": last, "now": now})
        return list(range(first, last + 1))

    def _post(
        self, cursor: sqlite3.Cursor, postings: Sequence[tuple[str, Entry]], stamp: str
    ) -> None:
        keys, deltas, entry_of = _balance_moves(postings)
        rows = []
        for key in keys:
            account = entry_of[key].account
            balance = str(deltas[key]) if account.cached else None
            rows.append((key, account.merchant_id, account.user_id, account.asset,
                         account.side.value, balance))  # fmt: skip
        cursor.executemany(_SQLITE_UPSERT_ACCOUNT, rows)
        cursor.execute(_SQLITE_ACCOUNT_IDS, (dump_json(keys),))
        ids = dict(cursor.fetchall())
        cursor.executemany(
            _SQLITE_POST,
            [
                (
                    ids[entry.account.key],
                    deposit_id,
                    entry.kind.value,
                    entry.generation,
                    str(entry.amount),
                    stamp,
                )
                for deposit_id, entry in postings
            ],
        )

    async def limit_check(
        self, user_ids: Collection[str], assets: Collection[str], since: datetime
    ) -> LimitCheck:
        return await self._in_thread(self._limit_check, user_ids, assets, since)

    def _limit_check(
        self, user_ids: Collection[str], assets: Collection[str], since: datetime
    ) -> LimitCheck:
        # the write lock is ours already: nobody else credits these users meanwhile
        cursor = self._cursor()
        users = dump_json(sorted(user_ids))
        cursor.execute(_SQLITE_KYC_LEVELS, (users,))
        levels = dict(cursor.fetchall())
        cursor.execute(_SQLITE_CREDITED_SINCE, (users, dump_json(sorted(assets)),
                                                _sqlite_stamp(since)))  # fmt: skip
        return LimitCheck(levels, _sum_credited(cursor.fetchall()))

    async def screening(self, user_ids: Collection[str], assets: Collection[str]) -> Screening:
        return await self._in_thread(self._screening, user_ids, assets)

    def _screening(self, user_ids: Collection[str], assets: Collection[str]) -> Screening:
        # the write lock is ours already: nobody else credits these users meanwhile
        cursor = self._cursor()
        users, codes = dump_json(sorted(user_ids)), dump_json(sorted(assets))
        cursor.execute(_SQLITE_KYC_LEVELS, (users,))
        levels = dict(cursor.fetchall())
        cursor.execute(_SQLITE_HISTORIES, (users, codes))
        histories = {(user, asset): json.loads(doc) for user, asset, doc in cursor.fetchall()}
        cursor.execute(_SQLITE_FIRST_DEPOSITS, (codes,))
        first = {asset: json.loads(doc) for asset, doc in cursor.fetchall()}
        return Screening(levels, histories, first)

    async def save_screening(self, screening: Screening, now: datetime) -> None:
        stamp = _sqlite_stamp(now)
        histories = [(*row, stamp) for row in screening.history_rows()]
        firsts = [(*row, stamp) for row in screening.first_rows()]
        await self._in_thread(self._executemany, _SQLITE_SAVE_HISTORY, histories)
        await self._in_thread(self._executemany, _SQLITE_SAVE_FIRST_DEPOSITS, firsts)

    async def append_audit(self, entry: AuditEntry, now: datetime) -> AuditRecord:
        return await self._in_thread(append_sync, self.conn, entry, now)

    async def mark_callbacks(self, outcomes: Sequence[Outcome]) -> None:
        rows = [(_sqlite_stamp(now), deposit_id, result, callback_id)
                for callback_id, deposit_id, result, now in outcomes]  # fmt: skip
        await self._in_thread(self._executemany, _SQLITE_MARK_PROCESSED, rows)

    async def commit(self) -> None:
        await self._in_thread(self.conn.commit)


_SQLITE_KYC_LEVELS = "SELECT id, kyc_level FROM users WHERE id IN (SELECT value FROM json_each(?))"
_SQLITE_CREDITED_SINCE = """
SELECT user_id, asset, amount FROM deposits
WHERE user_id IN (SELECT value FROM json_each(?)) AND asset IN (SELECT value FROM json_each(?))
  AND status = 'credited' AND updated_at >= ?
"""
_PG_KYC_LEVELS = "SELECT id, kyc_level FROM users WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"
_PG_CREDITED_SINCE = """
SELECT user_id, asset, amount FROM deposits
WHERE user_id = ANY($1::text[]) AND asset = ANY($2::text[])
  AND status = 'credited' AND updated_at >= $3
"""

_SQLITE_HISTORIES = """
SELECT user_id, asset, history FROM anomaly_histories
WHERE user_id IN (SELECT value FROM json_each(?)) AND asset IN (SELECT value FROM json_each(?))
"""
_SQLITE_FIRST_DEPOSITS = """
SELECT asset, data FROM anomaly_first_deposits WHERE asset IN (SELECT value FROM json_each(?))
"""
_SQLITE_SAVE_HISTORY = """
INSERT INTO anomaly_histories (user_id, asset, history, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (user_id, asset) DO UPDATE SET history = excluded.history,
  updated_at = excluded.updated_at
"""
_SQLITE_SAVE_FIRST_DEPOSITS = """
INSERT INTO anomaly_first_deposits (asset, data, updated_at) VALUES (?, ?, ?)
ON CONFLICT (asset) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
"""
_PG_HISTORIES = """
SELECT user_id, asset, history::text AS history FROM anomaly_histories
WHERE user_id = ANY($1::text[]) AND asset = ANY($2::text[])
"""
_PG_FIRST_DEPOSITS = """
SELECT asset, data::text AS data FROM anomaly_first_deposits WHERE asset = ANY($1::text[])
"""
_PG_SAVE_HISTORY = """
INSERT INTO anomaly_histories (user_id, asset, history, updated_at)
SELECT u, a, h::json, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS t(u, a, h)
ON CONFLICT (user_id, asset) DO UPDATE SET history = excluded.history,
  updated_at = excluded.updated_at
"""
_PG_SAVE_FIRST_DEPOSITS = """
INSERT INTO anomaly_first_deposits (asset, data, updated_at)
SELECT a, d::json, $3 FROM unnest($1::text[], $2::text[]) AS t(a, d)
ON CONFLICT (asset) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at
"""


def _transposed(rows: Sequence[tuple[str, ...]], width: int) -> list[list[str]]:
    """Rows as columns: the arrays an ``unnest`` statement takes."""
    return [[row[i] for row in rows] for i in range(width)]


def _sum_credited(rows: Iterable[Sequence[Any]]) -> dict[tuple[str, str], int]:
    used: dict[tuple[str, str], int] = defaultdict(int)
    for user_id, asset, amount in rows:
        used[user_id, asset] += int(amount)
    return dict(used)


# The SQLite rows are built by hand, in the form SQLAlchemy's column types store (see
# ``db.tables``): amounts as decimal text, timestamps as naive UTC text with microseconds,
# JSON as text. Generic per-value conversion cost a third of a block's recording.


def _sqlite_new_deposit(deposit: DepositState) -> tuple[Any, ...]:
    """A new ``deposits`` row, in ``_INSERT_COLUMNS`` order."""
    ref = deposit.ref
    if isinstance(ref, ChainRef):
        source, chain, log_index, provider, provider_id = (
            f"chain:{ref.chain}", ref.chain, ref.log_index, None, None
        )  # fmt: skip
    else:
        source, chain, log_index, provider, provider_id = (
            f"provider:{ref.provider}", None, None, ref.provider, ref.deposit_id
        )  # fmt: skip
    return (
        deposit.id,
        ref.key,
        deposit.merchant_id,
        deposit.user_id,
        deposit.asset,
        str(deposit.amount),
        source,
        chain,
        deposit.tx_hash,
        log_index,
        provider,
        provider_id,
        deposit.block_number,
        deposit.block_hash,
        deposit.status.value,
        deposit.confirmations,
        deposit.required_confirmations,
        deposit.reason.code,
        dump_json(deposit.reason.params),
        deposit.version,
        deposit.credit_generation,
        _sqlite_stamp(deposit.created_at),
        _sqlite_stamp(deposit.updated_at),
    )


def _sqlite_changes(deposit: DepositState) -> tuple[Any, ...]:
    """The changing columns of ``deposits``, in ``_UPDATE_COLUMNS`` order."""
    return (
        deposit.status.value,
        deposit.confirmations,
        deposit.required_confirmations,
        deposit.block_hash,
        deposit.block_number,
        deposit.reason.code,
        dump_json(deposit.reason.params),
        deposit.version,
        deposit.credit_generation,
        _sqlite_stamp(deposit.updated_at),
    )


@lru_cache(maxsize=64)
def _sqlite_stamp(value: datetime) -> str:
    # a batch stamps most rows with the same few instants
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_datetime(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


_SQLITE_LOCK = """
SELECT d.*, u.external_id
FROM deposits d JOIN users u ON u.id = d.user_id
WHERE d.identity IN (SELECT value FROM json_each(?))
"""


def _balance_moves(
    postings: Sequence[tuple[str, Entry]],
) -> tuple[list[str], dict[str, int], dict[str, Entry]]:
    """Account keys in lock order, the net change of each, and an entry naming each account.

    Every writer upserts accounts in key order, which keeps concurrent posters deadlock-free.
    """
    deltas: dict[str, int] = defaultdict(int)
    entry_of: dict[str, Entry] = {}
    for _deposit_id, entry in postings:
        deltas[entry.account.key] += entry.amount
        entry_of[entry.account.key] = entry
    return sorted(deltas), deltas, entry_of


# locks a batch of deposits by identity (named for the test of its plan)
LOCK = """
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

_SQLITE_INSERT = (
    f"INSERT INTO deposits ({', '.join(_INSERT_COLUMNS)}) "  # noqa: S608 (our column names)
    f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)
_SQLITE_UPDATE = "UPDATE deposits SET {} WHERE id = ?".format(  # noqa: S608 (our column names)
    ", ".join(f"{name} = ?" for name in _UPDATE_COLUMNS)
)
# exact decimal-text addition (see Amount and db.engine); an account without a running
# balance has NULL there, which big_add keeps
_SQLITE_UPSERT_ACCOUNT = """
INSERT INTO accounts (key, merchant_id, user_id, asset, side, balance)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET balance = big_add(accounts.balance, excluded.balance)
"""
_SQLITE_ACCOUNT_IDS = "SELECT key, id FROM accounts WHERE key IN (SELECT value FROM json_each(?))"
_SQLITE_POST = """
INSERT INTO ledger_entries (account_id, deposit_id, kind, generation, amount, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
_SQLITE_MARK_PROCESSED = """
UPDATE inbound_callbacks SET processed_at = ?, deposit_id = ?, result = ?, attempts = attempts + 1
WHERE id = ?
"""
_SQLITE_ADVANCE_COUNTER = (
    "UPDATE event_counter SET last_seq = last_seq + ? WHERE id = 1 RETURNING last_seq"
)
_SQLITE_APPEND = """
INSERT INTO events (seq, id, merchant_id, type, deposit_id, version, data, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

# Data-modifying CTEs all run to completion whether or not the final SELECT reads them; all
# parts see the snapshot taken when the statement starts.
_POST_AND_APPEND = """
WITH moved AS (
    INSERT INTO accounts (key, merchant_id, user_id, asset, side, balance)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::numeric[])
    ON CONFLICT (key) DO UPDATE SET balance = accounts.balance + excluded.balance
    RETURNING id, key
), opened AS (
    INSERT INTO accounts (key, merchant_id, user_id, asset, side, balance)
    SELECT *, NULL FROM unnest($21::text[], $22::text[], $23::text[], $24::text[],
                               $25::text[])
    ON CONFLICT (key) DO NOTHING
    RETURNING id, key
), known AS (
    SELECT id, key FROM moved
    UNION ALL SELECT id, key FROM opened
    UNION ALL SELECT id, key FROM accounts WHERE key = ANY($21::text[])
), posted AS (
    INSERT INTO ledger_entries (account_id, deposit_id, kind, generation, amount, created_at)
    SELECT known.id, e.deposit_id, e.kind, e.generation, e.amount, $20
    FROM unnest($7::text[], $8::text[], $9::text[], $10::int[], $11::numeric[])
        AS e(key, deposit_id, kind, generation, amount)
    JOIN known ON known.key = e.key
    RETURNING 1
), counted AS (
    SELECT count(*) AS posted FROM posted
), counter AS (
    -- the ledger work is done before the counter row is locked (the qual runs first): the
    -- lock that orders all writers is held only for the events, the outbox and the commit
    UPDATE event_counter SET last_seq = last_seq + $12
    WHERE id = 1 AND (SELECT posted FROM counted) >= 0
    RETURNING last_seq
), appended AS (
    INSERT INTO events (seq, id, merchant_id, type, deposit_id, version, data, created_at)
    SELECT counter.last_seq - $12 + e.ord, e.id, e.merchant_id, e.type, e.deposit_id,
           e.version, e.data::json, e.created
    FROM counter, unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::int[],
                         $18::text[], $19::timestamptz[])
        WITH ORDINALITY AS e(id, merchant_id, type, deposit_id, version, data, created, ord)
    RETURNING seq, merchant_id, type, deposit_id
), queued AS (
    INSERT INTO deliveries (endpoint_id, event_seq, status, attempts, next_attempt_at,
                            created_at, ordering_key)
    SELECT DISTINCT endpoints.id, appended.seq, 'pending', 0, $20, $20, appended.deposit_id
    FROM appended
    JOIN endpoints ON endpoints.merchant_id = appended.merchant_id
                  AND endpoints.disabled_at IS NULL
    JOIN endpoint_subscriptions ON endpoint_subscriptions.endpoint_id = endpoints.id
                  AND endpoint_subscriptions.event_type IN (appended.type, '*')
)
SELECT last_seq, (SELECT posted FROM counted) AS posted FROM counter
"""


def _pg_value(column: str, value: Any) -> Any:
    if column in ("amount", "balance"):
        return Decimal(value)
    if column == "reason_params":
        return dump_json(value)
    return value


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    return [[_pg_value(column, row[column]) for row in rows] for column in columns]


class _PostgresStore:
    def __init__(self, conn: asyncpg.Connection, transaction: Any) -> None:
        self._conn = conn
        self._transaction = transaction
        self.committed = False

    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        rows = await self._conn.fetch(LOCK, sorted(set(identities)))
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

    async def limit_check(
        self, user_ids: Collection[str], assets: Collection[str], since: datetime
    ) -> LimitCheck:
        users = sorted(user_ids)
        levels = {
            row["id"]: row["kyc_level"] for row in await self._conn.fetch(_PG_KYC_LEVELS, users)
        }
        rows = await self._conn.fetch(_PG_CREDITED_SINCE, users, sorted(assets), since)
        return LimitCheck(levels, _sum_credited(rows))

    async def post_and_append(
        self,
        postings: Sequence[tuple[str, Entry]],
        events: Sequence[PendingEvent],
        now: datetime,
    ) -> list[int]:
        if not events:
            assert not postings, "ledger postings always come with an event"
            return []
        keys, deltas, entry_of = _balance_moves(postings)
        running = [key for key in keys if entry_of[key].account.cached]
        plain = [entry_of[key].account for key in keys if not entry_of[key].account.cached]
        moved = [entry_of[key].account for key in running]
        row = await self._conn.fetchrow(
            _POST_AND_APPEND,
            running,
            [a.merchant_id for a in moved],
            [a.user_id for a in moved],
            [a.asset for a in moved],
            [a.side.value for a in moved],
            [Decimal(deltas[key]) for key in running],
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
            [dump_json(event.data) for event in events],
            [event.created_at for event in events],
            now,
            [a.key for a in plain],
            [a.merchant_id for a in plain],
            [a.user_id for a in plain],
            [a.asset for a in plain],
            [a.side.value for a in plain],
        )
        if row["posted"] != len(postings):
            # an account without a running balance was opened by a concurrent transaction
            # after our snapshot: its row was invisible to us, so start again
            raise RetryTransaction("an account was opened concurrently")
        last: int = row["last_seq"]
        return list(range(last - len(events) + 1, last + 1))

    async def screening(self, user_ids: Collection[str], assets: Collection[str]) -> Screening:
        users, codes = sorted(user_ids), sorted(assets)
        levels = {
            row["id"]: row["kyc_level"] for row in await self._conn.fetch(_PG_KYC_LEVELS, users)
        }
        histories = {
            (row["user_id"], row["asset"]): json.loads(row["history"])
            for row in await self._conn.fetch(_PG_HISTORIES, users, codes)
        }
        first = {
            row["asset"]: json.loads(row["data"])
            for row in await self._conn.fetch(_PG_FIRST_DEPOSITS, codes)
        }
        return Screening(levels, histories, first)

    async def save_screening(self, screening: Screening, now: datetime) -> None:
        histories = screening.history_rows()
        if histories:
            await self._conn.execute(_PG_SAVE_HISTORY, *_transposed(histories, 3), now)
        firsts = screening.first_rows()
        if firsts:
            await self._conn.execute(_PG_SAVE_FIRST_DEPOSITS, *_transposed(firsts, 2), now)

    async def append_audit(self, entry: AuditEntry, now: datetime) -> AuditRecord:
        return await pg_append(self._conn, entry, now)

    async def mark_callbacks(self, outcomes: Sequence[Outcome]) -> None:
        await self._conn.execute(PG_MARK_PROCESSED, *pg_mark_arguments(outcomes))

    async def commit(self) -> None:
        await self._transaction.commit()
        self.committed = True
