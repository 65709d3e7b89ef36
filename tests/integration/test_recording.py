"""Recording observations: credits, reversals, batches, events and the outbox."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import DBAPIError

from depositd.clock import utcnow
from depositd.db import recording
from depositd.db.engine import STATEMENT_LIFETIME_SECONDS, Database
from depositd.db.tables import endpoints, ledger_entries
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import DepositStatus
from depositd.errors import UnknownOwner
from depositd.ids import new_id
from depositd.services import observations, queries, users
from depositd.services.observations import record_observation, record_observations

from ..conftest import fresh_pg_database
from .helpers import CHAIN, ETH, eth_transfer, merchant_with_user


async def test_confirmations_then_credit_once(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    seen = []
    for confirmations in (0, 1, 2, 2, 1, 3, 3, 7):
        recorded = await record_observation(db, assets, eth_transfer(address, 1, confirmations))
        assert recorded.deposit is not None
        seen.append((recorded.deposit.status.value, recorded.changed))
    assert seen == [
        ("pending", True),
        ("confirming", True),
        ("confirming", True),
        ("confirming", False),
        ("confirming", False),
        ("credited", True),
        ("credited", False),
        ("credited", False),
    ]
    balances = (await queries.user_balances(db, merchant_id, "alice")).balances
    assert [(b.asset, b.available, b.locked) for b in balances] == [("ETH", ETH, 0)]
    events = await queries.events_after(db, merchant_id, 0, 100)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.type for e in events] == [
        "deposit.pending",
        "deposit.confirming",
        "deposit.confirming",
        "deposit.credited",
    ]
    assert [e.data["version"] for e in events] == [1, 2, 3, 4]


async def test_reversal_posts_a_compensating_entry(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    await record_observation(db, assets, eth_transfer(address, 7, 5, amount=3 * ETH))
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == 3 * ETH

    reversed_ = await record_observation(
        db, assets, eth_transfer(address, 7, 0, amount=3 * ETH, removed=True)
    )
    assert reversed_.deposit is not None
    assert reversed_.deposit.status is DepositStatus.REVERSED
    assert reversed_.deposit.reason.render("en") == (
        "A deep chain reorganisation removed this credited deposit; the credit was reversed."
    )

    balances = (await queries.user_balances(db, merchant_id, "alice")).balances
    assert [(b.asset, b.available, b.locked) for b in balances] == [("ETH", 0, 0)]
    records = await queries.transaction_records(db, merchant_id, "alice", None, None, 10)
    assert [(r.kind, r.amount, r.side) for r in records.items] == [
        ("reversal", -3 * ETH, "available"),
        ("credit", 3 * ETH, "available"),
    ]
    events = await queries.events_after(db, merchant_id, 0, 10)
    assert [e.type for e in events] == ["deposit.credited", "deposit.reversed"]
    audit = await queries.audit_ledger(db)
    assert audit.ok, audit

    # the same removal again, and a replay of the removed block, change nothing
    again = await record_observation(
        db, assets, eth_transfer(address, 7, 0, amount=3 * ETH, removed=True)
    )
    replay = await record_observation(db, assets, eth_transfer(address, 7, 9, amount=3 * ETH))
    assert (again.changed, replay.changed) == (False, False)

    # mined again in another block: credited again, once
    back = await record_observation(
        db, assets, eth_transfer(address, 7, 4, amount=3 * ETH, block="0xb2")
    )
    assert back.deposit is not None
    assert back.deposit.status is DepositStatus.CREDITED
    assert ((await queries.user_balances(db, merchant_id, "alice")).balances)[
        0
    ].available == 3 * ETH
    assert (await queries.audit_ledger(db)).ok


async def test_a_block_in_one_batch(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    block = [eth_transfer(address, tx, 3, log_index=tx % 4) for tx in range(200)]
    block.append(eth_transfer(address, 5, 3, log_index=1))  # a duplicate within the batch
    recorded = await record_observations(db, assets, block)
    assert sum(r.changed for r in recorded) == 200
    assert [r.seq for r in recorded if r.changed] == list(range(1, 201))
    balances = (await queries.user_balances(db, merchant_id, "alice")).balances
    assert balances[0].available == 200 * ETH
    # a replay of the whole block is a no-op
    assert not any(r.changed for r in await record_observations(db, assets, block))
    assert (await queries.audit_ledger(db)).ok


async def test_below_minimum_is_rejected_with_a_hint(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    recorded = await record_observation(
        db, assets, eth_transfer(address, 9, 50, amount=ETH // 10_000)
    )
    assert recorded.deposit is not None
    assert recorded.deposit.status is DepositStatus.REJECTED
    assert recorded.deposit.reason.render("en") == (
        "Sent below the 0.001 ETH minimum; not credited."
    )
    assert recorded.deposit.reason.render("zh-CN") == "金额低于最低充值额 0.001 ETH，不予入账。"
    assert (await queries.user_balances(db, merchant_id, "alice")).balances == []


async def test_outbox_rows_follow_subscriptions(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    everything, credits_only, disabled = new_id("end"), new_id("end"), new_id("end")
    async with UnitOfWork(db, write=True) as uow:
        now = utcnow()
        await uow.endpoints.add(everything, merchant_id, "https://a.example/hook", ["*"], now)
        await uow.endpoints.add(
            credits_only,
            merchant_id,
            "https://b.example/hook",
            ["deposit.credited", "deposit.reversed"],
            now,
        )
        await uow.endpoints.add(disabled, merchant_id, "https://c.example/hook", ["*"], now)
        await uow.commit()
    async with db.writer.begin() as conn:
        await conn.execute(
            endpoints.update().where(endpoints.c.id == disabled).values(disabled_at=utcnow())
        )

    for confirmations in (0, 2, 3):
        await record_observation(db, assets, eth_transfer(address, 1, confirmations))
    async with UnitOfWork(db, write=False) as uow:
        assert await uow.endpoints.deliveries_for(everything) == [
            (1, "deposit.pending"),
            (2, "deposit.confirming"),
            (3, "deposit.credited"),
        ]
        assert await uow.endpoints.deliveries_for(credits_only) == [(3, "deposit.credited")]
        assert await uow.endpoints.deliveries_for(disabled) == []


async def test_failed_batch_leaves_nothing_behind(db: Database, assets: AssetBook) -> None:
    merchant_id, address = await merchant_with_user(db)
    good = eth_transfer(address, 1, 3)
    unknown = eth_transfer("0x" + "ee" * 20, 2, 3)
    with pytest.raises(UnknownOwner, match="no address"):
        await record_observations(db, assets, [good, unknown])
    assert await queries.events_after(db, merchant_id, 0, 10) == []
    assert (await queries.user_balances(db, merchant_id, "alice")).balances == []
    # and the cursor did not move: the next event is still seq 1
    assert (await record_observation(db, assets, good)).seq == 1


async def test_the_database_refuses_to_edit_or_delete_ledger_entries(
    db: Database, assets: AssetBook
) -> None:
    _merchant_id, address = await merchant_with_user(db)
    await record_observation(db, assets, eth_transfer(address, 1, 3))
    for statement in (
        ledger_entries.update().values(amount=1),
        ledger_entries.delete(),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with db.writer.begin() as conn:
                await conn.execute(statement)
    assert (await queries.audit_ledger(db)).ok


async def test_owners_survive_a_full_owner_cache(
    db: Database, assets: AssetBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cache of who owns which address is emptied when full: never the batch's own owners
    monkeypatch.setattr(observations, "_OWNER_CACHE_LIMIT", 2)
    merchant_id, _ = await merchant_with_user(db, "alice")
    addresses = []
    for name in ("bob", "carol", "dave"):
        await users.ensure_user(db, merchant_id, name)
        address = "0x" + name.encode().hex().ljust(40, "0")
        await users.add_address(db, merchant_id, name, CHAIN, address)
        addresses.append(address.upper().replace("0X", "0x"))  # any case finds the owner
    for round_ in range(2):
        batch = [eth_transfer(a, 10 * round_ + n, 3) for n, a in enumerate(addresses)]
        recorded = await record_observations(db, assets, batch)
        assert [r.deposit.user_external_id for r in recorded if r.deposit] == [
            "bob",
            "carol",
            "dave",
        ]
    assert len(db.owner_cache) <= 3


async def test_postgresql_locks_a_grown_table_by_its_index(assets: AssetBook) -> None:
    """A statement prepared while a fresh database was empty gets a generic plan after five
    runs, which PostgreSQL keeps until the table is next analyzed: it scanned every deposit to
    lock a batch (3-9 ms a batch once a burst of callbacks had filled the table). The recording
    path's connections prepare their statements again after a second, planned for the table
    as it is then."""
    async with fresh_pg_database("depositd_plans") as url:
        db = Database(url)
        try:
            _merchant_id, address = await merchant_with_user(db)
            pool = await db.driver_pool()
            async with pool.acquire() as conn:
                batch = [f"nothing-{n}" for n in range(20)]
                for _ in range(8):  # past the five runs after which a generic plan may stay
                    await conn.fetch(recording.LOCK, batch)
                grown = [eth_transfer(address, tx, 0) for tx in range(3000)]
                await record_observations(db, assets, grown)
                await asyncio.sleep(STATEMENT_LIFETIME_SECONDS + 0.2)
                # this backend's counts not yet reported: none are, inside a transaction
                scans = "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'deposits'"
                async with conn.transaction():
                    before = await conn.fetchval(scans)
                    locked = await conn.fetch(recording.LOCK, [grown[7].ref.key, *batch])
                    after = await conn.fetchval(scans)
            assert [row["identity"] for row in locked] == [grown[7].ref.key]
            assert after - before == 0
        finally:
            await db.dispose()


async def test_owners_already_remembered_survive_a_full_cache(
    db: Database, assets: AssetBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cache of owners is emptied when it would grow past its limit; a batch whose other
    # owners were remembered before must still find them
    monkeypatch.setattr(observations, "_OWNER_CACHE_LIMIT", 2)
    merchant_id, alice = await merchant_with_user(db, "alice")
    bob = "0x" + "b0b".ljust(40, "0")
    carol = "0x" + "ca201".ljust(40, "0")
    await users.ensure_user(db, merchant_id, "bob")
    await users.add_address(db, merchant_id, "bob", CHAIN, bob)
    await users.ensure_user(db, merchant_id, "carol")
    await users.add_address(db, merchant_id, "carol", CHAIN, carol)
    await record_observation(db, assets, eth_transfer(alice, 1, 0))
    await record_observation(db, assets, eth_transfer(bob, 2, 0))

    recorded = await record_observations(
        db, assets, [eth_transfer(alice, 3, 0), eth_transfer(carol, 4, 0)]
    )

    assert [r.changed for r in recorded] == [True, True]
    assert len(db.owner_cache) == 1  # emptied, then carol's remembered
