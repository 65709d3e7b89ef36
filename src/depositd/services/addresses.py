"""Deposit addresses: one per user and chain, derived from the merchant's xpub, never reused."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from depositd.chain.addresses import WatchOnlyKey
from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.repositories import AddressTaken
from depositd.db.uow import UnitOfWork
from depositd.errors import Conflict, InputError, NotFound
from depositd.ids import new_id

#: tries if an allocation still collides (the merchant lock should make this rare)
_ALLOCATION_TRIES = 3


class UnknownChain(InputError):
    slug = "unknown-chain"


class XpubNotSet(Conflict):
    slug = "xpub-not-set"


@dataclass(frozen=True)
class DepositAddress:
    chain: str
    #: EIP-55 checksummed
    address: str
    #: child index under the merchant's xpub (None for an address attached by hand)
    index: int | None
    created: bool


async def set_xpub(db: Database, merchant_id: str, xpub: str) -> None:
    """Give a merchant the account xpub its deposit addresses derive from (checked first)."""
    key = WatchOnlyKey(xpub)
    async with UnitOfWork(db, write=True) as uow:
        if not await uow.merchants.set_xpub(merchant_id, key.text):
            raise NotFound(f"no merchant {merchant_id}")
        await uow.commit()


async def deposit_address(
    db: Database, chains: Container[str], merchant_id: str, external_id: str, chain: str
) -> DepositAddress:
    """The user's address on ``chain``, derived at the merchant's next index if it has none."""
    if chain not in chains:
        raise UnknownChain(f"unknown chain {chain!r}")
    for _ in range(_ALLOCATION_TRIES):
        async with UnitOfWork(db, write=True) as uow:
            user = await uow.users.get(merchant_id, external_id)
            if user is None:
                raise NotFound(f"no user {external_id!r}")
            if existing := await _existing(uow, user.id, chain):
                return existing
            # the merchant's row lock makes "next index" safe among concurrent allocations
            merchant = await uow.merchants.get(merchant_id, lock=True)
            if existing := await _existing(uow, user.id, chain):  # made while we waited
                return existing
            if merchant is None or merchant.xpub is None:
                raise XpubNotSet(
                    "this merchant has no xpub to derive addresses from:"
                    " set one with 'depositd merchants set-xpub'"
                )
            index = await uow.users.next_derivation_index(merchant_id, chain)
            address = WatchOnlyKey(merchant.xpub).address(index)
            try:
                await uow.users.add_address(
                    new_id("adr"), user.id, merchant_id, chain, address, utcnow(), index
                )
                await uow.commit()
            except AddressTaken:
                continue  # another request took this index, or this user's address: look again
            return _address(chain, address, index, True)
    raise Conflict("could not allocate an address under contention; try again")


async def user_addresses(db: Database, merchant_id: str, external_id: str) -> list[DepositAddress]:
    async with UnitOfWork(db, write=False) as uow:
        user = await uow.users.get(merchant_id, external_id)
        if user is None:
            raise NotFound(f"no user {external_id!r}")
        rows = await uow.users.addresses_of(user.id)
    return [_address(r.chain, r.address, r.derivation_index, False) for r in rows]


async def _existing(uow: UnitOfWork, user_id: str, chain: str) -> DepositAddress | None:
    for row in await uow.users.addresses_of(user_id):
        if row.chain == chain:
            return _address(row.chain, row.address, row.derivation_index, False)
    return None


def _address(chain: str, address: str, index: int | None, created: bool) -> DepositAddress:
    return DepositAddress(chain, to_checksum_address(address), index, created)
