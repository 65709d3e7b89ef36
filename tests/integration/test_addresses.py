"""Deposit addresses through the API: derived from the merchant's xpub, one per user and chain."""

from __future__ import annotations

import asyncio

from depositd.cli import DEV_XPUB
from depositd.db.engine import Database
from depositd.services import addresses

from ..conftest import Tenant
from .test_api import assert_problem

ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


async def test_addresses_are_derived_in_order_and_kept(db: Database, tenant: Tenant) -> None:
    await addresses.set_xpub(db, tenant.merchant_id, DEV_XPUB)
    for user in ("alice", "bob"):
        await tenant.client.post("/v1/users", json={"external_id": user})

    first = await tenant.client.post("/v1/users/alice/addresses", json={"chain": "anvil"})
    assert first.status_code == 201
    assert first.json() == {"chain": "anvil", "address": ANVIL_0, "index": 0}
    again = await tenant.client.post("/v1/users/alice/addresses", json={"chain": "anvil"})
    assert (again.status_code, again.json()) == (200, first.json())
    bob = await tenant.client.post("/v1/users/bob/addresses", json={"chain": "anvil"})
    assert bob.json()["address"] == ANVIL_1
    listed = await tenant.client.get("/v1/users/alice/addresses")
    assert listed.json() == [first.json()]


async def test_concurrent_requests_never_share_an_index(db: Database, tenant: Tenant) -> None:
    await addresses.set_xpub(db, tenant.merchant_id, DEV_XPUB)
    users = [f"u{n}" for n in range(20)]
    for user in users:
        await tenant.client.post("/v1/users", json={"external_id": user})

    answers = await asyncio.gather(
        *(
            addresses.deposit_address(db, {"anvil"}, tenant.merchant_id, user, "anvil")
            for user in users + users  # every user asks twice at once
        )
    )
    by_user: dict[str, set[str]] = {}
    for user, answer in zip(users + users, answers, strict=True):
        by_user.setdefault(user, set()).add(answer.address)
    assert all(len(found) == 1 for found in by_user.values())
    assert sorted(a.index for a in answers if a.index is not None)[::2] == list(range(20))


async def test_without_an_xpub_there_is_no_address(tenant: Tenant) -> None:
    await tenant.client.post("/v1/users", json={"external_id": "alice"})
    response = await tenant.client.post("/v1/users/alice/addresses", json={"chain": "anvil"})
    body = assert_problem(response, 409, "xpub-not-set")
    assert "depositd merchants set-xpub" in body["detail"]


async def test_bad_address_requests(db: Database, tenant: Tenant, other_tenant: Tenant) -> None:
    await addresses.set_xpub(db, tenant.merchant_id, DEV_XPUB)
    await tenant.client.post("/v1/users", json={"external_id": "alice"})
    unknown_chain = await tenant.client.post("/v1/users/alice/addresses", json={"chain": "btc"})
    assert_problem(unknown_chain, 422, "unknown-chain")
    nobody = await tenant.client.post("/v1/users/nobody/addresses", json={"chain": "anvil"})
    assert_problem(nobody, 404, "not-found")
    theirs = await other_tenant.client.post("/v1/users/alice/addresses", json={"chain": "anvil"})
    assert_problem(theirs, 404, "not-found")
    assert_problem(await other_tenant.client.get("/v1/users/alice/addresses"), 404, "not-found")
