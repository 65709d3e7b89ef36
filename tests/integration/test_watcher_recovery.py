"""The watcher survives its own death and the node's: every deposit is credited exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from asyncio.subprocess import DEVNULL, PIPE
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import func, select

from depositd.chain.rpc import EvmRpc
from depositd.config import ChainConfig
from depositd.db.engine import Database
from depositd.db.repositories import DepositFilter
from depositd.db.tables import chain_blocks, deposits, ledger_entries
from depositd.services import merchants, queries, users
from depositd.workers.backoff import Backoff
from depositd.workers.watcher import ChainWatcher

from ..conftest import anvil_command, free_port
from .chain import CHAIN, ETH, USDT, assets_for, fresh_address, live_chain
from .evm import DEPLOYER, deploy_token, mined


async def _credited(db: Database) -> int:
    async with db.reader.connect() as conn:
        count = await conn.scalar(
            select(func.count()).select_from(deposits).where(deposits.c.status == "credited")
        )
    return int(count or 0)


async def _cursor(db: Database) -> int | None:
    async with db.reader.connect() as conn:
        cursor: int | None = await conn.scalar(select(func.max(chain_blocks.c.number)))
    return cursor


async def _moved_past(db: Database, cursor: int | None) -> bool:
    now = await _cursor(db)
    return now is not None and (cursor is None or now > cursor)


async def _all_credited(db: Database, total: int) -> bool:
    return await _credited(db) == total


def _worker_config(path: Path, db: Database, rpc_url: str, token: str, start: int) -> Path:
    url = db.url.set(drivername="sqlite" if db.is_sqlite else "postgresql")
    path.write_text(
        f"""
[database]
url = "{url.render_as_string(hide_password=False)}"

[chains.anvil]
chain_id = 31337
rpc_url = "{rpc_url}"
start_block = {start}
max_blocks_per_round = 1
poll_interval_seconds = 0.05
reorg_window = 16

[[assets]]
code = "ETH"
chain = "anvil"
symbol = "ETH"
decimals = 18
min_deposit = "0.001"
confirmations = 1

[[assets]]
code = "USDT"
chain = "anvil"
symbol = "USDT"
decimals = 6
contract = "{token}"
min_deposit = "1"
confirmations = 1
"""
    )
    return path


async def test_a_watcher_killed_mid_range_and_restarted_credits_each_deposit_once(
    db: Database, anvil_url: str, tmp_path: Path
) -> None:
    async with live_chain(anvil_url) as chain:
        merchant = await merchants.create_merchant(db, "acme")
        owners = {}
        for n in range(20):
            await users.ensure_user(db, merchant.id, f"user-{n}")
            owners[f"user-{n}"] = fresh_address()
            await users.add_address(db, merchant.id, f"user-{n}", CHAIN, owners[f"user-{n}"])
        sent: Counter[tuple[str, str]] = Counter()
        rng = random.Random(7)
        async with chain.manual_mining():
            for _block in range(60):
                for _ in range(3):
                    user = rng.choice(sorted(owners))
                    if rng.random() < 0.5:
                        await chain.rpc.call(
                            "eth_sendTransaction",
                            {"from": DEPLOYER, "to": owners[user], "value": hex(ETH // 100)},
                        )
                        sent[(user, "ETH")] += ETH // 100
                    else:
                        await chain.token.transact_later(
                            "transfer(address,uint256)",
                            ["address", "uint256"],
                            [owners[user], USDT],
                        )
                        sent[(user, "USDT")] += USDT
                await chain.mine()
            await chain.mine(2)  # the last deposits' confirmation
        total = 180
        config = _worker_config(
            tmp_path / "worker.toml", db, anvil_url, chain.token.address.lower(), chain.start
        )
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
        command = [sys.executable, "-m", "depositd.cli", "--config", str(config), "worker"]

        kills_mid_range = 0
        while kills_mid_range < 4:
            worker = await asyncio.create_subprocess_exec(
                *command, env=environ, stdout=DEVNULL, stderr=DEVNULL
            )
            before = await _cursor(db)
            # kill it moments after it moves on: inside a range, at a random instant
            await _until(lambda before=before: _moved_past(db, before), seconds=60)
            await asyncio.sleep(rng.uniform(0, 0.05))
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            done = await _credited(db)
            if done == total:
                break
            kills_mid_range += 1
        print(f"SIGKILLed {kills_mid_range} times mid-range, {done} of {total} credited by then")
        # one last run to the end, stopped politely
        worker = await asyncio.create_subprocess_exec(*command, env=environ, stderr=PIPE)
        await _until(lambda: _all_credited(db, total), seconds=60)
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), 30)
        assert worker.returncode == 0, stderr.decode()[-2000:]
        assert kills_mid_range == 4

        assert await _credited(db) == total
        async with db.reader.connect() as conn:
            entries = (
                await conn.execute(
                    select(ledger_entries.c.deposit_id, func.count())
                    .where(ledger_entries.c.kind == "credit")
                    .group_by(ledger_entries.c.deposit_id)
                )
            ).all()
        # each deposit's credit is one double entry (user and external side), never two
        assert len(entries) == total
        assert {count for _, count in entries} == {2}
        for (user, asset), amount in sent.items():
            found = await queries.user_balances(db, merchant.id, user)
            assert {b.asset: b.available for b in found.balances}[asset] == amount
        assert (await queries.audit_ledger(db)).ok


async def _start_node(port: int, state: Path) -> asyncio.subprocess.Process:
    node = await asyncio.create_subprocess_exec(
        *anvil_command(port, "--state", str(state)), stdout=DEVNULL, stderr=DEVNULL
    )
    async with EvmRpc(f"http://127.0.0.1:{port}", timeout_seconds=1) as rpc:
        for _ in range(200):
            try:
                await rpc.chain_id()
                return node
            except Exception:
                await asyncio.sleep(0.05)
    raise AssertionError("anvil did not start")


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not so within {seconds} s: {condition}")


async def test_the_node_stopped_and_restarted_the_watcher_catches_up(
    db: Database, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "chain.json"
    node = await _start_node(port, state)
    try:
        async with EvmRpc(url) as rpc:
            token = await deploy_token(rpc)
            start = await rpc.block_number() + 1
        merchant = await merchants.create_merchant(db, "acme")
        await users.ensure_user(db, merchant.id, "alice")
        address = fresh_address()
        await users.add_address(db, merchant.id, "alice", CHAIN, address)
        assets = assets_for(token, confirmations=1)
        config = ChainConfig(
            chain_id=31337,
            rpc_url=url,
            start_block=start,
            reorg_window=16,
            poll_interval_seconds=0.05,
            rpc_timeout_seconds=1,
        )
        watcher = ChainWatcher(
            db, assets, CHAIN, config, backoff=Backoff(base_seconds=0.05, cap_seconds=0.3)
        )
        following = asyncio.create_task(watcher.run())

        async def pay(amount: int) -> None:
            async with EvmRpc(url) as rpc:
                tx = {"from": DEPLOYER, "to": address, "value": hex(amount)}
                await mined(rpc, await rpc.call("eth_sendTransaction", tx))
                await rpc.call("anvil_mine", hex(1))

        async def balance_is(expected: int) -> bool:
            found = await queries.user_balances(db, merchant.id, "alice")
            return sum(b.available for b in found.balances) == expected

        async def node_unreachable() -> bool:
            return not watcher.status.node_reachable

        await pay(ETH)
        await _until(lambda: balance_is(ETH))
        node.send_signal(signal.SIGTERM)  # anvil saves its chain on the way out
        await asyncio.wait_for(node.wait(), 10)
        await _until(node_unreachable)
        assert watcher.status.last_error is not None
        down_at = watcher.status.cursor

        node = await _start_node(port, state)
        await pay(2 * ETH)
        await _until(lambda: balance_is(3 * ETH))

        async def caught_up() -> bool:  # the cursor moves just after the credit commits
            return watcher.status.cursor == watcher.status.head

        await _until(caught_up)
        assert watcher.status.node_reachable
        assert watcher.status.cursor is not None
        assert down_at is not None
        assert watcher.status.cursor > down_at
        assert watcher.status.reorgs == 0  # the restarted node kept its chain
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        page = await queries.list_deposits(db, DepositFilter(merchant_id=merchant.id), None, 10)
        assert sorted((d.amount, d.status.value) for d in page.items) == [
            (ETH, "credited"),
            (2 * ETH, "credited"),
        ]
    finally:
        if node.returncode is None:
            node.terminate()
            await asyncio.wait_for(node.wait(), 10)
