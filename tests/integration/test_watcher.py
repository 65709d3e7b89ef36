"""The chain watcher against a real anvil node: confirmations, reorgs, restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import timedelta

import pytest

from depositd.chain.evm import ChainMoved, ChainReader
from depositd.db import recording
from depositd.db.engine import Database
from depositd.db.recording import OwnerKey
from depositd.db.repositories import DepositFilter, Owner
from depositd.devchain import DEMO_XPUB
from depositd.services import addresses, merchants, observations, orders, queries, users

from .chain import (
    CHAIN,
    ETH,
    USDT,
    assets_for,
    balance,
    fresh_address,
    live_chain,
    statuses,
    user_with_address,
)
from .evm import DEPLOYER, send_eth


@pytest.mark.parametrize("native_reads", ["receipts", "blocks"])
async def test_eth_and_token_deposits_go_pending_confirming_credited(
    db: Database, anvil_url: str, native_reads: str
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        assets = assets_for(chain.token, confirmations=3)
        watcher = chain.watcher(db, assets, native_reads=native_reads)
        async with chain.manual_mining():
            eth_tx = await chain.rpc.call(
                "eth_sendTransaction", {"from": DEPLOYER, "to": address, "value": hex(2 * ETH)}
            )
            await chain.token.transact_later(
                "transfer(address,uint256)", ["address", "uint256"], [address, 25 * USDT]
            )
            await chain.mine()
            await watcher.step()
            assert set(map(tuple, (await statuses(db, merchant_id)).values())) == {("pending",)}
            await chain.mine()
            await watcher.step()
            await chain.mine(2)
            await watcher.step()
        history = await statuses(db, merchant_id)
        assert sorted(history.values()) == [["pending", "confirming", "credited"]] * 2
        assert f"ETH:{eth_tx}" in history
        assert await balance(db, merchant_id, "alice", "ETH") == 2 * ETH
        assert await balance(db, merchant_id, "alice", "USDT") == 25 * USDT
        # nothing new on the chain: nothing new recorded
        events = await queries.events_after(db, merchant_id, 0, 100)
        await watcher.step()
        assert len(await queries.events_after(db, merchant_id, 0, 100)) == len(events)


async def test_a_reorg_before_credit_orphans_the_deposit(db: Database, anvil_url: str) -> None:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        watcher = chain.watcher(db, assets_for(chain.token, confirmations=3))
        await send_eth(chain.rpc, address, ETH)
        await watcher.step()
        await chain.mine()
        await watcher.step()
        await chain.rpc.call("anvil_reorg", 3, [])
        await watcher.step()
        (history,) = (await statuses(db, merchant_id)).values()
        assert history == ["pending", "confirming", "orphaned"]
        assert await balance(db, merchant_id, "alice", "ETH") == 0
        assert watcher.status.reorgs == 1


async def test_a_reorg_deeper_than_the_confirmations_reverses_the_credit(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        watcher = chain.watcher(db, assets_for(chain.token, confirmations=2))
        receipt = await chain.token.transact(
            "transfer(address,uint256)", ["address", "uint256"], [address, 7 * USDT]
        )
        await chain.mine(2)
        await watcher.step()
        assert await balance(db, merchant_id, "alice", "USDT") == 7 * USDT
        await chain.rpc.call("anvil_reorg", 4, [])
        await watcher.step()
        history = await statuses(db, merchant_id)
        assert history == {f"USDT:{receipt['transactionHash']}": ["credited", "reversed"]}
        assert await balance(db, merchant_id, "alice", "USDT") == 0
        audit = await queries.audit_ledger(db)
        assert audit.ok, audit


async def test_a_deposit_mined_again_after_a_reorg_is_tracked_in_its_new_block(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        watcher = chain.watcher(db, assets_for(chain.token, confirmations=3))
        first = await send_eth(chain.rpc, address, ETH)
        raw = await chain.rpc.call("eth_getRawTransactionByHash", first["transactionHash"])
        await chain.mine()
        await watcher.step()
        # the new chain holds the same signed transaction, one block later than before
        await chain.rpc.call("anvil_reorg", 2, [[raw, 1]])
        await watcher.step()
        await chain.mine(3)
        await watcher.step()
        (deposit,) = (await queries.list_deposits(db, _mine(merchant_id), None, 10)).items
        found = await queries.get_deposit(db, merchant_id, deposit.id)
        blocks = [t["block_number"] for t in found.transitions]
        assert [t["status"] for t in found.transitions] == ["confirming", "pending", "credited"]
        assert blocks[1] == blocks[0] + 1 == blocks[2]
        assert deposit.tx_hash == first["transactionHash"]
        assert await balance(db, merchant_id, "alice", "ETH") == ETH


def _mine(merchant_id: str) -> DepositFilter:
    return DepositFilter(merchant_id=merchant_id)


async def test_new_heads_over_websocket_wake_the_watcher_at_once(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        # it would poll only every minute: only a newHeads notification can wake it in time
        watcher = chain.watcher(
            db,
            assets_for(chain.token, confirmations=0),
            ws_url=anvil_url.replace("http://", "ws://"),
            poll_interval_seconds=60,
        )
        following = asyncio.create_task(watcher.run())
        try:
            for _ in range(100):  # the first round, and the subscription
                if watcher.status.cursor is not None:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            await send_eth(chain.rpc, address, ETH)
            for _ in range(100):
                if await balance(db, merchant_id, "alice", "ETH") == ETH:
                    break
                await asyncio.sleep(0.05)
            assert await balance(db, merchant_id, "alice", "ETH") == ETH
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


async def test_a_deposit_order_is_paid_in_two_transfers_seen_on_chain(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant = await merchants.create_merchant(db, "acme")
        await addresses.set_xpub(db, merchant.id, DEMO_XPUB)
        await users.ensure_user(db, merchant.id, "alice")
        assets = assets_for(chain.token, confirmations=1)
        chain_ids = {CHAIN: 31337}
        order = await orders.create_order(
            db, chain_ids, assets, merchant.id, "alice", "USDT", 10 * USDT, timedelta(hours=1)
        )
        assert order.payment_uri.endswith(f"&uint256={10 * USDT}")
        watcher = chain.watcher(db, assets)
        for part in (4 * USDT, 6 * USDT):
            await chain.token.transact(
                "transfer(address,uint256)", ["address", "uint256"], [order.order.address, part]
            )
        await watcher.step()
        seen = await orders.get_order(db, chain_ids, assets, merchant.id, order.order.id)
        assert (seen.progress.status.value, seen.progress.credited) == ("underpaid", 4 * USDT)
        await chain.mine()
        await watcher.step()
        paid = await orders.get_order(db, chain_ids, assets, merchant.id, order.order.id)
        assert (paid.progress.status.value, paid.progress.credited) == ("paid", 10 * USDT)


async def test_a_reorg_under_a_range_read_ahead_is_caught(db: Database, anvil_url: str) -> None:
    # catching up, the watcher reads the next range while recording this one and skips the
    # head check when that range continues its cursor; the chain reorganised after the read
    # ahead must still take the deposit back
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        watcher = chain.watcher(
            db, assets_for(chain.token, confirmations=10), max_blocks_per_round=2
        )
        await chain.mine(2)
        await send_eth(chain.rpc, address, ETH)  # block start + 2
        await chain.mine(4)
        assert await watcher.step()  # start .. start + 1, and start + 2 .. + 3 read ahead
        ahead = watcher._ahead[0]
        assert ahead.first == chain.start + 2
        await ahead.task  # the old chain, deposit included, is read
        await chain.rpc.call("anvil_reorg", 5, [])  # start + 2 onwards replaced, no deposit
        rounds = moved = 0
        while rounds < 20:
            rounds += 1
            try:
                if not await watcher.step():
                    break
            except ChainMoved:
                moved += 1  # the watcher's loop backs off and goes on: so do we
        (history,) = (await statuses(db, merchant_id)).values()
        # seen in the ranges read ahead (confirmations may have grown there), then taken back
        assert history[0] == "confirming"
        assert set(history[:-1]) == {"confirming"}
        assert history[-1] == "orphaned"
        assert moved >= 1
        assert watcher.status.reorgs == 1
        assert await balance(db, merchant_id, "alice", "ETH") == 0
        head = await chain.head()
        assert watcher.status.cursor == head
        (block,) = await ChainReader(chain.rpc).headers([head])
        assert block is not None
        assert watcher._window[-1].hash == block.hash


async def test_the_watcher_records_deposits_to_its_addresses_without_looking_up_owners(
    db: Database, anvil_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # it loads each address with its owner; an address made after it started is picked up
    # with its owner by the round's refresh
    asked: list[Collection[OwnerKey]] = []

    async def find_owners(db: Database, keys: Collection[OwnerKey]) -> dict[OwnerKey, Owner]:
        asked.append(keys)
        return await recording.find_owners(db, keys)

    monkeypatch.setattr(observations, "find_owners", find_owners)
    async with live_chain(anvil_url) as chain:
        merchant_id, alice = await user_with_address(db)
        watcher = chain.watcher(db, assets_for(chain.token, confirmations=0))
        await watcher.step()
        await users.ensure_user(db, merchant_id, "bob")
        bob = fresh_address()
        await users.add_address(db, merchant_id, "bob", CHAIN, bob)
        await send_eth(chain.rpc, alice, 2 * ETH)
        await send_eth(chain.rpc, bob, 3 * ETH)
        await watcher.step()
        assert await balance(db, merchant_id, "alice", "ETH") == 2 * ETH
        assert await balance(db, merchant_id, "bob", "ETH") == 3 * ETH
        assert asked == []
