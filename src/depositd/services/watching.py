"""What a chain watcher keeps in the database: its cursor, its reorg window, what it watches."""

from __future__ import annotations

import sys
from collections.abc import KeysView, Sequence
from datetime import datetime, timedelta

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.repositories import BlockRow, Owner
from depositd.db.uow import UnitOfWork
from depositd.domain.deposits import DepositState, DepositStatus

#: deposits still waiting for confirmations: the watcher reports each new one
OPEN = (DepositStatus.PENDING, DepositStatus.CONFIRMING)
#: deposits a reorg can take away: the open ones, and those credited or held on a block
IN_BLOCKS = (*OPEN, DepositStatus.CREDITED, DepositStatus.HELD)

#: how far back each refresh of the watched addresses looks again: an address row becomes
#: visible at commit, which can come a little after its ``created_at``
ADDRESS_OVERLAP = timedelta(minutes=5)


async def window(db: Database, chain: str) -> list[BlockRow]:
    """The recent canonical blocks the watcher stored, oldest first; the last is its cursor."""
    async with UnitOfWork(db, write=False) as uow:
        return await uow.chains.blocks(chain)


async def save_window(
    db: Database,
    chain: str,
    scanned: Sequence[BlockRow],
    *,
    fork_point: int | None,
    keep_from: int,
) -> None:
    """Advance the cursor over ``scanned`` blocks (after a reorg, from ``fork_point``).

    Call only once the deposits found in those blocks are recorded: a crash in between makes
    the watcher scan them again, which records nothing twice.
    """
    async with UnitOfWork(db, write=True) as uow:
        await uow.chains.save_blocks(chain, scanned, drop_above=fork_point, keep_from=keep_from)
        await uow.commit()


async def open_deposits(db: Database, chain: str) -> list[DepositState]:
    async with UnitOfWork(db, write=False) as uow:
        return await uow.chains.deposits(chain, OPEN)


async def deposits_above(db: Database, chain: str, fork_point: int) -> list[DepositState]:
    """Deposits in blocks above ``fork_point`` that a reorg there takes away."""
    async with UnitOfWork(db, write=False) as uow:
        return await uow.chains.deposits(chain, IN_BLOCKS, above_block=fork_point)


class WatchedAddresses:
    """Our deposit addresses on one chain (lower-case) with their owners, kept current by
    ``refresh``.

    An address never changes owner and is never removed, so the watcher records deposits to
    them without asking the database whose they are (a query per round that cost up to a
    tenth of a round's recording).
    """

    def __init__(self, db: Database, chain: str) -> None:
        self._db = db
        self._chain = chain
        self._since: datetime | None = None
        #: address → (merchant id, user id, external id): plain tuples of strings, which the
        #: garbage collector stops tracking (a full collection walked 100,000 owner objects in
        #: ~50 ms)
        self._owners: dict[str, tuple[str, str, str]] = {}

    @property
    def addresses(self) -> KeysView[str]:
        return self._owners.keys()

    def owner(self, address: str) -> Owner | None:
        """Who owns ``address`` (lower-case), if it is one of ours."""
        found = self._owners.get(address)
        return None if found is None else Owner(*found)

    async def refresh(self) -> int:
        """Load addresses made since the last refresh; how many were new."""
        started = utcnow()
        since = None if self._since is None else self._since - ADDRESS_OVERLAP
        async with UnitOfWork(self._db, write=False) as uow:
            found = await uow.chains.address_owners_since(self._chain, since)
        owners = self._owners
        before = len(owners)
        for address, merchant_id, user_id, external_id in found:
            if address not in owners:
                # one string per merchant, not one per address
                owners[address] = (sys.intern(merchant_id), user_id, external_id)
        self._since = started
        return len(owners) - before
