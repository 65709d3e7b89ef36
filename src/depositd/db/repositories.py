"""Repositories: every SQL statement depositd runs, grouped by what it reads and writes."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, literal, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import (
    Amount,
    accounts,
    addresses,
    api_keys,
    deliveries,
    deposits,
    endpoint_subscriptions,
    endpoints,
    event_counter,
    events,
    ledger_entries,
    merchants,
    users,
)
from depositd.domain.deposits import ChainRef, DepositState, DepositStatus, ProviderRef
from depositd.domain.events import PendingEvent
from depositd.domain.ledger import Entry
from depositd.domain.messages import Message


def _insert(conn: AsyncConnection, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT in the connection's dialect."""
    return (sqlite_insert if conn.dialect.name == "sqlite" else pg_insert)(table)


class MerchantRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, merchant_id: str, name: str, now: datetime) -> None:
        await self._conn.execute(
            merchants.insert().values(id=merchant_id, name=name, created_at=now)
        )

    async def get(self, merchant_id: str) -> Row[Any] | None:
        result = await self._conn.execute(select(merchants).where(merchants.c.id == merchant_id))
        return result.first()

    async def all(self) -> Sequence[Row[Any]]:
        result = await self._conn.execute(select(merchants).order_by(merchants.c.created_at))
        return result.all()

    async def add_api_key(
        self, key_id: str, merchant_id: str, label: str, prefix: str, key_hash: str, now: datetime
    ) -> None:
        await self._conn.execute(
            api_keys.insert().values(
                id=key_id,
                merchant_id=merchant_id,
                label=label,
                prefix=prefix,
                key_hash=key_hash,
                created_at=now,
            )
        )

    async def merchant_for_key(self, key_hash: str) -> str | None:
        result = await self._conn.execute(
            select(api_keys.c.merchant_id).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
            )
        )
        return result.scalar_one_or_none()

    async def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        """Revoke the key; False if there is no such key or it was already revoked."""
        result = await self._conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return bool(result.rowcount)


@dataclass(frozen=True)
class Owner:
    merchant_id: str
    user_id: str
    external_id: str


class UserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, user_id: str, merchant_id: str, external_id: str, now: datetime) -> bool:
        """Insert the user; False if the merchant already has one with that external id."""
        stmt = (
            _insert(self._conn, users)
            .values(id=user_id, merchant_id=merchant_id, external_id=external_id, created_at=now)
            .on_conflict_do_nothing(index_elements=["merchant_id", "external_id"])
        )
        result = await self._conn.execute(stmt)
        return bool(result.rowcount)

    async def get(self, merchant_id: str, external_id: str) -> Row[Any] | None:
        result = await self._conn.execute(
            select(users).where(
                users.c.merchant_id == merchant_id, users.c.external_id == external_id
            )
        )
        return result.first()

    async def owners_by_external_id(
        self, merchant_id: str, external_ids: Iterable[str]
    ) -> dict[str, Owner]:
        result = await self._conn.execute(
            select(users.c.id, users.c.external_id).where(
                users.c.merchant_id == merchant_id, users.c.external_id.in_(set(external_ids))
            )
        )
        return {row.external_id: Owner(merchant_id, row.id, row.external_id) for row in result}

    async def add_address(
        self,
        address_id: str,
        user_id: str,
        merchant_id: str,
        chain: str,
        address: str,
        now: datetime,
    ) -> None:
        await self._conn.execute(
            addresses.insert().values(
                id=address_id,
                user_id=user_id,
                merchant_id=merchant_id,
                chain=chain,
                address=address.lower(),
                created_at=now,
            )
        )

    async def owners_by_address(
        self, chain_addresses: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Owner]:
        wanted = {(chain, address.lower()) for chain, address in chain_addresses}
        result = await self._conn.execute(
            select(
                addresses.c.chain,
                addresses.c.address,
                users.c.merchant_id,
                users.c.id,
                users.c.external_id,
            )
            .join(users, users.c.id == addresses.c.user_id)
            .where(tuple_(addresses.c.chain, addresses.c.address).in_(wanted))
        )
        return {
            (row.chain, row.address): Owner(row.merchant_id, row.id, row.external_id)
            for row in result
        }


def deposit_from_row(row: Mapping[Any, Any]) -> DepositState:
    """A deposit from a row of ``deposits`` joined with the user's ``external_id``."""
    ref: ChainRef | ProviderRef
    if row["chain"] is not None:
        ref = ChainRef(row["chain"], row["tx_hash"], row["log_index"])
    else:
        ref = ProviderRef(row["merchant_id"], row["provider"], row["provider_deposit_id"])
    params = row["reason_params"]
    return DepositState(
        id=row["id"],
        ref=ref,
        merchant_id=row["merchant_id"],
        user_id=row["user_id"],
        user_external_id=row["external_id"],
        asset=row["asset"],
        amount=int(row["amount"]),
        status=DepositStatus(row["status"]),
        confirmations=row["confirmations"],
        required_confirmations=row["required_confirmations"],
        block_hash=row["block_hash"],
        block_number=row["block_number"],
        tx_hash=row["tx_hash"],
        version=row["version"],
        credit_generation=row["credit_generation"],
        reason=Message(
            row["reason_code"], json.loads(params) if isinstance(params, str) else params
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def deposit_row(deposit: DepositState) -> dict[str, Any]:
    """Every column of a new ``deposits`` row."""
    ref = deposit.ref
    return {
        "id": deposit.id,
        "identity": ref.key,
        "merchant_id": deposit.merchant_id,
        "user_id": deposit.user_id,
        "asset": deposit.asset,
        "amount": deposit.amount,
        "source": f"chain:{ref.chain}" if isinstance(ref, ChainRef) else f"provider:{ref.provider}",
        "chain": ref.chain if isinstance(ref, ChainRef) else None,
        "tx_hash": deposit.tx_hash,
        "log_index": ref.log_index if isinstance(ref, ChainRef) else None,
        "provider": None if isinstance(ref, ChainRef) else ref.provider,
        "provider_deposit_id": None if isinstance(ref, ChainRef) else ref.deposit_id,
        "created_at": deposit.created_at,
        **deposit_changes(deposit),
    }


def deposit_changes(deposit: DepositState) -> dict[str, Any]:
    return {
        "status": deposit.status.value,
        "confirmations": deposit.confirmations,
        "required_confirmations": deposit.required_confirmations,
        "block_hash": deposit.block_hash,
        "block_number": deposit.block_number,
        "reason_code": deposit.reason.code,
        "reason_params": dict(deposit.reason.params),
        "version": deposit.version,
        "credit_generation": deposit.credit_generation,
        "updated_at": deposit.updated_at,
    }


_DEPOSIT_WITH_USER = select(deposits, users.c.external_id).join(
    users, users.c.id == deposits.c.user_id
)


@dataclass(frozen=True)
class DepositFilter:
    merchant_id: str
    status: str | None = None
    user_id: str | None = None
    asset: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class DepositRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock(self, identities: Iterable[str]) -> dict[str, DepositState]:
        """Load and row-lock the deposits with these identities (in a fixed order)."""
        wanted = sorted(set(identities))
        stmt = (
            _DEPOSIT_WITH_USER.where(deposits.c.identity.in_(wanted))
            .order_by(deposits.c.identity)
            .with_for_update(of=deposits)
        )
        result = await self._conn.execute(stmt)
        return {row.identity: deposit_from_row(row._mapping) for row in result}

    async def insert_new(self, new: Sequence[DepositState]) -> set[str]:
        """Insert first sightings; returns the identities inserted (others raced us)."""
        if not new:
            return set()
        stmt = (
            _insert(self._conn, deposits)
            .on_conflict_do_nothing(index_elements=["identity"])
            .returning(deposits.c.identity)
        )
        result = await self._conn.execute(stmt, [deposit_row(deposit) for deposit in new])
        return set(result.scalars().all())

    async def update(self, changed: Sequence[DepositState]) -> None:
        if not changed:
            return
        stmt = (
            update(deposits)
            .where(deposits.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in deposit_changes(changed[0])})
        )
        await self._conn.execute(
            stmt, [{"b_id": deposit.id, **deposit_changes(deposit)} for deposit in changed]
        )

    async def get(self, merchant_id: str, deposit_id: str) -> DepositState | None:
        result = await self._conn.execute(
            _DEPOSIT_WITH_USER.where(
                deposits.c.id == deposit_id, deposits.c.merchant_id == merchant_id
            )
        )
        row = result.first()
        return None if row is None else deposit_from_row(row._mapping)

    async def page(
        self, where: DepositFilter, before_id: str | None, limit: int
    ) -> list[DepositState]:
        """Newest first; ``before_id`` continues a listing after its last id."""
        stmt = _DEPOSIT_WITH_USER.where(deposits.c.merchant_id == where.merchant_id)
        if where.status is not None:
            stmt = stmt.where(deposits.c.status == where.status)
        if where.user_id is not None:
            stmt = stmt.where(deposits.c.user_id == where.user_id)
        if where.asset is not None:
            stmt = stmt.where(deposits.c.asset == where.asset)
        if where.created_from is not None:
            stmt = stmt.where(deposits.c.created_at >= where.created_from)
        if where.created_to is not None:
            stmt = stmt.where(deposits.c.created_at < where.created_to)
        if before_id is not None:
            stmt = stmt.where(deposits.c.id < before_id)
        result = await self._conn.execute(stmt.order_by(deposits.c.id.desc()).limit(limit))
        return [deposit_from_row(row._mapping) for row in result]


@dataclass(frozen=True)
class Balance:
    asset: str
    side: str
    balance: int


@dataclass(frozen=True)
class LedgerRecord:
    id: int
    user_id: str
    external_id: str
    asset: str
    side: str
    kind: str
    amount: int
    deposit_id: str
    created_at: datetime


@dataclass(frozen=True)
class AccountAudit:
    key: str
    cached: int
    summed: int


_UPSERT_ACCOUNTS_SQLITE = (
    sqlite_insert(accounts)
    .on_conflict_do_update(
        index_elements=["key"],
        set_={
            # exact decimal-text addition; see Amount and db.engine
            "balance": func.big_add(
                accounts.c.balance, sqlite_insert(accounts).excluded.balance, type_=Amount()
            )
        },
    )
    .returning(accounts.c.id, accounts.c.key, sort_by_parameter_order=True)
)

#: balances and ledger entries for PostgreSQL in one statement (see AccountRepository.post)
_POST_PG = text("""
WITH moved AS (
    INSERT INTO accounts (key, merchant_id, user_id, asset, side, balance)
    SELECT * FROM unnest(
        CAST(:keys AS text[]), CAST(:merchants AS text[]), CAST(:users AS text[]),
        CAST(:assets AS text[]), CAST(:sides AS text[]), CAST(:deltas AS numeric[])
    )
    ON CONFLICT (key) DO UPDATE SET balance = accounts.balance + excluded.balance
    RETURNING id, key
)
INSERT INTO ledger_entries (account_id, deposit_id, kind, generation, amount, created_at)
SELECT moved.id, e.deposit_id, e.kind, e.generation, e.amount, CAST(:now AS timestamptz)
FROM unnest(
    CAST(:e_keys AS text[]), CAST(:e_deposits AS text[]), CAST(:e_kinds AS text[]),
    CAST(:e_generations AS int[]), CAST(:e_amounts AS numeric[])
) AS e(key, deposit_id, kind, generation, amount)
JOIN moved ON moved.key = e.key
""")


class AccountRepository:
    def __init__(self, conn: AsyncConnection, *, sqlite: bool) -> None:
        self._conn = conn
        self._sqlite = sqlite

    async def post(self, postings: Sequence[tuple[str, Entry]], now: datetime) -> None:
        """Append ``(deposit_id, entry)`` rows and move each account's cached balance.

        Accounts are upserted in key order, a fixed lock order that keeps concurrent posters
        free of deadlocks.
        """
        if not postings:
            return
        deltas: dict[str, int] = defaultdict(int)
        account_of: dict[str, Entry] = {}
        for _deposit_id, entry in postings:
            deltas[entry.account.key] += entry.amount
            account_of[entry.account.key] = entry
        keys = sorted(deltas)
        if self._sqlite:
            await self._post_sqlite(keys, deltas, account_of, postings, now)
            return
        # PostgreSQL: one round trip for the balances and the entries together
        await self._conn.execute(
            _POST_PG,
            {
                "keys": keys,
                "merchants": [account_of[k].account.merchant_id for k in keys],
                "users": [account_of[k].account.user_id for k in keys],
                "assets": [account_of[k].account.asset for k in keys],
                "sides": [account_of[k].account.side.value for k in keys],
                "deltas": [Decimal(deltas[k]) for k in keys],
                "e_keys": [entry.account.key for _, entry in postings],
                "e_deposits": [deposit_id for deposit_id, _ in postings],
                "e_kinds": [entry.kind.value for _, entry in postings],
                "e_generations": [entry.generation for _, entry in postings],
                "e_amounts": [Decimal(entry.amount) for _, entry in postings],
                "now": now,
            },
        )

    async def _post_sqlite(
        self,
        keys: list[str],
        deltas: dict[str, int],
        account_of: dict[str, Entry],
        postings: Sequence[tuple[str, Entry]],
        now: datetime,
    ) -> None:
        rows = [
            {
                "key": key,
                "merchant_id": account_of[key].account.merchant_id,
                "user_id": account_of[key].account.user_id,
                "asset": account_of[key].account.asset,
                "side": account_of[key].account.side.value,
                "balance": deltas[key],
            }
            for key in keys
        ]
        result = await self._conn.execute(_UPSERT_ACCOUNTS_SQLITE, rows)
        ids = {row.key: row.id for row in result}
        await self._conn.execute(
            ledger_entries.insert(),
            [
                {
                    "account_id": ids[entry.account.key],
                    "deposit_id": deposit_id,
                    "kind": entry.kind.value,
                    "generation": entry.generation,
                    "amount": entry.amount,
                    "created_at": now,
                }
                for deposit_id, entry in postings
            ],
        )

    async def balances(self, user_id: str) -> list[Balance]:
        result = await self._conn.execute(
            select(accounts.c.asset, accounts.c.side, accounts.c.balance)
            .where(accounts.c.user_id == user_id)
            .order_by(accounts.c.asset, accounts.c.side)
        )
        return [Balance(row.asset, row.side, row.balance) for row in result]

    async def records(
        self,
        merchant_id: str,
        user_id: str | None,
        asset: str | None,
        before_id: int | None,
        limit: int,
    ) -> list[LedgerRecord]:
        """The users' side of the ledger, newest first."""
        stmt = (
            select(
                ledger_entries.c.id,
                ledger_entries.c.kind,
                ledger_entries.c.amount,
                ledger_entries.c.deposit_id,
                ledger_entries.c.created_at,
                accounts.c.asset,
                accounts.c.side,
                users.c.id.label("user_id"),
                users.c.external_id,
            )
            .join(accounts, accounts.c.id == ledger_entries.c.account_id)
            .join(users, users.c.id == accounts.c.user_id)
            .where(accounts.c.merchant_id == merchant_id)
        )
        if user_id is not None:
            stmt = stmt.where(accounts.c.user_id == user_id)
        if asset is not None:
            stmt = stmt.where(accounts.c.asset == asset)
        if before_id is not None:
            stmt = stmt.where(ledger_entries.c.id < before_id)
        result = await self._conn.execute(stmt.order_by(ledger_entries.c.id.desc()).limit(limit))
        return [
            LedgerRecord(
                row.id,
                row.user_id,
                row.external_id,
                row.asset,
                row.side,
                row.kind,
                row.amount,
                row.deposit_id,
                row.created_at,
            )
            for row in result
        ]

    async def audit(self) -> list[AccountAudit]:
        """Every account's cached balance next to the sum of its entries (summed exactly)."""
        result = await self._conn.execute(
            select(accounts.c.id, accounts.c.key, accounts.c.balance).order_by(accounts.c.id)
        )
        cached = {row.id: (row.key, row.balance) for row in result}
        sums: dict[int, int] = defaultdict(int)
        entries = await self._conn.execute(
            select(ledger_entries.c.account_id, ledger_entries.c.amount)
        )
        for row in entries:
            sums[row.account_id] += row.amount
        return [
            AccountAudit(key, balance, sums[account_id])
            for account_id, (key, balance) in cached.items()
        ]

    async def unbalanced_postings(self) -> list[tuple[str, str, int]]:
        """(deposit, kind, generation) groups whose entries do not sum to zero."""
        result = await self._conn.execute(
            select(
                ledger_entries.c.deposit_id,
                ledger_entries.c.kind,
                ledger_entries.c.generation,
                ledger_entries.c.amount,
            )
        )
        sums: dict[tuple[str, str, int], int] = defaultdict(int)
        for row in result:
            sums[(row.deposit_id, row.kind, row.generation)] += row.amount
        return [group for group, total in sums.items() if total != 0]


_ADVANCE_COUNTER = (
    update(event_counter)
    .where(event_counter.c.id == 1)
    .values(last_seq=event_counter.c.last_seq + bindparam("n"))
    .returning(event_counter.c.last_seq)
)

#: one outbox row per (event, enabled endpoint of its merchant subscribed to its type or *)
_QUEUE_DELIVERIES = deliveries.insert().from_select(
    ["endpoint_id", "event_seq", "status", "attempts", "next_attempt_at", "created_at"],
    select(
        endpoints.c.id,
        events.c.seq,
        literal("pending"),
        literal(0),
        bindparam("now", type_=deliveries.c.next_attempt_at.type),
        bindparam("now", type_=deliveries.c.created_at.type),
    )
    .distinct()
    .select_from(events)
    .join(
        endpoints,
        and_(endpoints.c.merchant_id == events.c.merchant_id, endpoints.c.disabled_at.is_(None)),
    )
    .join(
        endpoint_subscriptions,
        and_(
            endpoint_subscriptions.c.endpoint_id == endpoints.c.id,
            or_(
                endpoint_subscriptions.c.event_type == events.c.type,
                endpoint_subscriptions.c.event_type == "*",
            ),
        ),
    )
    .where(events.c.seq.between(bindparam("first"), bindparam("last"))),
)

#: the same three steps for PostgreSQL as one statement (see EventRepository.append)
_APPEND_EVENTS_PG = text("""
WITH counter AS (
    UPDATE event_counter SET last_seq = last_seq + :n WHERE id = 1 RETURNING last_seq
), appended AS (
    INSERT INTO events (seq, id, merchant_id, type, deposit_id, version, data, created_at)
    SELECT counter.last_seq - :n + e.ord, e.id, e.merchant_id, e.type, e.deposit_id,
           e.version, e.data::json, e.created
    FROM counter, unnest(
        CAST(:ids AS text[]), CAST(:merchants AS text[]), CAST(:types AS text[]),
        CAST(:deposits AS text[]), CAST(:versions AS int[]), CAST(:datas AS text[]),
        CAST(:created AS timestamptz[])
    ) WITH ORDINALITY AS e(id, merchant_id, type, deposit_id, version, data, created, ord)
    RETURNING seq, merchant_id, type
), queued AS (
    INSERT INTO deliveries (endpoint_id, event_seq, status, attempts, next_attempt_at,
                            created_at)
    SELECT DISTINCT endpoints.id, appended.seq, 'pending', 0,
           CAST(:now AS timestamptz), CAST(:now AS timestamptz)
    FROM appended
    JOIN endpoints ON endpoints.merchant_id = appended.merchant_id
                  AND endpoints.disabled_at IS NULL
    JOIN endpoint_subscriptions ON endpoint_subscriptions.endpoint_id = endpoints.id
                  AND endpoint_subscriptions.event_type IN (appended.type, '*')
)
SELECT last_seq FROM counter
""")


class EventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, pending: Sequence[PendingEvent], now: datetime) -> list[int]:
        """Give the events the next ``seq`` numbers, store them, and queue their deliveries.

        The counter row stays locked until commit, so events become visible in ``seq`` order
        and a reader paging with ``after=<seq>`` never skips one committed late. Call this
        last in a unit of work: the lock is held from here to commit.
        """
        if not pending:
            return []
        if self._conn.dialect.name != "sqlite":
            # PostgreSQL: counter, events and outbox rows in one round trip
            result = await self._conn.execute(
                _APPEND_EVENTS_PG,
                {
                    "n": len(pending),
                    "ids": [event.id for event in pending],
                    "merchants": [event.merchant_id for event in pending],
                    "types": [event.type for event in pending],
                    "deposits": [event.deposit_id for event in pending],
                    "versions": [event.version for event in pending],
                    "datas": [json.dumps(event.data) for event in pending],
                    "created": [event.created_at for event in pending],
                    "now": now,
                },
            )
            last = result.scalar_one()
            return list(range(last - len(pending) + 1, last + 1))
        result = await self._conn.execute(_ADVANCE_COUNTER, {"n": len(pending)})
        last = result.scalar_one()
        first = last - len(pending) + 1
        await self._conn.execute(
            events.insert(),
            [
                {
                    "seq": first + offset,
                    "id": event.id,
                    "merchant_id": event.merchant_id,
                    "type": event.type,
                    "deposit_id": event.deposit_id,
                    "version": event.version,
                    "data": event.data,
                    "created_at": event.created_at,
                }
                for offset, event in enumerate(pending)
            ],
        )
        await self._conn.execute(_QUEUE_DELIVERIES, {"first": first, "last": last, "now": now})
        return list(range(first, last + 1))

    async def after(self, merchant_id: str, after: int, limit: int) -> Sequence[Row[Any]]:
        result = await self._conn.execute(
            select(events)
            .where(events.c.merchant_id == merchant_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        return result.all()

    async def for_deposit(self, deposit_id: str) -> Sequence[Row[Any]]:
        result = await self._conn.execute(
            select(events).where(events.c.deposit_id == deposit_id).order_by(events.c.version)
        )
        return result.all()

    async def all_seqs(self) -> list[int]:
        result = await self._conn.execute(select(events.c.seq).order_by(events.c.seq))
        return list(result.scalars())


class EndpointRepository:
    """Webhook endpoints and their outbox; the full API arrives with outbound callbacks."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        endpoint_id: str,
        merchant_id: str,
        url: str,
        event_types: Iterable[str],
        now: datetime,
    ) -> None:
        await self._conn.execute(
            endpoints.insert().values(
                id=endpoint_id, merchant_id=merchant_id, url=url, created_at=now
            )
        )
        await self._conn.execute(
            endpoint_subscriptions.insert(),
            [{"endpoint_id": endpoint_id, "event_type": t} for t in sorted(set(event_types))],
        )

    async def deliveries_for(self, endpoint_id: str) -> list[tuple[int, str]]:
        """(event seq, event type) of every outbox row queued for the endpoint."""
        result = await self._conn.execute(
            select(deliveries.c.event_seq, events.c.type)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(deliveries.c.endpoint_id == endpoint_id)
            .order_by(deliveries.c.event_seq)
        )
        return [(row.event_seq, row.type) for row in result]
