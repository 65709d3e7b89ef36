"""Fake deposits (假充值) on a real anvil chain: none of them is ever credited.

Every test sends the fake next to one honest deposit, watched in the same round: the honest
one is credited, so a watcher that saw nothing at all would fail the test too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi import encode

from depositd.db.engine import Database
from depositd.db.repositories import DepositFilter
from depositd.domain.assets import Asset
from depositd.domain.deposits import DepositState
from depositd.services import queries

from .chain import CHAIN, ETH, USDT, LiveChain, assets_for, live_chain, user_with_address
from .evm import DEPLOYER, deploy, deploy_token, mined, runtime_code, selector, send_eth

#: a funded anvil account that holds none of the tokens
STRANGER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@dataclass(frozen=True)
class Target:
    """The merchant and the address the fakes are sent to."""

    merchant_id: str
    address: str


async def target(db: Database) -> Target:
    return Target(*await user_with_address(db))


async def watch_once(
    db: Database, chain: LiveChain, to: Target, *extra: Asset, **changes: Any
) -> list[DepositState]:
    """Send the honest deposit, run one watcher round, return the merchant's deposits.

    ``changes``: to the watcher's chain config."""
    await chain.token.transact(
        "transfer(address,uint256)", ["address", "uint256"], [to.address, 3 * USDT]
    )
    watcher = chain.watcher(db, assets_for(chain.token, confirmations=0, extra=extra), **changes)
    await watcher.step()
    page = await queries.list_deposits(db, DepositFilter(merchant_id=to.merchant_id), None, 50)
    return page.items


def only_the_honest_one(found: list[DepositState]) -> None:
    assert [(d.asset, d.amount, d.status.value) for d in found] == [("USDT", 3 * USDT, "credited")]


async def send_failing(chain: LiveChain, tx: dict[str, Any]) -> dict[str, Any]:
    """Send with a fixed gas limit, so the node mines it even though it fails."""
    receipt = await mined(
        chain.rpc, await chain.rpc.call("eth_sendTransaction", {"gas": hex(200_000), **tx})
    )
    assert receipt["status"] == "0x0", receipt
    return receipt


#: both ways of finding native coin: block receipts, or blocks with their transactions
native_reads = pytest.mark.parametrize("native_reads", ["receipts", "blocks"])


@native_reads
async def test_a_failed_native_transfer_is_rejected_not_credited(
    db: Database, anvil_url: str, native_reads: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        # code at our address that refuses payment: the transfer is mined with status 0
        await chain.rpc.call("anvil_setCode", address, runtime_code("refuser"))
        await send_failing(chain, {"from": DEPLOYER, "to": address, "value": hex(ETH)})
        found = await watch_once(db, chain, to, native_reads=native_reads)
        failed = [d for d in found if d.asset == "ETH"]
        assert [(d.status.value, d.reason.code) for d in failed] == [
            ("rejected", "transaction_failed")
        ]
        assert "failed" in failed[0].reason.render("en").lower()
        only_the_honest_one([d for d in found if d.asset != "ETH"])


async def test_a_reverted_token_transfer_is_not_a_deposit(db: Database, anvil_url: str) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        data = "0x" + selector("transfer(address,uint256)")
        data += encode(["address", "uint256"], [address, 50 * USDT]).hex()
        # the stranger has no tokens: the honest token reverts, and a reverted call logs nothing
        await send_failing(chain, {"from": STRANGER, "to": chain.token.address, "data": data})
        only_the_honest_one(await watch_once(db, chain, to))


async def test_a_copycat_token_with_the_same_name_symbol_and_decimals_is_ignored(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        copycat = await deploy_token(chain.rpc, "Tether USD", "USDT", 6)
        assert (await copycat.read("symbol()", [], [], ["string"])) == ("USDT",)
        receipt = await copycat.transact(
            "transfer(address,uint256)", ["address", "uint256"], [address, 1000 * USDT]
        )
        assert receipt["status"] == "0x1"
        assert receipt["logs"]
        only_the_honest_one(await watch_once(db, chain, to))


async def test_a_token_whose_transfer_returns_false_is_not_credited(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        quiet = await deploy(chain.rpc, "false_token", ["uint256"], [10**12])
        allowed = Asset("QUSD", CHAIN, "QUSD", 6, USDT, 0, contract=quiet.address.lower())
        # the stranger holds none: transfer returns false, the transaction succeeds
        receipt = await quiet.transact(
            "transfer(address,uint256)",
            ["address", "uint256"],
            [address, 500 * USDT],
            sender=STRANGER,
        )
        assert receipt["status"] == "0x1"
        assert not receipt["logs"]  # it moved nothing and said nothing
        only_the_honest_one(await watch_once(db, chain, to, allowed))


async def test_a_transfer_log_not_emitted_by_the_token_is_ignored(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        forger = await deploy(chain.rpc, "log_forger", [], [])
        receipt = await forger.transact(
            "forge(address,address,uint256)",
            ["address", "address", "uint256"],
            [DEPLOYER, address, 10_000 * USDT],
        )
        (log,) = receipt["logs"]
        assert log["topics"][2][-40:] == address[2:].lower()  # a perfect Transfer look-alike
        only_the_honest_one(await watch_once(db, chain, to))


@native_reads
async def test_zero_value_transfers_are_not_deposits(
    db: Database, anvil_url: str, native_reads: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        await chain.token.transact(
            "transfer(address,uint256)", ["address", "uint256"], [address, 0]
        )
        await send_eth(chain.rpc, address, 0)
        only_the_honest_one(await watch_once(db, chain, to, native_reads=native_reads))


async def test_amounts_below_the_minimum_are_rejected_with_a_hint(
    db: Database, anvil_url: str
) -> None:
    async with live_chain(anvil_url) as chain:
        to = await target(db)
        address = to.address
        await send_eth(chain.rpc, address, ETH // 10_000)  # minimum 0.001
        await chain.token.transact(
            "transfer(address,uint256)", ["address", "uint256"], [address, USDT // 2]
        )  # minimum 1
        found = await watch_once(db, chain, to)
        small = sorted(
            (d.asset, d.status.value, d.reason.render("en"))
            for d in found
            if d.status.value == "rejected"
        )
        assert small == [
            ("ETH", "rejected", "Sent below the 0.001 ETH minimum; not credited."),
            ("USDT", "rejected", "Sent below the 1 USDT minimum; not credited."),
        ]
        balances = await queries.user_balances(db, to.merchant_id, "alice")
        assert [b.asset for b in balances.balances] == ["USDT"]
        only_the_honest_one([d for d in found if d.status.value != "rejected"])
