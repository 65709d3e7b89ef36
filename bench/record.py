"""Credited deposits per second through the engine, against bare INSERT loops of the same rows.

For each database engine, on a fresh database, each mode is timed three ways:

  bare deposits   only the deposit rows, plain INSERTs (the narrowest floor)
  bare all rows   every row the engine writes for a credited deposit — the deposit, its two
                  ledger entries and its event — as plain INSERTs, no logic, no locks
  engine          the observations (each already deep enough to credit) through
                  record_observation / record_observations: state lookup with row locks,
                  state machine, deposit row, ledger entries, balance upserts, the gap-free
                  event counter, the event, the outbox fan-out

Modes: "single" is one deposit per transaction, first with 1 writer, then with --writers
concurrent tasks (as concurrent provider callbacks would be); "batched" is one transaction
per block of --block deposits (as a chain watcher records a block). Ratios compare figures of
the same run only; the machine is shared and noisy.

    .venv/bin/python bench/record.py [--single 2000] [--batched 20000] [--block 500]
                                     [--writers 8] [--engines sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from _common import fresh_database
from depositd.clock import utcnow
from depositd.config import load_config
from depositd.db.engine import Database
from depositd.db.tables import accounts, deposits, events, ledger_entries
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import ChainRef, Observation, ToAddress
from depositd.ids import new_id
from depositd.logs import configure_logging
from depositd.services import merchants, users
from depositd.services.group_commit import Recorder
from depositd.services.observations import record_observations

CHAIN = "anvil"


def address_of(user: int) -> str:
    return f"0x{user:040x}"


#: (bare deposits, bare all rows, engine) in deposits per second, per mode
Figures = dict[str, tuple[float, float, float]]
Rows = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


class Workload:
    """Fresh deposit identities, and the rows the engine would write for them."""

    def __init__(self, merchant_id: str, user_ids: list[str], accounts: tuple[int, int]) -> None:
        self.merchant_id, self.user_ids = merchant_id, user_ids
        self.user_account, self.external_account = accounts
        self.counter = 0
        self.seq = 10**12  # far above the engine's own event seqs

    def observations(self, n: int) -> list[Observation]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(
                Observation(
                    ref=ChainRef(CHAIN, f"0x{self.counter:064x}", 0),
                    owner=ToAddress(CHAIN, address_of(self.counter % len(self.user_ids))),
                    asset="ETH",
                    amount=10**18,
                    confirmations=12,
                    block_hash="0xb1",
                    block_number=1,
                )
            )
        return out

    def rows(self, n: int) -> Rows:
        """(deposit rows, ledger rows, event rows) for ``n`` new credited deposits."""
        now = utcnow()
        deposit_rows, ledger_rows, event_rows = [], [], []
        for obs in self.observations(n):
            assert isinstance(obs.ref, ChainRef)
            assert isinstance(obs.owner, ToAddress)
            deposit_id = new_id("dep")
            deposit_rows.append(
                {
                    "id": deposit_id,
                    "identity": obs.ref.key,
                    "merchant_id": self.merchant_id,
                    "user_id": self.user_ids[int(obs.owner.address, 16)],
                    "asset": "ETH",
                    "amount": obs.amount,
                    "source": "chain:anvil",
                    "chain": CHAIN,
                    "tx_hash": obs.ref.tx_hash,
                    "log_index": 0,
                    "provider": None,
                    "provider_deposit_id": None,
                    "block_number": 1,
                    "block_hash": "0xb1",
                    "status": "credited",
                    "confirmations": 12,
                    "required_confirmations": 3,
                    "reason_code": "confirmed",
                    "reason_params": {"confirmations": 12},
                    "version": 1,
                    "credit_generation": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for account, amount in (
                (self.external_account, -obs.amount),
                (self.user_account, obs.amount),
            ):
                ledger_rows.append(
                    {
                        "account_id": account,
                        "deposit_id": deposit_id,
                        "kind": "credit",
                        "generation": 0,
                        "amount": amount,
                        "created_at": now,
                    }
                )
            self.seq += 1
            event_rows.append(
                {
                    "seq": self.seq,
                    "id": new_id("evt"),
                    "merchant_id": self.merchant_id,
                    "type": "deposit.credited",
                    "deposit_id": deposit_id,
                    "version": 1,
                    "data": {**deposit_rows[-1], "created_at": None, "updated_at": None},
                    "created_at": now,
                }
            )
        return deposit_rows, ledger_rows, event_rows


async def timed(n: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return n / (time.perf_counter() - started)


async def in_parallel(
    writers: int, items: list[Any], work: Callable[[Any], Awaitable[None]]
) -> None:
    """Run ``work`` over ``items`` with ``writers`` concurrent tasks."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(writers)))


async def bench_engine(db: Database, assets: AssetBook, args: argparse.Namespace) -> Figures:
    merchant = await merchants.create_merchant(db, "bench")
    user_ids = []
    for n in range(args.users):
        user, _ = await users.ensure_user(db, merchant.id, f"u{n}")
        await users.add_address(db, merchant.id, f"u{n}", CHAIN, address_of(n))
        user_ids.append(user.id)
    async with db.writer.begin() as conn:
        result = await conn.execute(
            accounts.insert().returning(accounts.c.id),
            [
                {
                    "key": f"bench:{side}",
                    "merchant_id": merchant.id,
                    "user_id": None,
                    "asset": "ETH",
                    "side": side,
                    "balance": 0,
                }
                for side in ("available", "external")
            ],
        )
        account_ids = tuple(result.scalars())
    load = Workload(merchant.id, user_ids, (account_ids[0], account_ids[1]))
    # warm up pools and statement caches
    await record_observations(db, assets, load.observations(200))

    insert = bare_inserter(db)

    async def insert_deposits(rows: Rows) -> None:
        await insert(rows, everything=False)

    async def insert_all(rows: Rows) -> None:
        await insert(rows, everything=True)

    async def record(observations: list[Observation]) -> None:
        await record_observations(db, assets, observations)

    recorder = Recorder(db, assets)

    async def record_grouped(observations: list[Observation]) -> None:
        for observation in observations:
            await recorder.record(observation)

    async def three_ways(
        writers: int, per_txn: int, total: int, engine: Callable[[Any], Awaitable[None]] = record
    ) -> tuple[float, float, float]:
        txns = total // per_txn
        bare_deposits = await timed(
            total,
            lambda: in_parallel(
                writers, [load.rows(per_txn) for _ in range(txns)], insert_deposits
            ),
        )
        bare_all = await timed(
            total,
            lambda: in_parallel(writers, [load.rows(per_txn) for _ in range(txns)], insert_all),
        )
        ours = await timed(
            total,
            lambda: in_parallel(writers, [load.observations(per_txn) for _ in range(txns)], engine),
        )
        return bare_deposits, bare_all, ours

    figures: Figures = {}
    for writers in (1, args.writers):
        figures[f"single x{writers}"] = await three_ways(writers, 1, args.single)
    figures[f"grouped x{args.writers}"] = await three_ways(
        args.writers, 1, args.single, record_grouped
    )
    figures[f"batched {args.block}"] = await three_ways(1, args.block, args.batched)
    async with UnitOfWork(db, write=False) as uow:  # the bare rows make other checks moot
        assert not await uow.accounts.unbalanced_postings(), "unbalanced ledger postings"
    return figures


def bare_inserter(db: Database) -> Callable[[Rows, bool], Awaitable[None]]:
    """Plain INSERTs through the same driver path the engine's recording uses.

    PostgreSQL: asyncpg directly (``executemany`` in one transaction). SQLite: the recording
    connection in its own thread. So the floor is as fast as that path can write rows.
    """
    tables = (deposits, ledger_entries, events)
    if db.is_sqlite:

        def write(rows: Rows, everything: bool) -> None:
            with db.recorder_engine.begin() as conn:
                for table, table_rows in zip(
                    tables, rows if everything else rows[:1], strict=False
                ):
                    conn.execute(table.insert(), table_rows)

        async def insert_sqlite(rows: Rows, everything: bool) -> None:
            async with db.recorder_lock:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(db.recorder_thread, write, rows, everything)

        return insert_sqlite

    async def insert_postgres(rows: Rows, everything: bool) -> None:
        pool = await db.driver_pool()
        async with pool.acquire() as conn, conn.transaction():
            for table, table_rows in zip(tables, rows if everything else rows[:1], strict=False):
                columns = list(table_rows[0])
                sql = (
                    f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES"
                    f" ({', '.join(f'${n}' for n in range(1, len(columns) + 1))})"
                )
                await conn.executemany(sql, [[_pg(row[c]) for c in columns] for row in table_rows])

    return insert_postgres


def _pg(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, int) and abs(value) > 2**62:
        return Decimal(value)
    return value


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000, help="deposits per single run")
    parser.add_argument("--batched", type=int, default=20000, help="deposits in batched run")
    parser.add_argument("--block", type=int, default=500, help="deposits per batch")
    parser.add_argument("--writers", type=int, default=8, help="concurrent single writers")
    parser.add_argument("--users", type=int, default=100, help="deposits spread over N users")
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    assets = load_config(environ={}).asset_book()
    results: dict[str, Figures] = {}
    for engine in args.engines.split(","):
        async with fresh_database(engine, args.writers) as db:
            results[engine] = await bench_engine(db, assets, args)
            print(f"{engine}: done", flush=True)
    print(
        f"single: {args.single} deposits, one per transaction, 1 and {args.writers} writers;"
        f" batched: {args.batched} deposits in blocks of {args.block}"
    )
    print("deposits/s; ratio = engine / bare (same run)")
    print(
        f"{'database':<11} {'mode':<12} {'bare deposits':>13} {'bare all rows':>13}"
        f" {'engine':>8} {'vs all rows':>11} {'vs deposits':>11}"
    )
    for engine, figures in results.items():
        for mode, (bare_deposits, bare_all, ours) in figures.items():
            print(
                f"{engine:<11} {mode:<12} {bare_deposits:>13,.0f} {bare_all:>13,.0f}"
                f" {ours:>8,.0f} {ours / bare_all:>11.0%} {ours / bare_deposits:>11.0%}"
            )


if __name__ == "__main__":
    configure_logging("warning")  # as a service would run: no line per deposit
    asyncio.run(main())
