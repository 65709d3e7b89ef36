"""Read-side use cases: deposits, balances, transaction records, the event log, the audit."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from depositd.db.engine import Database
from depositd.db.repositories import AccountAudit, DepositFilter, LedgerRecord
from depositd.db.uow import UnitOfWork
from depositd.domain.deposits import DepositState
from depositd.domain.ledger import Side
from depositd.errors import InputError, NotFound
from depositd.services.users import User


class InvalidCursor(InputError):
    slug = "invalid-cursor"


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    #: pass back as ``cursor`` for the next page; None on the last page
    next_cursor: str | None


def encode_cursor(kind: str, value: str | int) -> str:
    """An opaque page cursor: ``kind:value`` in unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    """The value ``encode_cursor(kind, value)`` made (None for None); ``InvalidCursor`` for
    anything else, a cursor of another kind too."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("cursor is not one this API handed out") from None
    found, _, value = raw.partition(":")
    if found != kind or not value:
        raise InvalidCursor("cursor is not one this API handed out")
    return value


async def list_deposits(
    db: Database, where: DepositFilter, cursor: str | None, limit: int
) -> Page[DepositState]:
    before = decode_cursor("dep", cursor)
    async with UnitOfWork(db, write=False) as uow:
        rows = await uow.deposits.page(where, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor("dep", rows[-1].id) if more else None)


@dataclass(frozen=True)
class DepositHistory:
    deposit: DepositState
    #: one per transition, oldest first: the event data at that version plus seq and time
    transitions: list[dict[str, Any]]


async def get_deposit(db: Database, merchant_id: str, deposit_id: str) -> DepositHistory:
    async with UnitOfWork(db, write=False) as uow:
        deposit = await uow.deposits.get(merchant_id, deposit_id)
        if deposit is None:
            raise NotFound(f"no deposit {deposit_id}")
        history = await uow.events.for_deposit(deposit.id)
    transitions = [
        {"seq": row.seq, "type": row.type, "at": row.created_at, **row.data} for row in history
    ]
    return DepositHistory(deposit, transitions)


@dataclass(frozen=True)
class AssetBalance:
    asset: str
    available: int
    locked: int


@dataclass(frozen=True)
class UserBalances:
    user: User
    balances: list[AssetBalance]


async def user_balances(db: Database, merchant_id: str, external_id: str) -> UserBalances:
    async with UnitOfWork(db, write=False) as uow:
        row = await uow.users.get(merchant_id, external_id)
        if row is None:
            raise NotFound(f"no user {external_id!r}")
        rows = await uow.accounts.balances(row.id)
    sides: dict[str, dict[str, int]] = defaultdict(dict)
    for balance in rows:
        sides[balance.asset][balance.side] = balance.balance
    return UserBalances(
        User(row.id, row.external_id, row.created_at),
        [
            AssetBalance(asset, by_side.get(Side.AVAILABLE, 0), by_side.get(Side.LOCKED, 0))
            for asset, by_side in sorted(sides.items())
        ],
    )


async def transaction_records(
    db: Database,
    merchant_id: str,
    external_id: str | None,
    asset: str | None,
    cursor: str | None,
    limit: int,
) -> Page[LedgerRecord]:
    before_text = decode_cursor("txn", cursor)
    try:
        before = None if before_text is None else int(before_text)
    except ValueError:
        raise InvalidCursor("cursor is not one this API handed out") from None
    async with UnitOfWork(db, write=False) as uow:
        rows = await uow.accounts.records(merchant_id, external_id, asset, before, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor("txn", rows[-1].id) if more else None)


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]

    def envelope(self) -> dict[str, Any]:
        """The event as webhooks and the event log carry it."""
        return {
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "timestamp": self.created_at.isoformat(),
            "data": {**self.data, "seq": self.seq},
        }


def _event(row: Any) -> Event:
    return Event(row.seq, row.id, row.type, row.created_at, row.data)


async def events_after(db: Database, merchant_id: str, after: int, limit: int) -> list[Event]:
    async with UnitOfWork(db, write=False) as uow:
        rows = await uow.events.after(merchant_id, after, limit)
    return [_event(row) for row in rows]


async def events_between(
    db: Database, merchant_ids: Collection[str], after: int, through: int
) -> list[tuple[str, Event]]:
    """(merchant, event) for these merchants' events with seqs in ``(after, through]``."""
    if not merchant_ids:
        return []
    async with UnitOfWork(db, write=False) as uow:
        rows = await uow.events.between(merchant_ids, after, through)
    return [(row.merchant_id, _event(row)) for row in rows]


async def committed_through(db: Database, after: int, step: int | None) -> tuple[int, bool]:
    """The highest seq, at most ``step`` past ``after``, with every seq up to it committed;
    and False if it stopped short of one taken but not committed (see
    ``EventRepository.committed_through``)."""
    async with UnitOfWork(db, write=False) as uow:
        return await uow.events.committed_through(after, step)


@dataclass(frozen=True)
class LedgerAudit:
    """What the ledger check found; ``ok`` when every invariant holds."""

    accounts: list[AccountAudit]
    mismatched: list[AccountAudit]
    unbalanced_postings: list[tuple[str, str, int]]
    seq_gaps: list[int]

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.unbalanced_postings or self.seq_gaps)


async def audit_ledger(db: Database) -> LedgerAudit:
    """Check cached balances against their entries, postings sum to zero, seq is gap-free."""
    async with UnitOfWork(db, write=False) as uow:
        accounts = await uow.accounts.audit()
        unbalanced = await uow.accounts.unbalanced_postings()
        purged, seqs = await uow.events.all_seqs()
    gaps = _gaps(seqs, purged + 1)
    mismatched = [a for a in accounts if a.cached is not None and a.cached != a.summed]
    return LedgerAudit(accounts, mismatched, unbalanced, gaps)


def _gaps(seqs: Sequence[int], expected: int) -> list[int]:
    missing: list[int] = []
    for seq in seqs:
        missing.extend(range(expected, seq))
        expected = seq + 1
    return missing
