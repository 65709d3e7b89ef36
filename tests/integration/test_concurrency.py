"""Many writers recording the same deposit at once still credit it exactly once."""

from __future__ import annotations

import asyncio

from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.errors import ObservationConflict
from depositd.services import queries
from depositd.services.group_commit import Recorder
from depositd.services.observations import record_observation

from .helpers import ETH, eth_transfer, merchant_with_user

WRITERS = 20


async def test_twenty_concurrent_writers_credit_once(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    observation = eth_transfer(address, 42, 12, amount=2 * ETH)
    start = asyncio.Event()

    async def writer() -> bool:
        await start.wait()
        return (await record_observation(db, assets, observation)).changed

    tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
    await asyncio.sleep(0.05)
    start.set()
    changed = await asyncio.gather(*tasks)

    assert sum(changed) == 1
    events = await queries.events_after(db, merchant_id, 0, 100)
    assert [e.type for e in events] == ["deposit.credited"]
    records = await queries.transaction_records(db, merchant_id, "alice", None, None, 100)
    assert [(r.kind, r.amount) for r in records.items] == [("credit", 2 * ETH)]
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == 2 * ETH
    assert (await queries.audit_ledger(db)).ok


async def test_concurrent_writers_of_different_deposits_keep_seq_gap_free(
    db: Database, assets: AssetBook
) -> None:
    merchant_id, address = await merchant_with_user(db)

    async def writer(tx: int) -> None:
        for confirmations in (0, 1, 3):
            await record_observation(db, assets, eth_transfer(address, tx, confirmations))

    await asyncio.gather(*(writer(tx) for tx in range(WRITERS)))
    events = await queries.events_after(db, merchant_id, 0, 1000)
    assert [e.seq for e in events] == list(range(1, 3 * WRITERS + 1))
    versions: dict[str, list[int]] = {}
    for event in events:
        versions.setdefault(event.data["id"], []).append(event.data["version"])
    assert all(v == [1, 2, 3] for v in versions.values())
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == WRITERS * ETH
    assert (await queries.audit_ledger(db)).ok


async def test_group_commit_credits_once_and_isolates_a_bad_observation(
    db: Database, assets: AssetBook
) -> None:
    merchant_id, address = await merchant_with_user(db)
    recorder = Recorder(db, assets)
    good = [eth_transfer(address, tx, 12) for tx in range(30)]
    duplicates = [eth_transfer(address, 0, 12) for _ in range(10)]
    await record_observation(db, assets, eth_transfer(address, 99, 1))
    conflicting = eth_transfer(address, 99, 12, amount=5 * ETH)  # recorded as 1 ETH

    outcomes = await asyncio.gather(
        *(recorder.record(obs) for obs in [*good, conflicting, *duplicates]),
        return_exceptions=True,
    )

    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], ObservationConflict)
    recorded = [o for o in outcomes if not isinstance(o, BaseException)]
    assert sum(r.changed for r in recorded) == 30
    events = await queries.events_after(db, merchant_id, 0, 1000)
    assert [e.type for e in events].count("deposit.credited") == 30
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == 30 * ETH
    assert (await queries.audit_ledger(db)).ok


async def test_group_commit_batches_in_flight_together_credit_each_deposit_once(
    db: Database, assets: AssetBook
) -> None:
    # small batches: a backlog of 4 starts a second batch while one is in flight, and every
    # deposit is sent three times, so batches in flight together race on the same deposits
    merchant_id, address = await merchant_with_user(db)
    recorder = Recorder(db, assets, max_batch=32)
    sent = [eth_transfer(address, tx % 100, 12) for tx in range(300)]

    recorded = await asyncio.gather(*(recorder.record(obs) for obs in sent))

    assert sum(r.changed for r in recorded) == 100
    events = await queries.events_after(db, merchant_id, 0, 1000)
    assert [e.seq for e in events] == list(range(1, 101))
    assert [e.type for e in events] == ["deposit.credited"] * 100
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == 100 * ETH
    assert (await queries.audit_ledger(db)).ok


async def test_concurrent_first_credits_of_a_new_merchant(db: Database, assets: AssetBook) -> None:
    # the merchant's external account does not exist yet: every writer tries to open it
    merchant_id, address = await merchant_with_user(db)
    start = asyncio.Event()

    async def writer(tx: int) -> None:
        await start.wait()
        await record_observation(db, assets, eth_transfer(address, tx, 12))

    tasks = [asyncio.create_task(writer(tx)) for tx in range(WRITERS)]
    await asyncio.sleep(0.05)
    start.set()
    await asyncio.gather(*tasks)
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == WRITERS * ETH
    audit = await queries.audit_ledger(db)
    assert audit.ok, audit
    external = [a for a in audit.accounts if a.key.endswith(":external")]
    assert [(a.cached, a.summed) for a in external] == [(None, -WRITERS * ETH)]


async def test_a_cursor_reader_never_misses_an_event_of_concurrent_writers(
    db: Database, assets: AssetBook
) -> None:
    merchant_id, address = await merchant_with_user(db)
    total = WRITERS * 3
    done = asyncio.Event()

    async def writer(tx: int) -> None:
        for confirmations in (0, 1, 3):
            await record_observation(db, assets, eth_transfer(address, tx, confirmations))

    async def reader() -> list[int]:
        seen: list[int] = []
        after = 0
        while len(seen) < total:
            finished = done.is_set()  # before the read: an empty page after it means the end
            page = await queries.events_after(db, merchant_id, after, 7)
            seen += [event.seq for event in page]
            after = page[-1].seq if page else after
            if not page and finished:
                break
            await asyncio.sleep(0)
        return seen

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(tx) for tx in range(WRITERS)))
    done.set()
    # every event, each once, in order: none was committed behind the reader's cursor
    assert await reading == list(range(1, total + 1))


async def test_first_concurrent_writers_share_one_driver_pool_postgresql(pg_url: str) -> None:
    # [postgresql] only: SQLite has no driver pool, its writes share one connection
    db = Database(pg_url, pool_size=4)
    try:
        pools = await asyncio.gather(*(db.driver_pool() for _ in range(20)))
        assert all(pool is pools[0] for pool in pools)
    finally:
        await db.dispose()
