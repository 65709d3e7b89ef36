"""Repositories: every SQL statement depositd runs, grouped by what it reads and writes."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Row,
    Select,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.tables import (
    accounts,
    addresses,
    api_keys,
    chain_blocks,
    deliveries,
    deposit_orders,
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
from depositd.domain.messages import Message
from depositd.domain.orders import AttributedDeposit, DepositOrder, OrderMethod, Payment


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

    async def get(self, merchant_id: str, *, lock: bool = False) -> Row[Any] | None:
        """The merchant; ``lock`` holds its row until commit (serialising work per merchant)."""
        stmt = select(merchants).where(merchants.c.id == merchant_id)
        result = await self._conn.execute(stmt.with_for_update() if lock else stmt)
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

    async def set_xpub(self, merchant_id: str, xpub: str) -> bool:
        result = await self._conn.execute(
            update(merchants).where(merchants.c.id == merchant_id).values(xpub=xpub)
        )
        return bool(result.rowcount)

    async def key_holder(self, key_hash: str) -> Row[Any] | None:
        """The active key with this hash: its ``merchant_id`` and ``id``."""
        result = await self._conn.execute(
            select(api_keys.c.merchant_id, api_keys.c.id).where(
                api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
            )
        )
        return cast(Row[Any] | None, result.one_or_none())

    async def revoke_api_key(self, key_id: str, now: datetime) -> str | None:
        """Revoke the key: its merchant, or None if there is no such key or it was already
        revoked."""
        result = await self._conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(api_keys.c.merchant_id)
        )
        merchant_id: str | None = result.scalar_one_or_none()
        return merchant_id


class AddressTaken(Exception):
    """An address row clashed with a unique key (a concurrent allocation won the race)."""


@dataclass(frozen=True, slots=True)
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

    async def add_address(
        self,
        address_id: str,
        user_id: str,
        merchant_id: str,
        chain: str,
        address: str,
        now: datetime,
        derivation_index: int | None = None,
    ) -> None:
        """Raises ``AddressTaken`` if the address, the user's chain or the index is in use."""
        try:
            await self._insert_address(
                address_id, user_id, merchant_id, chain, address, now, derivation_index
            )
        except IntegrityError as exc:
            raise AddressTaken(f"{chain} address for user {user_id} collides") from exc

    async def _insert_address(
        self,
        address_id: str,
        user_id: str,
        merchant_id: str,
        chain: str,
        address: str,
        now: datetime,
        derivation_index: int | None,
    ) -> None:
        await self._conn.execute(
            addresses.insert().values(
                id=address_id,
                user_id=user_id,
                merchant_id=merchant_id,
                chain=chain,
                address=address.lower(),
                derivation_index=derivation_index,
                created_at=now,
            )
        )

    async def addresses_of(self, user_id: str) -> Sequence[Row[Any]]:
        result = await self._conn.execute(
            select(addresses).where(addresses.c.user_id == user_id).order_by(addresses.c.chain)
        )
        return result.all()

    async def next_derivation_index(self, merchant_id: str, chain: str) -> int:
        """One past the highest index the merchant ever used on the chain (never reused)."""
        result = await self._conn.execute(
            select(func.max(addresses.c.derivation_index)).where(
                addresses.c.merchant_id == merchant_id, addresses.c.chain == chain
            )
        )
        highest = result.scalar_one_or_none()
        return 0 if highest is None else int(highest) + 1


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


DEPOSIT_WITH_USER = select(deposits, users.c.external_id).join(
    users, users.c.id == deposits.c.user_id
)


@dataclass(frozen=True)
class DepositFilter:
    merchant_id: str
    status: str | None = None
    #: the merchant's id for the user
    external_id: str | None = None
    asset: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


class DepositRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, merchant_id: str, deposit_id: str) -> DepositState | None:
        result = await self._conn.execute(
            DEPOSIT_WITH_USER.where(
                deposits.c.id == deposit_id, deposits.c.merchant_id == merchant_id
            )
        )
        row = result.first()
        return None if row is None else deposit_from_row(row._mapping)

    async def overdue_from_provider(
        self, merchant_id: str, provider: str, changed_before: datetime, limit: int
    ) -> list[DepositState]:
        """A provider's deposits still pending or confirming, unchanged since before then."""
        result = await self._conn.execute(
            DEPOSIT_WITH_USER.where(
                deposits.c.merchant_id == merchant_id,
                deposits.c.provider == provider,
                deposits.c.status.in_(["pending", "confirming"]),
                deposits.c.updated_at < changed_before,
            )
            .order_by(deposits.c.updated_at)
            .limit(limit)
        )
        return [deposit_from_row(row._mapping) for row in result]

    async def from_provider(
        self, merchant_id: str, provider: str, provider_ids: Sequence[str]
    ) -> dict[str, DepositState]:
        """A provider's deposits by the provider's ids (the ones we have)."""
        found: dict[str, DepositState] = {}
        for start in range(0, len(provider_ids), 500):
            result = await self._conn.execute(
                DEPOSIT_WITH_USER.where(
                    deposits.c.merchant_id == merchant_id,
                    deposits.c.provider == provider,
                    deposits.c.provider_deposit_id.in_(provider_ids[start : start + 500]),
                )
            )
            for row in result:
                found[row.provider_deposit_id] = deposit_from_row(row._mapping)
        return found

    async def page(
        self, where: DepositFilter, before_id: str | None, limit: int
    ) -> list[DepositState]:
        """Newest first; ``before_id`` continues a listing after its last id."""
        stmt = DEPOSIT_WITH_USER.where(deposits.c.merchant_id == where.merchant_id)
        if where.status is not None:
            stmt = stmt.where(deposits.c.status == where.status)
        if where.external_id is not None:
            stmt = stmt.where(users.c.external_id == where.external_id)
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
    #: the running balance, or None for an account that keeps none
    cached: int | None
    summed: int


class AccountRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

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
        external_id: str | None,
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
        if external_id is not None:
            stmt = stmt.where(users.c.external_id == external_id)
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

    async def audit(self, merchant_id: str | None = None) -> list[AccountAudit]:
        """Every account's cached balance next to the sum of its entries (summed exactly);
        with ``merchant_id``, only that merchant's accounts."""
        query = select(accounts.c.id, accounts.c.key, accounts.c.balance)
        summed = select(ledger_entries.c.account_id, ledger_entries.c.amount)
        if merchant_id is not None:
            query = query.where(accounts.c.merchant_id == merchant_id)
            summed = summed.join(accounts, accounts.c.id == ledger_entries.c.account_id).where(
                accounts.c.merchant_id == merchant_id
            )
        result = await self._conn.execute(query.order_by(accounts.c.id))
        cached = {row.id: (row.key, row.balance) for row in result}
        sums: dict[int, int] = defaultdict(int)
        entries = await self._conn.execute(summed)
        for row in entries:
            sums[row.account_id] += row.amount
        return [
            AccountAudit(key, balance, sums[account_id])
            for account_id, (key, balance) in cached.items()
        ]

    async def unbalanced_postings(
        self, merchant_id: str | None = None
    ) -> list[tuple[str, str, int]]:
        """(deposit, kind, generation) groups whose entries do not sum to zero; with
        ``merchant_id``, of that merchant's deposits only."""
        query = select(
            ledger_entries.c.deposit_id,
            ledger_entries.c.kind,
            ledger_entries.c.generation,
            ledger_entries.c.amount,
        )
        if merchant_id is not None:
            query = query.join(deposits, deposits.c.id == ledger_entries.c.deposit_id).where(
                deposits.c.merchant_id == merchant_id
            )
        result = await self._conn.execute(query)
        sums: dict[tuple[str, str, int], int] = defaultdict(int)
        for row in result:
            sums[(row.deposit_id, row.kind, row.generation)] += row.amount
        return [group for group, total in sums.items() if total != 0]


def event_rows(first_seq: int, pending: Sequence[PendingEvent]) -> list[dict[str, Any]]:
    """``events`` rows for ``pending``, numbered from ``first_seq``."""
    return [
        {
            "seq": first_seq + offset,
            "id": event.id,
            "merchant_id": event.merchant_id,
            "type": event.type,
            "deposit_id": event.deposit_id,
            "version": event.version,
            "data": event.data,
            "created_at": event.created_at,
        }
        for offset, event in enumerate(pending)
    ]


#: hands out the next ``n`` seqs; its row lock orders event writers until they commit
ADVANCE_EVENT_COUNTER = (
    update(event_counter)
    .where(event_counter.c.id == 1)
    .values(last_seq=event_counter.c.last_seq + bindparam("n"))
    .returning(event_counter.c.last_seq)
)

#: one outbox row per (event, enabled endpoint of its merchant subscribed to its type or *)
QUEUE_DELIVERIES = deliveries.insert().from_select(
    [
        "endpoint_id",
        "event_seq",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "ordering_key",
    ],
    select(
        endpoints.c.id,
        events.c.seq,
        literal("pending"),
        literal(0),
        bindparam("now", type_=deliveries.c.next_attempt_at.type),
        bindparam("now", type_=deliveries.c.created_at.type),
        events.c.deposit_id,
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


class EventRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(self, pending: Sequence[PendingEvent], now: datetime) -> list[int]:
        """Append events with the next seqs and queue their deliveries; the seqs given.

        Call last in the unit of work: from here the event cursor is locked until commit.
        (Recording deposits appends through ``db.recording``, tuned for its batches.)
        """
        if not pending:
            return []
        result = await self._conn.execute(ADVANCE_EVENT_COUNTER, {"n": len(pending)})
        last: int = result.scalar_one()
        first = last - len(pending) + 1
        await self._conn.execute(events.insert(), event_rows(first, pending))
        await self._conn.execute(QUEUE_DELIVERIES, {"first": first, "last": last, "now": now})
        return list(range(first, last + 1))

    async def after(self, merchant_id: str, after: int, limit: int) -> Sequence[Row[Any]]:
        result = await self._conn.execute(
            select(events)
            .where(events.c.merchant_id == merchant_id, events.c.seq > after)
            .order_by(events.c.seq)
            .limit(limit)
        )
        return result.all()

    async def between(
        self, merchant_ids: Collection[str], after: int, through: int
    ) -> Sequence[Row[Any]]:
        """These merchants' events with seqs in ``(after, through]``, in seq order."""
        result = await self._conn.execute(
            select(events)
            .where(
                events.c.seq > after,
                events.c.seq <= through,
                events.c.merchant_id.in_(sorted(merchant_ids)),
            )
            .order_by(events.c.seq)
        )
        return result.all()

    async def committed_through(self, after: int, step: int | None) -> tuple[int, bool]:
        """The highest seq, at most ``step`` past ``after``, with every seq up to it committed;
        and False if it stopped short of one taken but not committed.

        ``after`` must itself be such a seq. The counter is gap-free and advances in the
        transaction that inserts its events, so when every seq of the span past ``after`` has
        its event, all of them are committed (``delivery.hub`` builds its horizon on this).
        Seqs retention purged count as committed: they were.
        """
        result = await self._conn.execute(
            select(event_counter.c.last_seq, event_counter.c.purged_through).where(
                event_counter.c.id == 1
            )
        )
        counter = result.one_or_none()
        last, purged = (0, 0) if counter is None else (counter.last_seq, counter.purged_through)
        upper = last if step is None else min(last, after + step)
        if upper <= after:
            return after, True
        lowest = min(max(after, purged), upper)
        span = (events.c.seq > lowest, events.c.seq <= upper)
        result = await self._conn.execute(select(func.count()).select_from(events).where(*span))
        if result.scalar_one() == upper - lowest:
            return upper, True
        # a seq in the span is taken but not committed yet: stop just below the first hole
        result = await self._conn.execute(select(events.c.seq).where(*span).order_by(events.c.seq))
        reached = lowest
        for seq in result.scalars():
            if seq != reached + 1:
                break
            reached = seq
        return reached, False

    async def for_deposit(self, deposit_id: str) -> Sequence[Row[Any]]:
        result = await self._conn.execute(
            select(events).where(events.c.deposit_id == deposit_id).order_by(events.c.version)
        )
        return result.all()

    async def all_seqs(self) -> tuple[int, list[int]]:
        """The seq retention purged through, and every seq above it."""
        result = await self._conn.execute(
            select(event_counter.c.purged_through).where(event_counter.c.id == 1)
        )
        purged = int(result.scalar_one_or_none() or 0)
        result = await self._conn.execute(
            select(events.c.seq).where(events.c.seq > purged).order_by(events.c.seq)
        )
        return purged, list(result.scalars())


#: ``disabled_reason`` of an endpoint its merchant deleted: kept (disabled) for the history of
#: its deliveries, hidden from every merchant-facing read
ENDPOINT_DELETED = "deleted"


@dataclass(frozen=True)
class Endpoint:
    """A webhook endpoint as its merchant sees it: never its secrets."""

    id: str
    merchant_id: str
    url: str
    fallback_urls: tuple[str, ...]
    #: event types it subscribes to, sorted; ``("*",)`` for all
    event_types: tuple[str, ...]
    description: str
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    #: the secret before the last rotation signs beside the current one until then
    previous_secret_until: datetime | None
    failure_streak: int
    failing_since: datetime | None
    circuit_open_until: datetime | None


class EndpointRepository:
    """Webhook endpoints and their subscriptions, always within one merchant's endpoints.

    Deleted endpoints stay as rows (their deliveries and attempts reference them) but are
    disabled with ``ENDPOINT_DELETED`` and invisible here, so they answer as not found.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        endpoint_id: str,
        merchant_id: str,
        url: str,
        event_types: Iterable[str],
        now: datetime,
        *,
        fallback_urls: Sequence[str] = (),
        description: str = "",
        secret: str = "",
    ) -> None:
        await self._conn.execute(
            endpoints.insert().values(
                id=endpoint_id,
                merchant_id=merchant_id,
                url=url,
                fallback_urls=list(fallback_urls),
                description=description,
                secret=secret,
                created_at=now,
                updated_at=now,
            )
        )
        await self.set_event_types(endpoint_id, event_types)

    async def set_event_types(self, endpoint_id: str, event_types: Iterable[str]) -> None:
        """Replace the endpoint's subscriptions."""
        await self._conn.execute(
            endpoint_subscriptions.delete().where(
                endpoint_subscriptions.c.endpoint_id == endpoint_id
            )
        )
        await self._conn.execute(
            endpoint_subscriptions.insert(),
            [{"endpoint_id": endpoint_id, "event_type": t} for t in sorted(set(event_types))],
        )

    async def get(
        self, merchant_id: str, endpoint_id: str, *, lock: bool = False
    ) -> Endpoint | None:
        """The merchant's endpoint; ``lock`` holds its row against other changes until commit.

        The lock is ``FOR NO KEY UPDATE`` on PostgreSQL: it leaves alone the key-share lock
        that queueing a delivery takes on the endpoint, so event writers are never held up.
        """
        stmt = self._visible(merchant_id).where(endpoints.c.id == endpoint_id)
        found = await self._load(stmt.with_for_update(key_share=True) if lock else stmt)
        return found[0] if found else None

    async def of_merchant(self, merchant_id: str) -> list[Endpoint]:
        """The merchant's endpoints, oldest first."""
        return await self._load(
            self._visible(merchant_id).order_by(endpoints.c.created_at, endpoints.c.id)
        )

    async def update(
        self,
        merchant_id: str,
        endpoint_id: str,
        now: datetime,
        *,
        url: str | None = None,
        fallback_urls: Sequence[str] | None = None,
        description: str | None = None,
    ) -> bool:
        """Change the fields given (None: keep); False if the merchant has no such endpoint."""
        values: dict[str, Any] = {"updated_at": now}
        if url is not None:
            values["url"] = url
        if fallback_urls is not None:
            values["fallback_urls"] = list(fallback_urls)
        if description is not None:
            values["description"] = description
        return await self._change(merchant_id, endpoint_id, values)

    async def disable(self, merchant_id: str, endpoint_id: str, reason: str, now: datetime) -> bool:
        """Stop deliveries to the endpoint; one already disabled keeps its original reason."""
        result = await self._conn.execute(
            update(endpoints)
            .where(*self._mine(merchant_id, endpoint_id), endpoints.c.disabled_at.is_(None))
            .values(disabled_at=now, disabled_reason=reason, updated_at=now)
        )
        return bool(result.rowcount)

    async def enable(self, merchant_id: str, endpoint_id: str, now: datetime) -> bool:
        """Deliver to the endpoint again, its failure history and open circuit forgotten."""
        return await self._change(
            merchant_id,
            endpoint_id,
            {
                "disabled_at": None,
                "disabled_reason": None,
                "failure_streak": 0,
                "failing_since": None,
                "circuit_open_until": None,
                "updated_at": now,
            },
        )

    async def delete(self, merchant_id: str, endpoint_id: str, now: datetime) -> bool:
        """Disable the endpoint for good and hide it; its pending deliveries become dead.

        The rows stay: delivery rows and their attempts reference the endpoint, and that
        history outlives it. The outbox is changed first, in the order the sender locks
        (deliveries, then endpoints), so the two cannot deadlock.
        """
        if await self.get(merchant_id, endpoint_id) is None:
            return False
        await self._conn.execute(
            update(deliveries)
            .where(deliveries.c.endpoint_id == endpoint_id, deliveries.c.status == "pending")
            .values(status="dead", last_error="endpoint deleted", finished_at=now)
        )
        return await self._change(
            merchant_id,
            endpoint_id,
            {"disabled_at": now, "disabled_reason": ENDPOINT_DELETED, "updated_at": now},
        )

    async def rotate_secret(
        self,
        merchant_id: str,
        endpoint_id: str,
        secret: str,
        previous_until: datetime | None,
        now: datetime,
    ) -> bool:
        """Sign with ``secret`` from now on; the current one also signs until ``previous_until``.

        None drops the current secret at once. One statement reads the current secret and
        replaces it, so concurrent rotations each keep the secret the other just set.
        """
        previous: Any = None
        if previous_until is not None:
            previous = func.nullif(endpoints.c.secret, "")  # an endpoint that had none yet
        return await self._change(
            merchant_id,
            endpoint_id,
            {
                "secret": secret,
                "previous_secret": previous,
                "previous_secret_until": previous_until,
                "updated_at": now,
            },
        )

    async def queue_test_event(self, endpoint_id: str, event: PendingEvent, now: datetime) -> int:
        """Append ``event`` and queue it for this endpoint alone (no fan-out); its seq.

        Call last in the unit of work: from here the event cursor is locked until commit.
        """
        result = await self._conn.execute(ADVANCE_EVENT_COUNTER, {"n": 1})
        seq: int = result.scalar_one()
        await self._conn.execute(events.insert(), event_rows(seq, [event]))
        await self._conn.execute(
            deliveries.insert().values(
                endpoint_id=endpoint_id,
                event_seq=seq,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                ordering_key=None,
            )
        )
        return seq

    async def deliveries_for(self, endpoint_id: str) -> list[tuple[int, str]]:
        """(event seq, event type) of every outbox row queued for the endpoint."""
        result = await self._conn.execute(
            select(deliveries.c.event_seq, events.c.type)
            .join(events, events.c.seq == deliveries.c.event_seq)
            .where(deliveries.c.endpoint_id == endpoint_id)
            .order_by(deliveries.c.event_seq)
        )
        return [(row.event_seq, row.type) for row in result]

    @staticmethod
    def _mine(merchant_id: str, endpoint_id: str) -> tuple[Any, ...]:
        return (
            endpoints.c.id == endpoint_id,
            endpoints.c.merchant_id == merchant_id,
            endpoints.c.disabled_reason.is_distinct_from(ENDPOINT_DELETED),
        )

    @staticmethod
    def _visible(merchant_id: str) -> Any:
        return select(endpoints).where(
            endpoints.c.merchant_id == merchant_id,
            endpoints.c.disabled_reason.is_distinct_from(ENDPOINT_DELETED),
        )

    async def _change(self, merchant_id: str, endpoint_id: str, values: dict[str, Any]) -> bool:
        result = await self._conn.execute(
            update(endpoints).where(*self._mine(merchant_id, endpoint_id)).values(**values)
        )
        return bool(result.rowcount)

    async def _load(self, stmt: Any) -> list[Endpoint]:
        rows = (await self._conn.execute(stmt)).all()
        if not rows:
            return []
        types: dict[str, list[str]] = defaultdict(list)
        result = await self._conn.execute(
            select(endpoint_subscriptions)
            .where(endpoint_subscriptions.c.endpoint_id.in_([row.id for row in rows]))
            .order_by(endpoint_subscriptions.c.event_type)
        )
        for sub in result:
            types[sub.endpoint_id].append(sub.event_type)
        return [
            Endpoint(
                id=row.id,
                merchant_id=row.merchant_id,
                url=row.url,
                fallback_urls=tuple(
                    json.loads(row.fallback_urls)
                    if isinstance(row.fallback_urls, str)
                    else row.fallback_urls
                ),
                event_types=tuple(types[row.id]),
                description=row.description,
                created_at=row.created_at,
                updated_at=row.updated_at or row.created_at,
                disabled_at=row.disabled_at,
                disabled_reason=row.disabled_reason,
                previous_secret_until=row.previous_secret_until if row.previous_secret else None,
                failure_streak=row.failure_streak,
                failing_since=row.failing_since,
                circuit_open_until=row.circuit_open_until,
            )
            for row in rows
        ]


@dataclass(frozen=True)
class BlockRow:
    number: int
    hash: str
    parent_hash: str


class ChainRepository:
    """The chain watcher's state: its window of recent blocks and what it watches."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def blocks(self, chain: str) -> list[BlockRow]:
        result = await self._conn.execute(
            select(chain_blocks.c.number, chain_blocks.c.hash, chain_blocks.c.parent_hash)
            .where(chain_blocks.c.chain == chain)
            .order_by(chain_blocks.c.number)
        )
        return [BlockRow(row.number, row.hash, row.parent_hash) for row in result]

    async def save_blocks(
        self, chain: str, new: Sequence[BlockRow], *, drop_above: int | None, keep_from: int
    ) -> None:
        """Forget blocks above ``drop_above`` (a reorg's fork point), add ``new``, prune."""
        here = chain_blocks.c.chain == chain
        if drop_above is not None:
            await self._conn.execute(
                chain_blocks.delete().where(here, chain_blocks.c.number > drop_above)
            )
        if new:
            await self._conn.execute(
                chain_blocks.insert(),
                [
                    {
                        "chain": chain,
                        "number": b.number,
                        "hash": b.hash,
                        "parent_hash": b.parent_hash,
                    }
                    for b in new
                ],
            )
        await self._conn.execute(
            chain_blocks.delete().where(here, chain_blocks.c.number < keep_from)
        )

    async def deposits(
        self, chain: str, statuses: Iterable[DepositStatus], *, above_block: int | None = None
    ) -> list[DepositState]:
        """Deposits on ``chain`` in these states (in blocks above ``above_block``, if given)."""
        query = DEPOSIT_WITH_USER.where(
            deposits.c.chain == chain, deposits.c.status.in_([s.value for s in statuses])
        )
        if above_block is not None:
            query = query.where(deposits.c.block_number > above_block)
        result = await self._conn.execute(query.order_by(deposits.c.block_number, deposits.c.id))
        return [deposit_from_row(row._mapping) for row in result]

    async def address_owners_since(
        self, chain: str, since: datetime | None
    ) -> list[tuple[str, str, str, str]]:
        """(address, merchant id, user id, external id) of the addresses made since ``since``."""
        query = (
            select(addresses.c.address, users.c.merchant_id, users.c.id, users.c.external_id)
            .join(users, users.c.id == addresses.c.user_id)
            .where(addresses.c.chain == chain)
        )
        if since is not None:
            query = query.where(addresses.c.created_at >= since)
        result = await self._conn.execute(query)
        return [(row[0], row[1], row[2], row[3]) for row in result]


ORDER_WITH_USER = select(deposit_orders, users.c.external_id).join(
    users, users.c.id == deposit_orders.c.user_id
)


def order_from_row(row: Mapping[Any, Any]) -> DepositOrder:
    """An order from a row of ``deposit_orders`` joined with the user's ``external_id``."""
    return DepositOrder(
        id=row["id"],
        merchant_id=row["merchant_id"],
        user_id=row["user_id"],
        user_external_id=row["external_id"],
        method=OrderMethod(row["method"]),
        asset=row["asset"],
        chain=row["chain"],
        address=row["address"],
        amount=row["amount"],
        expires_at=row["expires_at"],
        expired_at=row["expired_at"],
        created_at=row["created_at"],
        payment=None
        if row["provider"] is None
        else Payment(
            provider=row["provider"],
            reference=row["payment_reference"],
            redirect_url=row["payment"].get("redirect_url"),
            instructions=row["payment"].get("instructions"),
        ),
    )


def _payment_columns(payment: Payment | None) -> dict[str, Any]:
    if payment is None:
        return {}
    return {
        "provider": payment.provider,
        "payment_reference": payment.reference,
        "payment": {"redirect_url": payment.redirect_url, "instructions": payment.instructions},
    }


def _provider_identity(merchant_id: Any, provider: Any, deposit_id: Any) -> Any:
    """SQL for a provider deposit's identity (``ProviderRef.key``), which is indexed."""
    return literal("provider:") + merchant_id + ":" + provider + ":" + deposit_id


#: what an order's progress needs of each of its deposits
_ATTRIBUTED = (
    deposits.c.id,
    deposits.c.amount,
    deposits.c.status,
    deposits.c.created_at,
    deposits.c.reason_code,
    deposits.c.reason_params,
    deposits.c.confirmations,
    deposits.c.required_confirmations,
)


class OrderRepository:
    """Deposit orders, the deposits attributed to them, and their expiry."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, order: DepositOrder) -> None:
        await self._conn.execute(
            deposit_orders.insert().values(
                id=order.id,
                merchant_id=order.merchant_id,
                user_id=order.user_id,
                method=order.method.value,
                asset=order.asset,
                chain=order.chain,
                address=None if order.address is None else order.address.lower(),
                amount=order.amount,
                expires_at=order.expires_at,
                expired_at=order.expired_at,
                created_at=order.created_at,
                **_payment_columns(order.payment),
            )
        )

    async def get(self, merchant_id: str | None, order_id: str) -> DepositOrder | None:
        """The merchant's order (``merchant_id`` None: whoever's it is)."""
        query = ORDER_WITH_USER.where(deposit_orders.c.id == order_id)
        if merchant_id is not None:
            query = query.where(deposit_orders.c.merchant_id == merchant_id)
        row = (await self._conn.execute(query)).first()
        return None if row is None else order_from_row(row._mapping)

    async def attributed_deposits(
        self, order_ids: Iterable[str]
    ) -> dict[str, list[AttributedDeposit]]:
        """Each order's deposits, oldest first.

        A deposit belongs to its user's latest crypto order of its asset created at or before
        the deposit was first seen (ties between orders go to the larger id): an order's
        window runs from its own ``created_at`` up to, not including, that of the order after
        it. An order paid through a provider has the deposits the provider reports under its
        payment reference.
        """
        wanted = set(order_ids)
        found: dict[str, list[AttributedDeposit]] = {order_id: [] for order_id in wanted}
        if not wanted:
            return found
        for query in (self._by_window(wanted), self._by_reference(wanted)):
            for row in await self._conn.execute(query):
                reason = Message(row.reason_code, row.reason_params)
                found[row.order_id].append(
                    AttributedDeposit(
                        row.id,
                        row.amount,
                        DepositStatus(row.status),
                        row.created_at,
                        reason,
                        row.confirmations,
                        row.required_confirmations,
                    )
                )
        return found

    @staticmethod
    def _by_reference(wanted: set[str]) -> Select[Any]:
        order = deposit_orders.alias("o")
        return (
            select(order.c.id.label("order_id"), *_ATTRIBUTED)
            .select_from(
                order.join(
                    deposits,
                    deposits.c.identity
                    == _provider_identity(
                        order.c.merchant_id, order.c.provider, order.c.payment_reference
                    ),
                )
            )
            .where(order.c.id.in_(wanted), order.c.provider.is_not(None))
            .order_by(deposits.c.created_at, deposits.c.id)
        )

    @staticmethod
    def _by_window(wanted: set[str]) -> Select[Any]:
        order = deposit_orders.alias("o")
        later = deposit_orders.alias("later")
        window_end = (
            select(func.min(later.c.created_at))
            .where(
                later.c.user_id == order.c.user_id,
                later.c.asset == order.c.asset,
                or_(
                    later.c.created_at > order.c.created_at,
                    and_(later.c.created_at == order.c.created_at, later.c.id > order.c.id),
                ),
            )
            .scalar_subquery()
        )
        return (
            select(order.c.id.label("order_id"), *_ATTRIBUTED)
            .select_from(
                order.join(
                    deposits,
                    and_(
                        deposits.c.user_id == order.c.user_id,
                        deposits.c.asset == order.c.asset,
                        deposits.c.created_at >= order.c.created_at,
                        or_(window_end.is_(None), deposits.c.created_at < window_end),
                    ),
                )
            )
            .where(order.c.id.in_(wanted), order.c.provider.is_(None))
            .order_by(deposits.c.created_at, deposits.c.id)
        )

    async def silent_payments(
        self, merchant_id: str, provider: str, created_before: datetime, since: datetime, limit: int
    ) -> list[str]:
        """The payment references of orders paid through ``provider``, created in
        [``since``, ``created_before``), that none of its callbacks has mentioned yet."""
        order = deposit_orders.c
        mentioned = (
            select(deposits.c.id)
            .where(deposits.c.identity == _provider_identity(order.merchant_id, order.provider,
                                                             order.payment_reference))
            .exists()
        )  # fmt: skip
        result = await self._conn.execute(
            select(order.payment_reference)
            .where(
                order.merchant_id == merchant_id,
                order.provider == provider,
                order.created_at < created_before,
                order.created_at >= since,
                ~mentioned,
            )
            .order_by(order.created_at)
            .limit(limit)
        )
        return list(result.scalars())

    async def claim_due(
        self, now: datetime, assets: Iterable[str], limit: int
    ) -> list[DepositOrder]:
        """Orders of these assets past their deadline that the sweeper has not decided yet.

        On PostgreSQL they stay locked until commit, and rows another sweeper holds are
        skipped: concurrent sweepers take disjoint batches.
        """
        result = await self._conn.execute(
            ORDER_WITH_USER.where(
                deposit_orders.c.expiry_checked_at.is_(None),
                deposit_orders.c.expires_at <= now,
                deposit_orders.c.asset.in_(set(assets)),
            )
            .order_by(deposit_orders.c.expires_at, deposit_orders.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=deposit_orders)
        )
        return [order_from_row(row._mapping) for row in result]

    async def decide_expiry(
        self, expired_ids: Iterable[str], paid_ids: Iterable[str], now: datetime
    ) -> set[str]:
        """Mark orders decided at their deadline; the ids this call actually expired.

        Only orders not decided yet change, so of concurrent sweepers exactly one expires
        (and announces) each order.
        """
        undecided = deposit_orders.c.expiry_checked_at.is_(None)
        if paid := sorted(set(paid_ids)):
            await self._conn.execute(
                update(deposit_orders)
                .where(deposit_orders.c.id.in_(paid), undecided)
                .values(expiry_checked_at=now)
            )
        expired = sorted(set(expired_ids))
        if not expired:
            return set()
        result = await self._conn.execute(
            update(deposit_orders)
            .where(deposit_orders.c.id.in_(expired), undecided)
            .values(expiry_checked_at=now, expired_at=now)
            .returning(deposit_orders.c.id)
        )
        return set(result.scalars())
