"""Anomaly detection in the engine: a credit unlike its user's habits is held with a reason
in numbers, the user's history is kept in the database across batches and processes, and an
operator's approval credits it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from depositd.db.engine import Database
from depositd.db.tables import anomaly_first_deposits, anomaly_histories
from depositd.domain.anomaly import AnomalyPolicy
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import DepositStatus
from depositd.services import queries
from depositd.services.observations import Recorded, record_observations
from depositd.services.reviews import review_deposit

from .helpers import merchant_with_users, paid

USDT = 10**6
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def watched(assets: AssetBook) -> AssetBook:
    """USDT with anomaly detection on; a first deposit of 10,000 or more is held."""
    policy = AnomalyPolicy(first_absolute=10_000 * USDT)
    usdt = replace(assets["USDT"], anomaly=policy)
    return AssetBook([*(a for a in assets.values() if a.code != "USDT"), usdt])


@pytest.fixture
async def merchant_id(db: Database) -> str:
    return await merchant_with_users(db, "alice", "bob")


async def pay(
    db: Database, assets: AssetBook, merchant_id: str, amount: int, at: datetime, **more: str
) -> Recorded:
    (recorded,) = await record_observations(
        db, assets, [paid(merchant_id, amount, **more)], clock=lambda: at
    )
    assert recorded.deposit is not None
    return recorded


async def habit(db: Database, assets: AssetBook, merchant_id: str, days: int = 12) -> datetime:
    """Alice's habit: 80 to 130 USDT about once a day; returns the time after it."""
    for day in range(days):
        amount = (80 + (day * 37) % 50) * USDT
        recorded = await pay(db, assets, merchant_id, amount, START + timedelta(days=day))
        assert recorded.deposit is not None
        assert recorded.deposit.status is DepositStatus.CREDITED
    return START + timedelta(days=days)


async def test_an_amount_far_above_the_users_habit_is_held_then_approved(
    db: Database, watched: AssetBook, merchant_id: str
) -> None:
    after = await habit(db, watched, merchant_id)
    spike = await pay(db, watched, merchant_id, 5_000 * USDT, after)
    assert spike.deposit is not None
    assert spike.deposit.status is DepositStatus.HELD
    reason = spike.deposit.reason
    assert reason.code == "anomaly_amount"
    assert reason.params["amount"] == "5000"
    assert reason.params["z"] >= 3.0
    hint = reason.render("en")
    assert hint.startswith("Held for review: 5000 USDT is ")
    assert "times this account's usual deposit of" in hint
    assert "待审核" in reason.render("zh-CN")
    balances = await queries.user_balances(db, merchant_id, "alice")
    before = sum(b.available for b in balances.balances)
    decided = await review_deposit(
        db, watched, merchant_id, spike.deposit.id, approve=True, actor="test"
    )
    assert decided.status is DepositStatus.CREDITED
    balances = await queries.user_balances(db, merchant_id, "alice")
    assert sum(b.available for b in balances.balances) == before + 5_000 * USDT
    # an ordinary amount right after is credited as usual
    usual = await pay(db, watched, merchant_id, 100 * USDT, after + timedelta(days=1))
    assert usual.deposit is not None
    assert usual.deposit.status is DepositStatus.CREDITED


async def test_a_burst_is_held_from_the_deposit_that_makes_it_one(
    db: Database, watched: AssetBook, merchant_id: str
) -> None:
    after = await habit(db, watched, merchant_id)
    statuses = []
    for minute in range(7):
        recorded = await pay(
            db, watched, merchant_id, 100 * USDT, after + timedelta(minutes=minute)
        )
        assert recorded.deposit is not None
        statuses.append(recorded.deposit.status)
    assert statuses[:4] == [DepositStatus.CREDITED] * 4
    assert DepositStatus.HELD in statuses[4:]
    held = [s for s in statuses if s is DepositStatus.HELD]
    assert len(held) == 7 - statuses.index(DepositStatus.HELD)


async def test_a_first_deposit_over_the_threshold_is_held(
    db: Database, watched: AssetBook, merchant_id: str
) -> None:
    big = await pay(db, watched, merchant_id, 20_000 * USDT, START, user="bob")
    assert big.deposit is not None
    assert big.deposit.status is DepositStatus.HELD
    assert big.deposit.reason.code == "anomaly_first_over"
    assert big.deposit.reason.render("en") == (
        "Held for review: a first deposit of 20000 USDT is at or above 10000 USDT, which is"
        " checked before it is credited."
    )
    # the threshold is for first deposits: bob's second of the same size is judged by habit
    second = await pay(
        db, watched, merchant_id, 20_000 * USDT, START + timedelta(days=1), user="bob"
    )
    assert second.deposit is not None
    assert second.deposit.status is DepositStatus.CREDITED
    async with db.reader.connect() as conn:
        first = (await conn.execute(select(anomaly_first_deposits.c.data))).scalar_one()
    assert first == {"amounts": [str(20_000 * USDT)]}


async def test_assets_without_detection_keep_no_history(
    db: Database, watched: AssetBook, merchant_id: str
) -> None:
    eth = await pay(db, watched, merchant_id, 10**21, START, asset="ETH")
    assert eth.deposit is not None
    assert eth.deposit.status is DepositStatus.CREDITED
    async with db.reader.connect() as conn:
        assert (await conn.execute(select(anomaly_histories))).all() == []


async def test_concurrent_credits_all_join_the_history(
    db: Database, watched: AssetBook, merchant_id: str
) -> None:
    # the users are locked while their history is read and written: no credit is lost from
    # it, whatever the interleaving (on PostgreSQL these run in parallel transactions)
    days = [START + timedelta(days=day) for day in range(8)]
    await asyncio.gather(*(pay(db, watched, merchant_id, 100 * USDT, day) for day in days))
    async with db.reader.connect() as conn:
        row = (await conn.execute(select(anomaly_histories.c.history))).scalar_one()
    history = row if isinstance(row, dict) else json.loads(row)
    assert history["seen"] == 8
