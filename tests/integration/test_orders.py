"""Deposit orders: payment URIs and QR codes, progress from attributed deposits, expiry."""

from __future__ import annotations

import asyncio
import itertools
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from sqlalchemy.exc import OperationalError

from depositd.cli import DEV_XPUB
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import ChainRef, Observation, ToAddress
from depositd.ids import new_id
from depositd.services import addresses, orders, users
from depositd.services.observations import record_observations
from depositd.services.orders import OrderDetail
from depositd.workers import orders as order_worker

from ..conftest import Tenant
from .helpers import CHAIN
from .test_api import assert_problem

ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
USDT_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
USDT = 10**6
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_tx_numbers = itertools.count(1)


@pytest.fixture
async def alice(db: Database, tenant: Tenant) -> Tenant:
    """A merchant with an xpub and one user, alice."""
    await addresses.set_xpub(db, tenant.merchant_id, DEV_XPUB)
    await users.ensure_user(db, tenant.merchant_id, "alice")
    return tenant


@pytest.fixture
def chain_ids(config: Config) -> dict[str, int]:
    return {name: chain.chain_id for name, chain in config.chains.items()}


def transfer(
    address: str, amount: int, *, asset: str = "USDT", confirmations: int = 3
) -> Observation:
    return Observation(
        ref=ChainRef(CHAIN, f"0x{next(_tx_numbers):064x}", 0 if asset == "USDT" else -1),
        owner=ToAddress(CHAIN, address),
        asset=asset,
        amount=amount,
        confirmations=confirmations,
        block_hash=None if confirmations == 0 else "0xb1",
        block_number=None if confirmations == 0 else 100,
    )


async def pay(
    db: Database, assets: AssetBook, observation: Observation, at: datetime | None = None
) -> None:
    if at is None:
        await record_observations(db, assets, [observation])
    else:
        await record_observations(db, assets, [observation], clock=lambda: at)


async def open_order(
    db: Database,
    chain_ids: dict[str, int],
    assets: AssetBook,
    tenant: Tenant,
    amount: int | None,
    *,
    at: datetime = T0,
    user: str = "alice",
    asset: str = "USDT",
    expires_in: timedelta = timedelta(minutes=10),
) -> OrderDetail:
    return await orders.create_order(
        db,
        chain_ids,
        assets,
        tenant.merchant_id,
        user,
        asset,
        amount,
        expires_in,
        clock=lambda: at,
    )


def parse_svg(text: str) -> ET.Element:
    root = ET.fromstring(text)  # noqa: S314 - our own output, not untrusted input
    assert root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")
    return root


async def test_an_order_gives_the_users_address_a_payment_uri_and_its_qr_code(
    alice: Tenant,
) -> None:
    response = await alice.client.post(
        "/v1/deposit-orders", json={"user": "alice", "asset": "ETH", "amount": "1.5"}
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["id"].startswith("ord_")
    assert (order["user"]["external_id"], order["method"]) == ("alice", "crypto")
    assert (order["asset"], order["chain"], order["address"]) == ("ETH", "anvil", ANVIL_0)
    assert (order["amount"], order["amount_base_units"]) == ("1.5", str(15 * 10**17))
    assert order["payment_uri"] == f"ethereum:{ANVIL_0}@31337?value=1500000000000000000"
    assert "<svg" in order["qr_svg"]
    parse_svg(order["qr_svg"])
    expires_at = datetime.fromisoformat(order["expires_at"])
    assert expires_at - datetime.fromisoformat(order["created_at"]) == timedelta(hours=1)
    assert order["expired_at"] is None
    assert order["payment"] is None
    assert order["progress"] == {
        "status": "awaiting_payment",
        "hint": None,
        "paid_late": False,
        "credited": "0",
        "credited_base_units": "0",
        "incoming": "0",
        "incoming_base_units": "0",
        "deposits": [],
    }

    found = await alice.client.get(f"/v1/deposit-orders/{order['id']}")
    assert (found.status_code, found.json()) == (200, order)
    qr = await alice.client.get(f"/v1/deposit-orders/{order['id']}/qr.svg")
    assert qr.status_code == 200
    assert qr.headers["content-type"].startswith("image/svg+xml")
    assert qr.text == order["qr_svg"]


async def test_a_token_order_asks_the_wallet_to_call_transfer(alice: Tenant) -> None:
    response = await alice.client.post(
        "/v1/deposit-orders",
        json={"user": "alice", "asset": "USDT", "amount": "25.5", "expires_in_seconds": 600},
    )
    order = response.json()
    assert order["payment_uri"] == (
        f"ethereum:{USDT_CONTRACT}@31337/transfer?address={ANVIL_0}&uint256=25500000"
    )
    expires_at = datetime.fromisoformat(order["expires_at"])
    assert expires_at - datetime.fromisoformat(order["created_at"]) == timedelta(minutes=10)


async def test_an_order_without_amount_accepts_any(alice: Tenant) -> None:
    response = await alice.client.post("/v1/deposit-orders", json={"user": "alice", "asset": "ETH"})
    order = response.json()
    assert (order["amount"], order["amount_base_units"]) == (None, None)
    assert order["payment_uri"] == f"ethereum:{ANVIL_0}@31337"


async def test_progress_from_confirming_through_underpaid_paid_and_overpaid(
    db: Database, alice: Tenant, assets: AssetBook
) -> None:
    created = await alice.client.post(
        "/v1/deposit-orders", json={"user": "alice", "asset": "USDT", "amount": "10"}
    )
    order_id, address = created.json()["id"], created.json()["address"]

    async def progress() -> dict[str, Any]:
        response = await alice.client.get(f"/v1/deposit-orders/{order_id}")
        assert response.status_code == 200
        found: dict[str, Any] = response.json()["progress"]
        return found

    first = transfer(address, 4 * USDT, confirmations=0)
    await pay(db, assets, first)
    seen = await progress()
    assert (seen["status"], seen["incoming"], seen["credited"]) == ("confirming", "4", "0")
    assert [(d["amount"], d["status"], d["late"]) for d in seen["deposits"]] == [
        ("4", "pending", False)
    ]

    await pay(db, assets, replace(first, confirmations=3, block_hash="0xb1", block_number=100))
    seen = await progress()
    assert (seen["status"], seen["credited"], seen["credited_base_units"]) == (
        "underpaid",
        "4",
        "4000000",
    )

    await pay(db, assets, transfer(address, 6 * USDT))
    seen = await progress()
    assert (seen["status"], seen["credited"], seen["incoming"]) == ("paid", "10", "0")

    await pay(db, assets, transfer(address, 1 * USDT))
    seen = await progress()
    assert (seen["status"], seen["credited"]) == ("overpaid", "11")
    assert [d["status"] for d in seen["deposits"]] == ["credited"] * 3
    assert not seen["paid_late"]


async def test_deposits_belong_to_the_latest_order_made_before_they_were_seen(
    db: Database, alice: Tenant, assets: AssetBook, chain_ids: dict[str, int]
) -> None:
    first = await open_order(db, chain_ids, assets, alice, 10 * USDT, at=T0)
    address = first.order.address
    await pay(db, assets, transfer(address, 2 * USDT), at=T0 - timedelta(minutes=1))  # before any
    await pay(db, assets, transfer(address, 3 * USDT), at=T0)  # the instant the first was made
    await pay(db, assets, transfer(address, 5 * 10**17, asset="ETH"), at=T0 + timedelta(minutes=1))
    # below the 1 USDT minimum: rejected, listed, never counted
    await pay(db, assets, transfer(address, USDT // 2), at=T0 + timedelta(minutes=1))
    second = await open_order(db, chain_ids, assets, alice, 7 * USDT, at=T0 + timedelta(minutes=2))
    await pay(db, assets, transfer(address, 7 * USDT), at=T0 + timedelta(minutes=3))

    one = await orders.get_order(db, chain_ids, assets, alice.merchant_id, first.order.id)
    two = await orders.get_order(db, chain_ids, assets, alice.merchant_id, second.order.id)
    assert [(p.deposit.amount, p.deposit.status.value) for p in one.progress.deposits] == [
        (3 * USDT, "credited"),
        (USDT // 2, "rejected"),
    ]
    assert (one.progress.status.value, one.progress.credited) == ("underpaid", 3 * USDT)
    assert [p.deposit.amount for p in two.progress.deposits] == [7 * USDT]
    assert two.progress.status.value == "paid"


async def test_a_payment_after_the_deadline_is_paid_late(
    db: Database, alice: Tenant, assets: AssetBook, chain_ids: dict[str, int]
) -> None:
    made = await open_order(
        db, chain_ids, assets, alice, 10 * USDT, expires_in=timedelta(minutes=1)
    )
    deadline = made.order.expires_at
    assert await orders.expire_due_orders(db, assets, deadline + timedelta(seconds=1)) == 1
    expired = await orders.get_order(db, chain_ids, assets, alice.merchant_id, made.order.id)
    assert expired.progress.status.value == "expired"
    assert expired.order.expired_at == deadline + timedelta(seconds=1)

    await pay(
        db, assets, transfer(made.order.address, 10 * USDT), at=deadline + timedelta(minutes=5)
    )
    response = await alice.client.get(f"/v1/deposit-orders/{made.order.id}")
    body = response.json()
    assert body["expired_at"] is not None
    assert (body["progress"]["status"], body["progress"]["paid_late"]) == ("paid", True)
    assert [d["late"] for d in body["progress"]["deposits"]] == [True]


async def test_expiry_is_announced_once_for_each_unpaid_order(
    db: Database, tenant: Tenant, assets: AssetBook, chain_ids: dict[str, int]
) -> None:
    await addresses.set_xpub(db, tenant.merchant_id, DEV_XPUB)
    for user in ("paid", "part", "none", "any", "later"):
        await users.ensure_user(db, tenant.merchant_id, user)
    subscribed, elsewhere = new_id("end"), new_id("end")
    async with UnitOfWork(db, write=True) as uow:
        now = datetime.now(UTC)
        await uow.endpoints.add(subscribed, tenant.merchant_id, "https://a.example/h", ["*"], now)
        await uow.endpoints.add(
            elsewhere, tenant.merchant_id, "https://b.example/h", ["deposit.credited"], now
        )
        await uow.commit()

    made = {
        user: await open_order(db, chain_ids, assets, tenant, amount, user=user)
        for user, amount in (("paid", 5 * USDT), ("part", 5 * USDT), ("none", 5 * USDT))
    }
    made["any"] = await open_order(db, chain_ids, assets, tenant, None, user="any")
    made["later"] = await open_order(
        db, chain_ids, assets, tenant, 5 * USDT, user="later", expires_in=timedelta(hours=1)
    )
    in_time = T0 + timedelta(minutes=1)
    await pay(db, assets, transfer(made["paid"].order.address, 5 * USDT), at=in_time)
    await pay(db, assets, transfer(made["part"].order.address, 2 * USDT), at=in_time)
    await pay(db, assets, transfer(made["part"].order.address, 1 * USDT, confirmations=1), in_time)

    sweep_at = T0 + timedelta(minutes=30)
    assert await orders.expire_due_orders(db, assets, sweep_at) == 3  # part, none, any
    assert await orders.expire_due_orders(db, assets, sweep_at) == 0
    assert (
        sum(
            await asyncio.gather(
                *(orders.expire_due_orders(db, assets, sweep_at) for _ in range(4))
            )
        )
        == 0
    )
    # the last order's deadline passes: several sweepers at once, one announcement
    late_sweep = T0 + timedelta(hours=2)
    counts = await asyncio.gather(
        *(orders.expire_due_orders(db, assets, late_sweep) for _ in range(4))
    )
    assert sum(counts) == 1

    page = (await tenant.client.get("/v1/events")).json()["data"]
    announced = [e for e in page if e["type"] == "deposit_order.expired"]
    by_order = {e["data"]["id"]: e for e in announced}
    assert len(announced) == len(by_order) == 4
    assert set(by_order) == {made[u].order.id for u in ("part", "none", "any", "later")}
    part = by_order[made["part"].order.id]["data"]
    assert part["user"]["external_id"] == "part"
    assert (part["asset"], part["chain"], part["method"]) == ("USDT", "anvil", "crypto")
    assert part["address"] == to_checksum_address(made["part"].order.address)
    assert (part["amount"], part["credited"], part["incoming"]) == ("5", "2", "1")
    assert part["credited_base_units"] == str(2 * USDT)
    assert part["expires_at"] == made["part"].order.expires_at.isoformat()
    assert by_order[made["any"].order.id]["data"]["amount"] is None
    paid = await orders.get_order(db, chain_ids, assets, tenant.merchant_id, made["paid"].order.id)
    assert (paid.order.expired_at, paid.progress.status.value) == (None, "paid")

    async with UnitOfWork(db, write=False) as uow:
        queued = await uow.endpoints.deliveries_for(subscribed)
        assert sorted(seq for seq, kind in queued if kind == "deposit_order.expired") == sorted(
            e["seq"] for e in announced
        )
        assert all(
            kind != "deposit_order.expired"
            for _, kind in await uow.endpoints.deliveries_for(elsewhere)
        )


async def test_the_sweeper_loop_expires_orders_and_survives_a_database_outage(
    db: Database,
    alice: Tenant,
    assets: AssetBook,
    chain_ids: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = await open_order(db, chain_ids, assets, alice, 10 * USDT)
    real = orders.expire_due_orders
    calls = 0

    async def flaky(db: Database, assets: AssetBook, now: datetime) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("database is down"))
        return await real(db, assets, now)

    monkeypatch.setattr(order_worker, "expire_due_orders", flaky)
    sweeper = asyncio.create_task(
        order_worker.expire_orders_forever(db, assets, interval_seconds=0.01)
    )
    try:
        for _ in range(500):
            found = await orders.get_order(db, chain_ids, assets, alice.merchant_id, made.order.id)
            if found.order.expired_at is not None:
                break
            await asyncio.sleep(0.01)
        assert found.order.expired_at is not None
        assert calls >= 2
    finally:
        sweeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeper


# --- bad inputs ------------------------------------------------------------------------------


def order_body(**changes: Any) -> dict[str, Any]:
    return {"user": "alice", "asset": "USDT", "amount": "10", **changes}


@pytest.mark.parametrize(
    ("changes", "status", "slug", "detail"),
    [
        ({"asset": "DOGE"}, 422, "unknown-asset", "DOGE"),
        ({"user": "bob"}, 404, "not-found", "bob"),
        ({"amount": "0"}, 422, "invalid-amount", "greater than zero"),
        ({"amount": "-5"}, 422, "invalid-amount", "greater than zero"),
        ({"amount": "1.0000001"}, 422, "invalid-amount", "more than 6 decimal places"),
        ({"amount": "0.5"}, 422, "invalid-amount", "minimum"),
        ({"amount": "1e3"}, 422, "invalid-amount", "plain decimal"),
        ({"amount": 10}, 422, "validation-error", "amount"),
        ({"method": "card"}, 422, "method-asset-mismatch", "'card' pays a fiat currency"),
        ({"method": "bank_transfer"}, 422, "method-asset-mismatch", "USDT is not one"),
        ({"method": "cash"}, 422, "validation-error", "method"),
        ({"expires_in_seconds": 59}, 422, "validation-error", "expires_in_seconds"),
        ({"expires_in_seconds": 604_801}, 422, "validation-error", "expires_in_seconds"),
        ({"expires_in_seconds": "600"}, 422, "validation-error", "expires_in_seconds"),
        ({"colour": "red"}, 422, "validation-error", "colour"),
    ],
)
async def test_bad_order_requests(
    alice: Tenant, changes: dict[str, Any], status: int, slug: str, detail: str
) -> None:
    response = await alice.client.post("/v1/deposit-orders", json=order_body(**changes))
    body = assert_problem(response, status, slug)
    assert detail in body["detail"]


async def test_expiry_bounds_are_accepted(alice: Tenant) -> None:
    for seconds in (60, 604_800):
        body = order_body(expires_in_seconds=seconds)
        response = await alice.client.post("/v1/deposit-orders", json=body)
        assert response.status_code == 201, response.text


async def test_orders_need_an_xpub(db: Database, tenant: Tenant) -> None:
    await users.ensure_user(db, tenant.merchant_id, "alice")
    response = await tenant.client.post("/v1/deposit-orders", json=order_body())
    assert_problem(response, 409, "xpub-not-set")


async def test_another_merchants_order_is_not_found(alice: Tenant, other_tenant: Tenant) -> None:
    made = (await alice.client.post("/v1/deposit-orders", json=order_body())).json()
    for path in (f"/v1/deposit-orders/{made['id']}", f"/v1/deposit-orders/{made['id']}/qr.svg"):
        assert_problem(await other_tenant.client.get(path), 404, "not-found")
    assert_problem(await alice.client.get("/v1/deposit-orders/ord_nope"), 404, "not-found")
    assert_problem(
        await alice.client.get("/v1/deposit-orders/" + "x" * 41), 422, "validation-error"
    )
