"""Small builders for integration tests."""

from __future__ import annotations

import itertools

from depositd.db.engine import Database
from depositd.domain.deposits import (
    ChainRef,
    Observation,
    ProviderRef,
    ProviderStatus,
    ToAddress,
    ToUser,
)
from depositd.services import merchants, users

CHAIN = "anvil"
ETH = 10**18


async def merchant_with_user(db: Database, external_id: str = "alice") -> tuple[str, str]:
    """A merchant, one user, and one deposit address; returns (merchant id, address)."""
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, external_id)
    address = "0x" + external_id.encode().hex().ljust(40, "0")[:40]
    await users.add_address(db, merchant.id, external_id, CHAIN, address)
    return merchant.id, address


def eth_transfer(
    address: str,
    tx: int,
    confirmations: int,
    *,
    amount: int = ETH,
    block: str | None = "0xb1",
    removed: bool = False,
    log_index: int = -1,
) -> Observation:
    return Observation(
        ref=ChainRef(CHAIN, f"0x{tx:064x}", log_index),
        owner=ToAddress(CHAIN, address),
        asset="ETH",
        amount=amount,
        confirmations=confirmations,
        block_hash=None if confirmations == 0 and not removed else block,
        block_number=None if block is None else 100,
        removed=removed,
    )


_paid_ids = itertools.count(1)


async def merchant_with_users(db: Database, *external_ids: str) -> str:
    """A merchant and users with these external ids; returns the merchant id."""
    merchant = await merchants.create_merchant(db, "acme")
    for external_id in external_ids:
        await users.ensure_user(db, merchant.id, external_id)
    return merchant.id


def paid(merchant_id: str, amount: int, user: str = "alice", asset: str = "USDT") -> Observation:
    """A custody provider's report of a new, succeeded deposit to the user."""
    return Observation(
        ref=ProviderRef(merchant_id, "custody", f"d{next(_paid_ids)}"),
        owner=ToUser(merchant_id, user),
        asset=asset,
        amount=amount,
        provider_status=ProviderStatus.SUCCEEDED,
    )
