"""What a chain watcher keeps in the database: its cursor, its reorg window, what it watches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.repositories import BlockRow
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
    """Our deposit addresses on one chain (lower-case), kept current by ``refresh``."""

    def __init__(self, db: Database, chain: str) -> None:
        self._db = db
        self._chain = chain
        self._since: datetime | None = None
        self.addresses: set[str] = set()

    async def refresh(self) -> int:
        """Load addresses made since the last refresh; how many were new."""
        started = utcnow()
        since = None if self._since is None else self._since - ADDRESS_OVERLAP
        async with UnitOfWork(self._db, write=False) as uow:
            found = await uow.chains.addresses_since(self._chain, since)
        before = len(self.addresses)
        self.addresses.update(found)
        self._since = started
        return len(self.addresses) - before
