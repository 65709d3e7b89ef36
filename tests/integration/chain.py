"""A test chain: the session's anvil, a fresh USDT-like token, and watchers over them."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from depositd.chain.rpc import EvmRpc
from depositd.config import ChainConfig
from depositd.db.engine import Database
from depositd.db.repositories import DepositFilter
from depositd.domain.assets import Asset, AssetBook
from depositd.services import merchants, queries, users
from depositd.workers.watcher import ChainWatcher

from .evm import Contract, deploy_token

CHAIN = "anvil"
ETH = 10**18
USDT = 10**6


def fresh_address() -> str:
    return "0x" + secrets.token_hex(20)


def assets_for(
    token: Contract, *, confirmations: int = 3, extra: tuple[Asset, ...] = ()
) -> AssetBook:
    return AssetBook(
        [
            Asset("ETH", CHAIN, "ETH", 18, 10**15, confirmations, block_time_seconds=1.0),
            Asset(
                "USDT",
                CHAIN,
                "USDT",
                6,
                USDT,
                confirmations,
                contract=token.address.lower(),
                block_time_seconds=1.0,
            ),
            *extra,
        ]
    )


@dataclass
class LiveChain:
    url: str
    rpc: EvmRpc
    token: Contract
    #: first block of this test: watchers start here
    start: int
    watchers: list[ChainWatcher] = field(default_factory=list)

    def config(self, **changes: Any) -> ChainConfig:
        settings: dict[str, Any] = {
            "chain_id": 31337,
            "rpc_url": self.url,
            "start_block": self.start,
            "reorg_window": 16,
            "poll_interval_seconds": 0.05,
            "block_time_seconds": 1.0,
        }
        settings.update(changes)
        return ChainConfig(**settings)

    def watcher(self, db: Database, assets: AssetBook, **changes: Any) -> ChainWatcher:
        watcher = ChainWatcher(db, assets, CHAIN, self.config(**changes))
        self.watchers.append(watcher)  # closed when the test chain is
        return watcher

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc.call("anvil_mine", hex(blocks))

    async def head(self) -> int:
        return await self.rpc.block_number()

    @contextlib.asynccontextmanager
    async def manual_mining(self) -> AsyncIterator[None]:
        """Transactions wait in the mempool until ``mine``; automine is back afterwards."""
        await self.rpc.call("evm_setAutomine", False)
        try:
            yield
        finally:
            await self.rpc.call("evm_setAutomine", True)


@contextlib.asynccontextmanager
async def live_chain(url: str) -> AsyncIterator[LiveChain]:
    async with EvmRpc(url) as rpc:
        token = await deploy_token(rpc)
        chain = LiveChain(url, rpc, token, await rpc.block_number() + 1)
        try:
            yield chain
        finally:
            for watcher in chain.watchers:
                await watcher.close()


async def user_with_address(db: Database, external_id: str = "alice") -> tuple[str, str]:
    """A merchant with one user owning a fresh address on the chain: (merchant id, address)."""
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, external_id)
    address = fresh_address()
    await users.add_address(db, merchant.id, external_id, CHAIN, address)
    return merchant.id, address


async def statuses(db: Database, merchant_id: str) -> dict[str, list[str]]:
    """Each deposit's history of statuses, by ``asset:tx:log``."""
    page = await queries.list_deposits(db, DepositFilter(merchant_id=merchant_id), None, 500)
    history = {}
    for deposit in page.items:
        found = await queries.get_deposit(db, merchant_id, deposit.id)
        key = f"{deposit.asset}:{deposit.tx_hash}"
        history[key] = [t["status"] for t in found.transitions]
    return history


async def balance(db: Database, merchant_id: str, external_id: str, asset: str) -> int:
    found = await queries.user_balances(db, merchant_id, external_id)
    return sum(b.available for b in found.balances if b.asset == asset)
