"""Credited deposits per second through the engine, against a bare INSERT loop of the same rows.

For each database engine, four timed runs on a fresh database:

  bare single     one deposit row INSERTed and committed per transaction
  engine single   one observation (already deep enough to credit) per record_observation call
  bare batched    the same rows, one executemany INSERT + commit per block
  engine batched  one record_observations call per block

The engine does far more than the bare loop (state lookup with row locks, deposit row, two
ledger entries, two balance upserts, the event counter, the event, the outbox fan-out), so
the ratio engine/bare says what that costs. Figures are only comparable within one run.

    .venv/bin/python bench/record.py [--single 2000] [--batched 20000] [--block 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from depositd.clock import utcnow
from depositd.config import load_config
from depositd.db.engine import Database
from depositd.db.migrate import upgrade
from depositd.db.tables import deposits
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import ChainRef, Observation, ToAddress
from depositd.ids import new_id
from depositd.services import merchants, queries, users
from depositd.services.observations import record_observation, record_observations

CHAIN = "anvil"
ADDRESS = "0x" + "ab" * 20
PG_URL = os.environ.get("DEPOSITD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


class Workload:
    """Fresh deposit identities and the matching bare rows."""

    def __init__(self, merchant_id: str, user_id: str) -> None:
        self.merchant_id, self.user_id = merchant_id, user_id
        self.counter = 0

    def observations(self, n: int) -> list[Observation]:
        out = []
        for _ in range(n):
            self.counter += 1
            out.append(
                Observation(
                    ref=ChainRef(CHAIN, f"0x{self.counter:064x}", 0),
                    owner=ToAddress(CHAIN, ADDRESS),
                    asset="ETH",
                    amount=10**18,
                    confirmations=12,
                    block_hash="0xb1",
                    block_number=1,
                )
            )
        return out

    def rows(self, n: int) -> list[dict[str, object]]:
        now = utcnow()
        out = []
        for obs in self.observations(n):
            assert isinstance(obs.ref, ChainRef)
            out.append(
                {
                    "id": new_id("dep"),
                    "identity": obs.ref.key,
                    "merchant_id": self.merchant_id,
                    "user_id": self.user_id,
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
        return out


async def timed(n: int, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return n / (time.perf_counter() - started)


async def bench_engine(
    db: Database, assets: AssetBook, single: int, batched: int, block: int
) -> dict[str, float]:
    await upgrade(db)
    merchant = await merchants.create_merchant(db, "bench")
    user, _ = await users.ensure_user(db, merchant.id, "u")
    await users.add_address(db, merchant.id, "u", CHAIN, ADDRESS)
    load = Workload(merchant.id, user.id)
    # warm up pools and statement caches
    await record_observations(db, assets, load.observations(200))

    async def bare_single() -> None:
        for row in load.rows(single):
            async with db.writer.begin() as conn:
                await conn.execute(deposits.insert(), row)

    async def engine_single() -> None:
        for obs in load.observations(single):
            await record_observation(db, assets, obs)

    async def bare_batched() -> None:
        for _ in range(batched // block):
            rows = load.rows(block)
            async with db.writer.begin() as conn:
                await conn.execute(deposits.insert(), rows)

    async def engine_batched() -> None:
        for _ in range(batched // block):
            await record_observations(db, assets, load.observations(block))

    figures = {
        "bare single": await timed(single, bare_single),
        "engine single": await timed(single, engine_single),
        "bare batched": await timed(batched, bare_batched),
        "engine batched": await timed(batched, engine_batched),
    }
    audit = await queries.audit_ledger(db)
    assert audit.ok, "ledger audit failed after the benchmark"
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=2000)
    parser.add_argument("--batched", type=int, default=20000)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--engines", default="sqlite,postgresql")
    args = parser.parse_args()
    assets = load_config(environ={}).asset_book()
    results: dict[str, dict[str, float]] = {}
    for engine in args.engines.split(","):
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
                try:
                    results[engine] = await bench_engine(
                        db, assets, args.single, args.batched, args.block
                    )
                finally:
                    await db.dispose()
        else:
            admin = make_url(PG_URL)
            name = f"depositd_bench_{uuid.uuid4().hex[:8]}"
            dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await asyncpg.connect(dsn)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            db = Database(admin.set(database=name))
            try:
                results[engine] = await bench_engine(
                    db, assets, args.single, args.batched, args.block
                )
            finally:
                await db.dispose()
                conn = await asyncpg.connect(dsn)
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                await conn.close()
    print(f"single: {args.single} deposits; batched: {args.batched} in blocks of {args.block}")
    print(f"{'engine':<11} {'mode':<8} {'bare rows/s':>12} {'credited/s':>12} {'ratio':>7}")
    for engine, figures in results.items():
        for mode in ("single", "batched"):
            bare, ours = figures[f"bare {mode}"], figures[f"engine {mode}"]
            print(f"{engine:<11} {mode:<8} {bare:>12,.0f} {ours:>12,.0f} {ours / bare:>7.0%}")


if __name__ == "__main__":
    asyncio.run(main())
