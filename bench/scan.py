"""Chain watcher scan speed against the bare fetch of the same blocks, its latency and memory.

On a fresh database holding --addresses watched deposit addresses, a private anvil chain gets
--blocks blocks holding --deposits deposits (ETH and an ERC-20 token, USDT, sent to random
watched addresses) among --noise unrelated transactions (ETH between unwatched addresses,
token transfers to unwatched addresses). Both assets need 0 confirmations, so every deposit
goes from first sight to credited in one round. Then, in one run:

  floor     every read the watcher makes, with the same reader and JSON-RPC batching, and
            nothing else: ChainReader.read_range over the same blocks, --max-blocks-per-round
            at a time (headers, the token's Transfer logs and, per --native-reads, the blocks'
            receipts or their transactions), and by hash what those lack of the ETH deposits
            (their transactions, or their receipts); the next range is read while this one's
            by-hash reads run, as the watcher reads ahead. Run before and after the watcher;
            the faster of the two is the floor.
  watcher   a ChainWatcher from the first bench block, ``step()`` until it is at the head,
            every deposit credited (counted in the database, checked against those sent).
  latency   the watcher following the chain (``run()``, newHeads over WebSocket) while
            blocks with deposits are mined at a steady rate: from the moment anvil_mine
            returns to the ``deposit.credited`` event appended (``events.created_at``, stamped
            when the recording transaction starts) and to the round's commit.
  memory    RSS before and after the watcher loads the watched addresses, and the peak over
            the load and the scan.

The watcher's time is split by stage (fetching, receipts, the owner lookup and the recording
transaction, ...) by wrapping its methods on the instance; --profile adds cProfile of the
event loop thread and, on SQLite, of the recording thread. Ratios compare figures of the same
run only; the machine is shared and noisy.

    .venv/bin/python bench/scan.py [--engine sqlite|postgresql] [--addresses 100000]
        [--blocks 2000] [--deposits 20000] [--noise 20000] [--batch-size 50]
        [--max-blocks-per-round 200] [--concurrency 4] [--live-blocks 240]
        [--live-interval 0.25] [--live-poll 0.1] [--address-age 60] [--seed 1]
        [--native-reads receipts|blocks]
        [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import random
import re
import resource
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import vyper
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from sqlalchemy import func, select

import depositd
from _common import CpuMeter, free_port, fresh_database, percentile, wait_for_port
from depositd.chain.evm import ChainRange, ChainReader
from depositd.chain.rpc import EvmRpc
from depositd.config import ChainConfig
from depositd.db import tables
from depositd.db.engine import Database
from depositd.domain.assets import Asset, AssetBook
from depositd.ids import new_id
from depositd.logs import configure_logging
from depositd.runtime import freeze_startup_objects
from depositd.services import merchants, observations
from depositd.workers.watcher import ChainWatcher

ROOT = Path(__file__).resolve().parents[1]
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
#: the plain ERC-20 depositd ships for demos (it lived in tests/contracts before)
TOKEN_SOURCES = (
    Path(depositd.__file__).parent / "contracts" / "token.vy",
    ROOT / "tests" / "contracts" / "token.vy",
)

CHAIN = "anvil"
CHAIN_ID = 31337
#: anvil's dev accounts (unlocked, 10,000 ETH each) used as senders, one nonce sequence each
SENDERS = 10
TRANSFER = "0x" + keccak(text="transfer(address,uint256)")[:4].hex()
#: gas limits given up front, so anvil does not estimate each transaction
ETH_GAS, TOKEN_GAS = 21_000, 90_000
#: users and addresses per INSERT batch in the setup
SETUP_BATCH = 5_000

QUICK = {
    "addresses": 2_000,
    "blocks": 100,
    "deposits": 500,
    "noise": 300,
    "live_blocks": 20,
    "live_interval": 0.1,
}


# -- anvil -----------------------------------------------------------------------------------


@contextlib.contextmanager
def anvil_node() -> Iterator[tuple[int, int]]:
    """Our own anvil on a free port, mining only when told (``anvil_mine``); yields the port
    and the process id."""
    port = free_port()
    command = [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent"]
    # --no-mining packs a block's worth of transactions per anvil_mine; base fee 0 lets
    # transactions carry gasPrice 0, so no fee estimation per send; no historical states on
    # disk: thousands of blocks' worth pile up in ~/.foundry (and stay if anvil is killed)
    command += ["--no-mining", "--base-fee", "0", "--accounts", str(SENDERS)]
    command += ["--max-persisted-states", "0"]
    with subprocess.Popen(  # noqa: S603 - our own dev dependency
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as node:
        try:
            wait_for_port(port, node, "anvil")
            yield port, node.pid
        finally:
            node.terminate()
            node.wait(timeout=10)


class Senders:
    """anvil's unlocked accounts, taken in turn, each with its next nonce."""

    def __init__(self, accounts: list[str], nonces: list[str]) -> None:
        """``nonces``: each account's transaction count as the node reports it (hex)."""
        self.accounts = accounts
        self._nonces = [int(n, 16) for n in nonces]
        self._turn = 0

    def next(self) -> dict[str, Any]:
        index = self._turn % len(self.accounts)
        self._turn += 1
        nonce = self._nonces[index]
        self._nonces[index] += 1
        return {"from": self.accounts[index], "nonce": hex(nonce), "gasPrice": "0x0"}


def eth_transfer(senders: Senders, to: str, value: int) -> dict[str, Any]:
    return {**senders.next(), "to": to, "value": hex(value), "gas": hex(ETH_GAS)}


def token_transfer(senders: Senders, token: str, to: str, value: int) -> dict[str, Any]:
    data = TRANSFER + encode(["address", "uint256"], [to, value]).hex()
    return {**senders.next(), "to": token, "data": data, "gas": hex(TOKEN_GAS)}


async def mine(rpc: EvmRpc) -> None:
    await rpc.call("anvil_mine", "0x1")


async def deploy_token(rpc: EvmRpc) -> tuple[str, Senders]:
    """The USDT token (the plain ERC-20 in token.vy), its supply spread over every sender."""
    source = next(path for path in TOKEN_SOURCES if path.exists()).read_text()
    bytecode = vyper.compile_code(source, output_formats=["bytecode"])["bytecode"]
    accounts: list[str] = (await rpc.call("eth_accounts"))[:SENDERS]
    supply = 10**30
    arguments = encode(["string", "string", "uint8", "uint256"], ["Tether USD", "USDT", 6, supply])
    tx_hash = await rpc.call(
        "eth_sendTransaction",
        {"from": accounts[0], "data": bytecode + arguments.hex(), "gas": hex(3_000_000)},
    )
    await mine(rpc)
    receipt = await rpc.call("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1", receipt
    token: str = receipt["contractAddress"].lower()
    # the deployer keeps one share of the supply and sends one to each other sender
    deployer = Senders(accounts[:1], [await rpc.call("eth_getTransactionCount", accounts[0],
                                                     "latest")])  # fmt: skip
    share = supply // SENDERS
    await rpc.batch(
        [("eth_sendTransaction", [token_transfer(deployer, token, a, share)]) for a in accounts[1:]]
    )
    await mine(rpc)
    nonces = await rpc.batch([("eth_getTransactionCount", [a, "latest"]) for a in accounts])
    return token, Senders(accounts, nonces)


# -- the chain the watcher scans ----------------------------------------------------------------


@dataclass
class BenchChain:
    """What was put on the chain, to check the watcher's findings against."""

    port: int
    token: str
    senders: Senders
    watched: list[str]
    rng: random.Random
    watched_set: frozenset[str] = frozenset()
    first: int = 0
    last: int = 0
    eth_deposits: list[str] = field(default_factory=list)
    token_deposits: int = 0
    noise: int = 0
    #: (ETH deposits, token deposits, other transactions) in blocks first..last
    scanned: tuple[int, int, int] = (0, 0, 0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def deposits(self) -> int:
        return len(self.eth_deposits) + self.token_deposits

    def unwatched(self) -> str:
        while True:
            address = f"0x{self.rng.getrandbits(160):040x}"
            if address not in self.watched_set:
                return address

    async def mine_block(self, rpc: EvmRpc, deposits: int, noise: int) -> None:
        """One block holding ``deposits`` deposits among ``noise`` other transactions."""
        txs: list[tuple[str, dict[str, Any]]] = []
        for _ in range(deposits):
            to = self.rng.choice(self.watched)
            if self.rng.random() < 0.5:
                txs.append(("eth", eth_transfer(self.senders, to, self.rng.randint(1, 10**15))))
            else:
                value = self.rng.randint(1, 10**9)
                txs.append(("token", token_transfer(self.senders, self.token, to, value)))
        for n in range(noise):
            to = self.unwatched()
            if n % 2:
                txs.append(("noise", eth_transfer(self.senders, to, self.rng.randint(1, 10**15))))
            else:
                value = self.rng.randint(1, 10**9)
                txs.append(("noise", token_transfer(self.senders, self.token, to, value)))
        if txs:
            hashes = await rpc.batch([("eth_sendTransaction", [tx]) for _, tx in txs])
            for (kind, _), tx_hash in zip(txs, hashes, strict=True):
                if kind == "eth":
                    self.eth_deposits.append(tx_hash)
                elif kind == "token":
                    self.token_deposits += 1
                else:
                    self.noise += 1
        await mine(rpc)


def spread(total: int, parts: int, index: int) -> int:
    """The ``index``-th of ``parts`` near-equal shares of ``total``."""
    return total * (index + 1) // parts - total * index // parts


async def build_chain(port: int, watched: list[str], args: argparse.Namespace) -> BenchChain:
    started = time.perf_counter()
    async with EvmRpc(f"http://127.0.0.1:{port}") as rpc:
        token, senders = await deploy_token(rpc)
        chain = BenchChain(
            port, token, senders, watched, random.Random(f"chain {args.seed}"), frozenset(watched)
        )
        chain.first = await rpc.block_number() + 1
        step = max(1, args.blocks // 10)
        for index in range(args.blocks):
            await chain.mine_block(
                rpc,
                spread(args.deposits, args.blocks, index),
                spread(args.noise, args.blocks, index),
            )
            if (index + 1) % step == 0 or index + 1 == args.blocks:
                print(
                    f"  chain: {index + 1:,}/{args.blocks:,} blocks mined, {chain.deposits:,}"
                    f" deposits, {chain.noise:,} other transactions"
                    f" ({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
        chain.last = await rpc.block_number()
        chain.scanned = (len(chain.eth_deposits), chain.token_deposits, chain.noise)
        pool = await rpc.call("txpool_status")
        assert int(pool["pending"], 16) == 0, f"transactions left unmined: {pool}"
        assert chain.last - chain.first + 1 == args.blocks
    return chain


# -- the database -------------------------------------------------------------------------------


async def add_watched_addresses(db: Database, watched: list[str], age: timedelta) -> None:
    """One merchant, and one user per address, made ``age`` ago.

    The watcher re-reads the addresses made in the last few minutes on every round (they may
    commit late); in a steady state those are few, so the bench's addresses are older.
    """
    merchant = await merchants.create_merchant(db, "bench")
    created_at = datetime.now(UTC) - age
    for start in range(0, len(watched), SETUP_BATCH):
        user_rows, address_rows = [], []
        for n, address in enumerate(watched[start : start + SETUP_BATCH], start):
            user_id = new_id("usr")
            user_rows.append(
                {
                    "id": user_id,
                    "merchant_id": merchant.id,
                    "external_id": f"u{n}",
                    "created_at": created_at,
                }
            )
            address_rows.append(
                {
                    "id": new_id("adr"),
                    "merchant_id": merchant.id,
                    "user_id": user_id,
                    "chain": CHAIN,
                    "address": address,
                    "derivation_index": None,
                    "created_at": created_at,
                }
            )
        async with db.writer.begin() as conn:
            await conn.execute(tables.users.insert(), user_rows)
            await conn.execute(tables.addresses.insert(), address_rows)


async def credited_in(db: Database, first: int, last: int) -> list[tuple[int, datetime]]:
    """(block, event created_at) of every ``deposit.credited`` event in blocks first..last."""
    deposits, events = tables.deposits, tables.events
    query = (
        select(deposits.c.block_number, events.c.created_at)
        .join(events, events.c.deposit_id == deposits.c.id)
        .where(
            events.c.type == "deposit.credited",
            deposits.c.chain == CHAIN,
            deposits.c.block_number.between(first, last),
        )
    )
    async with db.reader.connect() as conn:
        return [(row.block_number, row.created_at) for row in await conn.execute(query)]


async def deposits_by_status(db: Database) -> dict[str, int]:
    deposits = tables.deposits
    query = select(deposits.c.status, func.count()).group_by(deposits.c.status)
    async with db.reader.connect() as conn:
        return {row[0]: row[1] for row in await conn.execute(query)}


# -- measuring ----------------------------------------------------------------------------------


def rss_mb(field_name: str = "VmRSS") -> float:
    """This process's resident memory (or its peak, ``VmHWM``) in MB."""
    status = Path("/proc/self/status").read_text()
    found = re.search(rf"^{field_name}:\s+(\d+) kB", status, re.MULTILINE)
    assert found, f"no {field_name} in /proc/self/status"
    return int(found.group(1)) / 1024


def reset_peak_rss() -> bool:
    """Restart ``VmHWM`` from the current RSS (Linux: ``clear_refs``); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class StageClock:
    """Wall time spent in each awaited stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, step: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await step(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - started

        return timed


#: stages timed inside another stage: not added up again
WITHIN = "  of which "


@contextlib.contextmanager
def clock_owner_lookups(stages: StageClock) -> Iterator[None]:
    """Time the owner lookup that recording does before its transaction."""
    lookup = observations._owners
    observations._owners = stages.wrap(f"{WITHIN}owner lookup", lookup)
    try:
        yield
    finally:
        observations._owners = lookup


def clock_stages(watcher: ChainWatcher) -> StageClock:
    """Time the watcher's stages by wrapping them on this instance (reaches into privates)."""
    stages = StageClock()
    reader = watcher._reader
    reader.head_and_block = stages.wrap("head + cursor check", reader.head_and_block)  # type: ignore[method-assign]
    # the round's wait for its blocks and logs (read ahead while the last round recorded)
    watcher._read = stages.wrap("waiting for blocks + logs", watcher._read)  # type: ignore[method-assign]
    # receipts are read ahead with their range; those of addresses made since come here
    watcher._transfers = stages.wrap("finding transfers (+ receipts)", watcher._transfers)  # type: ignore[method-assign]
    watched = watcher._watched
    watched.refresh = stages.wrap("address refresh", watched.refresh)  # type: ignore[method-assign]
    watcher._record = stages.wrap("record (owners + transaction)", watcher._record)  # type: ignore[method-assign]
    watcher._advance = stages.wrap("save cursor window", watcher._advance)  # type: ignore[method-assign]
    return stages


def watcher_config(chain: BenchChain, args: argparse.Namespace, **changes: Any) -> ChainConfig:
    settings: dict[str, Any] = {
        "chain_id": CHAIN_ID,
        "rpc_url": chain.url,
        "block_time_seconds": 1.0,
        "start_block": chain.first,
        "max_blocks_per_round": args.max_blocks_per_round,
        "rpc_batch_size": args.batch_size,
        "rpc_concurrency": args.concurrency,
        "native_reads": args.native_reads,
    }
    settings.update(changes)
    return ChainConfig(**settings)


def bench_assets(token: str) -> AssetBook:
    """ETH and USDT, credited at first sight (0 confirmations), any amount above zero."""
    return AssetBook(
        [
            Asset("ETH", CHAIN, "ETH", 18, 1, 0, block_time_seconds=1.0),
            Asset("USDT", CHAIN, "USDT", 6, 1, 0, contract=token, block_time_seconds=1.0),
        ]
    )


@dataclass
class Floor:
    """Seconds to make every read the watcher makes, and how long each kind took alone."""

    seconds: float
    #: read_range alone (headers, logs, receipts or transactions), summed over the rounds
    ranges: float
    #: the by-hash reads alone, summed over the rounds
    by_hash: float


async def fetch_floor(chain: BenchChain, args: argparse.Namespace) -> Floor:
    """Every read the watcher makes, and nothing else: each range, and by hash what it lacks
    of the ETH deposits in it (overlapping the next range's read, as the watcher does)."""
    async with EvmRpc(chain.url) as rpc:
        reader = ChainReader(
            rpc,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            native_reads=args.native_reads,
        )
        await rpc.block_number()  # open the connection outside the timing, as a watcher has
        eth_deposits = set(chain.eth_deposits[: chain.scanned[0]])
        firsts = range(chain.first, chain.last + 1, args.max_blocks_per_round)
        spent = {"ranges": 0.0, "by_hash": 0.0}

        async def timed(kind: str, reading: Awaitable[Any]) -> Any:
            began = time.perf_counter()
            try:
                return await reading
            finally:
                spent[kind] += time.perf_counter() - began

        async def read(first: int, parent: str | None) -> ChainRange:
            last = min(chain.last, first + args.max_blocks_per_round - 1)
            reading = reader.read_range(
                first, last, contracts=[chain.token], native=True, parent_hash=parent
            )
            found: ChainRange = await timed("ranges", reading)
            return found

        async def by_hash(found: ChainRange) -> None:
            # the ETH deposits are the watcher's native candidates: what their blocks lack
            if args.native_reads == "receipts":
                hashes = [r.tx_hash for b in found.blocks for r in b.receipts or ()]
                wanted = [h for h in hashes if h in eth_deposits]
                await timed("by_hash", reader.transactions(wanted))
            else:
                hashes = [tx.hash for b in found.blocks for tx in b.transactions or ()]
                wanted = [h for h in hashes if h in eth_deposits]
                await timed("by_hash", reader.receipts(wanted))

        started = time.perf_counter()
        found = await read(firsts[0], None)
        for first in firsts[1:]:
            found, _ = await asyncio.gather(read(first, found.last.hash), by_hash(found))
        await by_hash(found)
        return Floor(time.perf_counter() - started, spent["ranges"], spent["by_hash"])


class Profiles:
    """cProfile of the event loop's thread and, on SQLite, of the recording thread."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.loop = cProfile.Profile()
        self.recorder = cProfile.Profile() if db.is_sqlite else None

    async def _in_recorder(self, call: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._db.recorder_thread, call)

    async def start(self) -> None:
        if self.recorder:  # a profiler covers the thread that enables it
            await self._in_recorder(self.recorder.enable)
        self.loop.enable()

    async def stop(self) -> None:
        self.loop.disable()
        if self.recorder:
            await self._in_recorder(self.recorder.disable)

    def report(self, engine: str) -> str:
        out = io.StringIO()
        threads = (
            ("event loop", "loop", self.loop),
            ("SQLite recording", "recorder", self.recorder),
        )
        for name, short, profile in threads:
            if profile is None:
                continue
            path = Path(tempfile.gettempdir()) / f"scan-{engine}-{short}.prof"
            profile.dump_stats(path)
            print(f"== profile of the {name} thread (raw: {path})", file=out)
            stats = pstats.Stats(profile, stream=out)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(25)
        return out.getvalue()


@dataclass
class Scan:
    seconds: float
    stages: dict[str, float]
    rounds: int
    rss_before: float
    rss_loaded: float
    rss_peak: float | None
    load_seconds: float
    profile: str | None


async def scan(db: Database, chain: BenchChain, args: argparse.Namespace, cpu: CpuMeter) -> Scan:
    """The watcher from the first bench block to the head, every deposit credited."""
    watcher = ChainWatcher(db, bench_assets(chain.token), CHAIN, watcher_config(chain, args))
    async with watcher:
        freeze_startup_objects()  # as ``depositd worker`` does once started
        rss_before = rss_mb()
        peak_known = reset_peak_rss()
        # step() would load on its first round; loading here keeps the load out of the scan's
        # time and lets RSS be read around it
        started = time.perf_counter()
        await watcher._load()
        load_seconds = time.perf_counter() - started
        rss_loaded = rss_mb()
        assert watcher.status.watched_addresses == len(chain.watched)
        stages = clock_stages(watcher)
        profiles = Profiles(db) if args.profile else None
        rounds = 1
        with clock_owner_lookups(stages):
            if profiles:
                await profiles.start()
            cpu.lap(None)
            started = time.perf_counter()
            while await watcher.step():
                rounds += 1
            seconds = time.perf_counter() - started
            cpu.lap("watcher")
            if profiles:
                await profiles.stop()
        assert watcher.status.cursor == chain.last, watcher.status
    printed = profiles.report(args.engine) if profiles else None
    return Scan(
        seconds,
        dict(stages.seconds),
        rounds,
        rss_before,
        rss_loaded,
        rss_mb("VmHWM") if peak_known else None,
        load_seconds,
        printed,
    )


@dataclass
class Latency:
    blocks: int
    deposits: int
    appended_ms: list[float]
    committed_ms: list[float]
    rounds: int
    stages: dict[str, float]


async def follow_live(db: Database, chain: BenchChain, args: argparse.Namespace) -> Latency:
    """Blocks with deposits mined at a steady rate while the watcher follows the chain."""
    async with EvmRpc(chain.url) as rpc:
        start = await rpc.block_number() + 1
        config = watcher_config(
            chain,
            args,
            start_block=start,
            ws_url=f"ws://127.0.0.1:{chain.port}",
            poll_interval_seconds=args.live_poll,
        )
        watcher = ChainWatcher(db, bench_assets(chain.token), CHAIN, config)
        stages = clock_stages(watcher)
        # when each round ended and how far it had committed
        rounds: list[tuple[float, int | None]] = []
        step = watcher.step

        async def noted_step() -> bool:
            behind = await step()
            rounds.append((time.time(), watcher.status.cursor))
            return behind

        watcher.step = noted_step  # type: ignore[method-assign]
        with clock_owner_lookups(stages):
            following = asyncio.create_task(watcher.run())
            while not rounds:  # loaded and at the head  # noqa: ASYNC110 - it is our own loop
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # the newHeads subscription is up
            deposits_before = chain.deposits
            per_block = max(1, args.deposits // args.blocks)
            noise = args.noise // args.blocks
            mined_at: dict[int, float] = {}
            began = time.perf_counter()
            for index in range(args.live_blocks):
                await asyncio.sleep(
                    max(0.0, began + index * args.live_interval - time.perf_counter())
                )
                await chain.mine_block(rpc, per_block, noise)
                mined_at[start + index] = time.time()
            last = start + args.live_blocks - 1
            deadline = time.monotonic() + 60
            while (watcher.status.cursor or 0) < last:
                assert time.monotonic() < deadline, f"the watcher did not reach {last}"
                await asyncio.sleep(0.05)
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
    sent = chain.deposits - deposits_before
    credited = await credited_in(db, start, last)
    assert len(credited) == sent, f"{len(credited)} credited of {sent} live deposits"
    committed_at = {}
    for block in mined_at:
        committed_at[block] = next(
            t for t, cursor in rounds if cursor is not None and cursor >= block
        )
    return Latency(
        blocks=args.live_blocks,
        deposits=sent,
        appended_ms=[(at.timestamp() - mined_at[block]) * 1000 for block, at in credited],
        committed_ms=[(committed_at[block] - mined_at[block]) * 1000 for block, _ in credited],
        rounds=len(rounds),
        stages=dict(stages.seconds),
    )


def stage_order(stages: dict[str, float]) -> list[tuple[str, float]]:
    """Slowest first; a stage timed within recording right after the recording."""
    order = []
    for stage, seconds in sorted(stages.items(), key=lambda s: -s[1]):
        if stage.startswith(WITHIN):
            continue
        order.append((stage, seconds))
        if stage.startswith("record"):
            order += [(name, t) for name, t in stages.items() if name.startswith(WITHIN)]
    return order


# -- the run ----------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    rng = random.Random(f"addresses {args.seed}")
    watched = sorted({f"0x{rng.getrandbits(160):040x}" for _ in range(args.addresses)})
    with anvil_node() as (port, anvil_pid):
        print(f"anvil on port {port}; building the chain", flush=True)
        chain = await build_chain(port, watched, args)
        async with fresh_database(args.engine) as db:
            started = time.perf_counter()
            await add_watched_addresses(db, watched, timedelta(minutes=args.address_age))
            print(
                f"  {args.engine}: {len(watched):,} watched addresses stored"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
            cpu = CpuMeter({"anvil": anvil_pid})
            floor_before = await fetch_floor(chain, args)
            cpu.lap("floor (before)")
            print(f"  floor: {floor_before.seconds:.2f} s", flush=True)
            scanned = await scan(db, chain, args, cpu)
            print(f"  watcher: {scanned.seconds:.2f} s", flush=True)
            statuses = await deposits_by_status(db)
            sent = chain.scanned[0] + chain.scanned[1]
            assert statuses == {"credited": sent}, f"sent {sent:,} deposits; found {statuses}"
            cpu.lap(None)
            floor_after = await fetch_floor(chain, args)
            cpu.lap("floor (after)")
            print(f"  floor: {floor_after.seconds:.2f} s", flush=True)
            live = await follow_live(db, chain, args)
    report(args, chain, statuses, (floor_before, floor_after), scanned, live, cpu)


def report(
    args: argparse.Namespace,
    chain: BenchChain,
    statuses: dict[str, int],
    floors: tuple[Floor, Floor],
    scanned: Scan,
    live: Latency,
    cpu: CpuMeter,
) -> None:
    blocks = chain.last - chain.first + 1
    eth, token, noise = chain.scanned
    scan_deposits = eth + token
    credited = statuses.get("credited", 0)
    print()
    if scanned.profile:
        print(scanned.profile)
        print("(profiled: the watcher's figures below include cProfile's overhead)")
    print(
        f"scan.py {args.engine}: {len(chain.watched):,} watched addresses;"
        f" blocks {chain.first:,}..{chain.last:,} ({blocks:,}) holding {scan_deposits:,}"
        f" deposits ({eth:,} ETH, {token:,} USDT) among {noise:,} other transactions"
    )
    print(
        f"RPC: {args.batch_size} calls per batch, {args.concurrency} batches in flight,"
        f" {args.max_blocks_per_round} blocks per round, native reads: {args.native_reads};"
        " deposits need 0 confirmations"
    )
    assert credited == scan_deposits, f"{credited:,} credited of {scan_deposits:,} sent"
    print(f"credited {credited:,} of {scan_deposits:,} deposits sent (statuses: {statuses})")
    floor = min(f.seconds for f in floors)
    print(f"{'':<34} {'seconds':>8} {'blocks/s':>9} {'deposits/s':>11}")
    for name, seconds in (
        ("floor: every read (before)", floors[0].seconds),
        ("floor: every read (after)", floors[1].seconds),
        ("watcher: first sight to credited", scanned.seconds),
    ):
        print(
            f"{name:<34} {seconds:>8.2f} {blocks / seconds:>9,.0f}"
            f" {scan_deposits / seconds:>11,.0f}"
        )
    ratio = floor / scanned.seconds
    print(f"watcher / floor (the faster floor): {ratio:.0%}")
    lacking = "transactions" if args.native_reads == "receipts" else "receipts"
    for when, part in zip(("before", "after"), floors, strict=True):
        print(
            f"  floor {when}: the ranges alone {part.ranges:.2f} s, the {eth:,} ETH deposits'"
            f" {lacking} by hash alone {part.by_hash:.2f} s (overlapping)"
        )
    print(f"watcher: {scanned.rounds} rounds; where its time went:")
    accounted = 0.0
    for stage, seconds in stage_order(scanned.stages):
        if not stage.startswith(WITHIN):
            accounted += seconds
        print(f"  {stage:<32} {seconds:>6.2f} s {seconds / scanned.seconds:>5.0%}")
    rest = scanned.seconds - accounted
    print(f"  {'the rest':<32} {rest:>6.2f} s {rest / scanned.seconds:>5.0%}")
    print(f"loading the addresses (before the scan): {scanned.load_seconds:.2f} s")
    print(f"CPU seconds used ({os.cpu_count()} cores; postgres: all its processes):")
    for phase, used in cpu.laps.items():
        print(
            f"  {phase:<16} wall {used['wall']:>6.2f}  this process {used['ours']:>6.2f}"
            f"  anvil {used['anvil']:>6.2f}  postgres {used['postgres']:>6.2f}"
        )
    per_100k = 100_000 / len(chain.watched)
    loaded = scanned.rss_loaded - scanned.rss_before
    print(
        f"RSS: {scanned.rss_before:,.0f} MB before loading the addresses,"
        f" {scanned.rss_loaded:,.0f} MB after (+{loaded:,.0f} MB,"
        f" {loaded * per_100k:,.0f} MB per 100,000 addresses)"
    )
    growth = None
    if scanned.rss_peak is not None:
        growth = scanned.rss_peak - scanned.rss_before
        print(
            f"RSS peak over load + scan: {scanned.rss_peak:,.0f} MB (+{growth:,.0f} MB,"
            f" {growth * per_100k:,.0f} MB per 100,000 addresses)"
        )
    peak_process = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole process (setup included): {peak_process:,.0f} MB")
    p50, p99 = percentile(live.appended_ms, 50), percentile(live.appended_ms, 99)
    c50, c99 = percentile(live.committed_ms, 50), percentile(live.committed_ms, 99)
    print(
        f"latency: {live.blocks} blocks one every {args.live_interval} s, {live.deposits:,}"
        f" deposits, {live.rounds} watcher rounds (newHeads over WebSocket, poll"
        f" {args.live_poll} s)"
    )
    print(f"  mined -> deposit.credited appended: p50 {p50:,.0f} ms, p99 {p99:,.0f} ms,"
          f" max {max(live.appended_ms):,.0f} ms")  # fmt: skip
    print(f"  mined -> round committed:           p50 {c50:,.0f} ms, p99 {c99:,.0f} ms,"
          f" max {max(live.committed_ms):,.0f} ms")  # fmt: skip
    per_round = ", ".join(
        f"{stage.strip()} {seconds / live.rounds * 1000:.1f}"
        for stage, seconds in stage_order(live.stages)
    )
    print(f"  mean ms per round: {per_round}")
    rate = scan_deposits / scanned.seconds
    growth_100k = (growth if growth is not None else loaded) * per_100k
    print(
        "targets:" + (" (a --quick run is a smoke test: these say nothing)" if args.quick else "")
    )
    for name, value, met in (
        ("watcher >= 60% of the floor", f"{ratio:.0%}", ratio >= 0.6),
        (">= 2,000 deposits/s", f"{rate:,.0f}/s", rate >= 2000),
        ("p99 mined -> credited < 250 ms", f"{p99:,.0f} ms", p99 < 250),
        ("  the same, to the commit (stricter)", f"{c99:,.0f} ms", c99 < 250),
        ("RSS growth < 100 MB per 100k addresses", f"{growth_100k:,.0f} MB", growth_100k < 100),
    ):
        print(f"  {name:<40} {value:>10}  {'met' if met else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--addresses", type=int, default=100_000, help="watched addresses")
    parser.add_argument("--blocks", type=int, default=2_000, help="blocks to scan")
    parser.add_argument("--deposits", type=int, default=20_000, help="deposits in them")
    parser.add_argument("--noise", type=int, default=20_000, help="unrelated transactions")
    parser.add_argument("--batch-size", type=int, default=50, help="calls per JSON-RPC batch")
    parser.add_argument("--max-blocks-per-round", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="batches in flight")
    parser.add_argument("--live-blocks", type=int, default=240, help="blocks in latency phase")
    parser.add_argument("--live-interval", type=float, default=0.25, help="seconds per block")
    parser.add_argument("--live-poll", type=float, default=0.1, help="watcher poll interval")
    parser.add_argument(
        "--address-age",
        type=float,
        default=60,
        help="minutes since the addresses were made (the watcher re-reads addresses made in"
        " the last 5 minutes on every round)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--native-reads",
        choices=("receipts", "blocks"),
        default="receipts",
        help="how the watcher (and the floor) find ETH deposits: ChainConfig.native_reads",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the watcher's scan (slows it)"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    configure_logging("warning")  # as a service would run: no line per deposit
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
