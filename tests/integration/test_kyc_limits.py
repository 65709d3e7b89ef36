"""KYC deposit limits, enforced where the credit is posted: a deposit that would take its user
past the limit of their KYC level within 24 hours is held for review, with a hint."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

from depositd.db.engine import Database
from depositd.db.tables import deposits, users
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import (
    DepositStatus,
)
from depositd.services import queries
from depositd.services.observations import record_observation, record_observations
from depositd.services.reviews import review_deposit

from .helpers import merchant_with_users, paid

USDT = 10**6


@pytest.fixture
def limited(assets: AssetBook) -> AssetBook:
    """USDT limited to 100 a day at level 0, 1,000 at level 1 (and 2), none from level 3."""
    usdt = replace(assets["USDT"], kyc_limits=((0, 100 * USDT), (1, 1_000 * USDT), (3, None)))
    return AssetBook([*(a for a in assets.values() if a.code != "USDT"), usdt])


@pytest.fixture
async def merchant_id(db: Database) -> str:
    return await merchant_with_users(db, "alice", "bob")


async def set_level(db: Database, merchant_id: str, user: str, level: int) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(
            update(users)
            .where(users.c.merchant_id == merchant_id, users.c.external_id == user)
            .values(kyc_level=level)
        )


async def available(db: Database, merchant_id: str, user: str) -> int:
    found = await queries.user_balances(db, merchant_id, user)
    return sum(b.available for b in found.balances if b.asset == "USDT")


async def test_credits_up_to_the_limit_then_holds_with_a_hint(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    first = await record_observation(db, limited, paid(merchant_id, 60 * USDT))
    second = await record_observation(db, limited, paid(merchant_id, 40 * USDT))
    third = await record_observation(db, limited, paid(merchant_id, 1 * USDT))
    assert [r.deposit.status for r in (first, second, third) if r.deposit] == [
        DepositStatus.CREDITED,
        DepositStatus.CREDITED,
        DepositStatus.HELD,
    ]
    assert third.deposit is not None
    assert third.deposit.reason.code == "held_kyc_limit"
    assert third.deposit.reason.render("en") == (
        "Held for review: it would take this account over its limit of 100 USDT per 24 h at"
        " verification level 0. Complete identity verification to raise the limit."
    )
    assert await available(db, merchant_id, "alice") == 100 * USDT
    # another user, and an asset without limits, are not affected
    bob = await record_observation(db, limited, paid(merchant_id, 100 * USDT, user="bob"))
    assert bob.deposit is not None
    assert bob.deposit.status is DepositStatus.CREDITED
    eth = await record_observation(db, limited, paid(merchant_id, 10**21, asset="ETH"))
    assert eth.deposit is not None
    assert eth.deposit.status is DepositStatus.CREDITED


async def test_one_batch_counts_its_own_earlier_credits(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    batch = [
        paid(merchant_id, 70 * USDT),
        paid(merchant_id, 70 * USDT),
        paid(merchant_id, 30 * USDT),
    ]
    recorded = await record_observations(db, limited, batch)
    assert [r.deposit.status for r in recorded if r.deposit] == [
        DepositStatus.CREDITED,
        DepositStatus.HELD,
        DepositStatus.CREDITED,
    ]


async def test_a_higher_level_has_a_higher_limit(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    await set_level(db, merchant_id, "alice", 2)  # no limit listed for 2: level 1's applies
    assert (await record_observation(db, limited, paid(merchant_id, 900 * USDT))).deposit
    over = await record_observation(db, limited, paid(merchant_id, 101 * USDT))
    assert over.deposit is not None
    assert over.deposit.status is DepositStatus.HELD
    assert over.deposit.reason.params["limit"] == "1000"
    await set_level(db, merchant_id, "alice", 3)
    unlimited = await record_observation(db, limited, paid(merchant_id, 10**6 * USDT))
    assert unlimited.deposit is not None
    assert unlimited.deposit.status is DepositStatus.CREDITED


async def test_credits_older_than_the_window_no_longer_count(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    old = await record_observation(db, limited, paid(merchant_id, 100 * USDT))
    assert old.deposit is not None
    async with db.writer.begin() as conn:
        await conn.execute(
            update(deposits)
            .where(deposits.c.id == old.deposit.id)
            .values(updated_at=old.deposit.updated_at - timedelta(hours=24, seconds=1))
        )
    fresh = await record_observation(db, limited, paid(merchant_id, 100 * USDT))
    assert fresh.deposit is not None
    assert fresh.deposit.status is DepositStatus.CREDITED


async def test_an_approved_hold_is_credited_whatever_the_limit(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    held = await record_observation(db, limited, paid(merchant_id, 500 * USDT))
    assert held.deposit is not None
    assert held.deposit.status is DepositStatus.HELD
    assert await available(db, merchant_id, "alice") == 0
    decided = await review_deposit(
        db, limited, merchant_id, held.deposit.id, approve=True, actor="tests"
    )
    assert decided.status is DepositStatus.CREDITED
    assert await available(db, merchant_id, "alice") == 500 * USDT


async def test_concurrent_credits_never_pass_the_limit_together(
    db: Database, limited: AssetBook, merchant_id: str
) -> None:
    # on PostgreSQL each transaction locks the user before reading their credits, so of
    # these only as many as fit are credited, whatever the interleaving
    recorded = await asyncio.gather(
        *(record_observation(db, limited, paid(merchant_id, 30 * USDT)) for _ in range(8))
    )
    statuses = sorted(r.deposit.status for r in recorded if r.deposit)
    assert statuses.count(DepositStatus.CREDITED) == 3
    assert statuses.count(DepositStatus.HELD) == 5
    assert await available(db, merchant_id, "alice") == 90 * USDT
