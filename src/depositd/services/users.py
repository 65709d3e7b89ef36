"""End users, known to us by the merchant's own id for them (``external_id``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.errors import NotFound
from depositd.ids import new_id


@dataclass(frozen=True)
class User:
    id: str
    external_id: str
    created_at: datetime


async def ensure_user(db: Database, merchant_id: str, external_id: str) -> tuple[User, bool]:
    """The merchant's user with this external id, created if new; True when created."""
    async with UnitOfWork(db, write=True) as uow:
        created = await uow.users.add(new_id("usr"), merchant_id, external_id, utcnow())
        row = await uow.users.get(merchant_id, external_id)
        await uow.commit()
    assert row is not None
    return User(row.id, row.external_id, row.created_at), created


async def get_user(db: Database, merchant_id: str, external_id: str) -> User:
    async with UnitOfWork(db, write=False) as uow:
        row = await uow.users.get(merchant_id, external_id)
    if row is None:
        raise NotFound(f"no user {external_id!r}")
    return User(row.id, row.external_id, row.created_at)


async def add_address(
    db: Database, merchant_id: str, external_id: str, chain: str, address: str
) -> str:
    """Attach a deposit address to a user (derivation from an xpub comes with the watcher)."""
    async with UnitOfWork(db, write=True) as uow:
        row = await uow.users.get(merchant_id, external_id)
        if row is None:
            raise NotFound(f"no user {external_id!r}")
        address_id = new_id("adr")
        await uow.users.add_address(address_id, row.id, merchant_id, chain, address, utcnow())
        await uow.commit()
    return address_id
