"""The HTTP API: happy paths, and a clear 4xx problem for every bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from depositd.db.engine import Database
from depositd.services import merchants

from ..conftest import Tenant

PROBLEM = "urn:depositd:problem:"


def observation(**changes: Any) -> dict[str, Any]:
    body = {
        "provider": "psp",
        "provider_deposit_id": "d-1",
        "user": "alice",
        "asset": "USDT",
        "amount": "25.5",
        "status": "succeeded",
    }
    body.update(changes)
    return body


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug
    assert body["status"] == status
    return body


@pytest.fixture
async def alice(tenant: Tenant) -> Tenant:
    response = await tenant.client.post("/v1/users", json={"external_id": "alice"})
    assert response.status_code == 201
    return tenant


async def test_deposit_flow_with_history_and_hints(alice: Tenant) -> None:
    client = alice.client
    pending = await client.post("/v1/observations", json=observation(status="pending"))
    assert pending.json()["deposit"]["status"] == "pending"
    credited = await client.post("/v1/observations", json=observation())
    body = credited.json()
    assert (body["changed"], body["seq"], body["deposit"]["version"]) == (True, 2, 2)
    replay = await client.post("/v1/observations", json=observation())
    assert replay.json()["changed"] is False

    deposit_id = body["deposit"]["id"]
    detail = await client.get(f"/v1/deposits/{deposit_id}", headers={"Accept-Language": "zh-CN"})
    assert detail.status_code == 200
    found = detail.json()
    assert found["reason"]["hint"] == "psp 已确认付款，已入账。"
    assert [(t["version"], t["status"]) for t in found["transitions"]] == [
        (1, "pending"),
        (2, "credited"),
    ]
    assert found["transitions"][0]["reason"]["hint"] == "psp 报告该笔付款处理中。"
    english = await client.get(f"/v1/deposits/{deposit_id}?lang=en")
    assert english.json()["reason"]["hint"] == "Credited: psp confirmed the payment."

    balances = (await client.get("/v1/users/alice/balances")).json()["balances"]
    assert balances == [
        {
            "asset": "USDT",
            "available": "25.5",
            "available_base_units": "25500000",
            "locked": "0",
            "locked_base_units": "0",
        }
    ]
    records = (await client.get("/v1/transactions?user=alice")).json()["data"]
    assert [(r["kind"], r["amount"]) for r in records] == [("credit", "25.5")]
    events = (await client.get("/v1/events?after=1")).json()
    assert [e["type"] for e in events["data"]] == ["deposit.credited"]
    assert events["next_after"] == 2
    assert events["data"][0]["data"]["seq"] == 2


async def test_deposit_listing_pages_with_a_cursor(alice: Tenant) -> None:
    for n in range(5):
        await alice.client.post("/v1/observations", json=observation(provider_deposit_id=f"d-{n}"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "credited", **({"cursor": cursor} if cursor else {})}
        page = (await alice.client.get("/v1/deposits", params=params)).json()
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert seen == sorted(seen, reverse=True)
    none = (await alice.client.get("/v1/deposits", params={"status": "failed"})).json()
    assert none["data"] == []


async def test_creating_a_user_twice_returns_it(alice: Tenant) -> None:
    again = await alice.client.post("/v1/users", json={"external_id": "alice"})
    assert again.status_code == 200
    assert again.json()["external_id"] == "alice"


async def test_openapi_is_served(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    assert "/v1/observations" in spec["paths"]
    assert "/v1/events" in spec["paths"]


# --- bad inputs, one test each -------------------------------------------------------------


async def test_malformed_json(alice: Tenant) -> None:
    response = await alice.client.post(
        "/v1/observations",
        content=b'{"provider": "psp",',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-json")


async def test_wrong_types(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(amount=25.5))
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "body.amount"


async def test_unknown_field(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(colour="red"))
    assert_problem(response, 422, "validation-error")


@pytest.mark.parametrize("amount", ["-1", "0", "0.000", "-0.5"])
async def test_amount_not_positive(alice: Tenant, amount: str) -> None:
    response = await alice.client.post("/v1/observations", json=observation(amount=amount))
    body = assert_problem(response, 422, "invalid-amount")
    assert "greater than zero" in body["detail"]


async def test_amount_overflowing_uint256(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(amount="1" + "0" * 72))
    body = assert_problem(response, 422, "invalid-amount")
    assert "too large" in body["detail"]


async def test_amount_with_more_decimals_than_the_asset(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(amount="1.0000001"))
    body = assert_problem(response, 422, "invalid-amount")
    assert "more than 6 decimal places" in body["detail"]


async def test_amount_not_a_plain_decimal(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(amount="1e3"))
    assert_problem(response, 422, "invalid-amount")


async def test_unknown_asset(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(asset="DOGE"))
    body = assert_problem(response, 422, "unknown-asset")
    assert "DOGE" in body["detail"]


async def test_unknown_user(alice: Tenant) -> None:
    response = await alice.client.post("/v1/observations", json=observation(user="bob"))
    assert_problem(response, 422, "unknown-owner")


async def test_conflicting_observation(alice: Tenant) -> None:
    await alice.client.post("/v1/observations", json=observation())
    response = await alice.client.post("/v1/observations", json=observation(amount="99"))
    assert_problem(response, 422, "observation-conflict")


async def test_oversized_body(alice: Tenant) -> None:
    response = await alice.client.post(
        "/v1/observations", json=observation(provider_deposit_id="x" * 70_000)
    )
    assert_problem(response, 413, "body-too-large")


async def test_bad_cursor(alice: Tenant) -> None:
    response = await alice.client.get("/v1/deposits", params={"cursor": "not-ours"})
    assert_problem(response, 422, "invalid-cursor")


async def test_bad_query_value(alice: Tenant) -> None:
    response = await alice.client.get("/v1/events", params={"after": "-5"})
    assert_problem(response, 422, "validation-error")


async def test_missing_api_key(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/v1/deposits")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_wrong_api_key(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get(
        "/v1/deposits", headers={"Authorization": "Bearer dpk_" + "x" * 43}
    )
    assert_problem(response, 401, "unauthorized")


async def test_revoked_api_key(db: Database, alice: Tenant) -> None:
    key = await merchants.create_api_key(db, alice.merchant_id, "to revoke")
    headers = {"Authorization": f"Bearer {key.secret}"}
    assert (await alice.client.get("/v1/users/alice", headers=headers)).status_code == 200
    await merchants.revoke_api_key(db, key.id)
    response = await alice.client.get("/v1/users/alice", headers=headers)
    assert_problem(response, 401, "unauthorized")


async def test_another_merchants_ids_are_not_found(alice: Tenant, other_tenant: Tenant) -> None:
    created = await alice.client.post("/v1/observations", json=observation())
    deposit_id = created.json()["deposit"]["id"]
    rival = other_tenant.client
    for path in (f"/v1/deposits/{deposit_id}", "/v1/users/alice", "/v1/users/alice/balances"):
        response = await rival.get(path)
        body = assert_problem(response, 404, "not-found")
        assert deposit_id not in response.text or path.endswith(deposit_id)
        assert "25.5" not in response.text
        assert body["title"] == "Not found"
    assert (await rival.get("/v1/deposits")).json()["data"] == []
    assert (await rival.get("/v1/events")).json()["data"] == []
    assert (await rival.get("/v1/transactions")).json()["data"] == []
    # the same provider deposit id reported by the rival is the rival's own deposit
    await rival.post("/v1/users", json={"external_id": "alice"})
    theirs = await rival.post("/v1/observations", json=observation(amount="1"))
    assert theirs.status_code == 200
    assert theirs.json()["deposit"]["id"] != deposit_id


async def test_unknown_route_is_a_problem(alice: Tenant) -> None:
    assert_problem(await alice.client.get("/v1/nothing-here"), 404, "not-found")


async def test_a_time_filter_without_offset(alice: Tenant) -> None:
    response = await alice.client.get("/v1/deposits", params={"created_from": "2026-01-01T00:00"})
    body = assert_problem(response, 422, "validation-error")
    assert body["errors"][0]["field"] == "query.created_from"


async def test_time_filters(alice: Tenant) -> None:
    await alice.client.post("/v1/observations", json=observation())
    past, future = "2000-01-01T00:00:00Z", "2999-01-01T00:00:00+08:00"
    found = await alice.client.get(
        "/v1/deposits", params={"created_from": past, "created_to": future}
    )
    assert len(found.json()["data"]) == 1
    none = await alice.client.get("/v1/deposits", params={"created_from": future})
    assert none.json()["data"] == []


async def test_a_method_not_allowed_names_the_allowed_ones(alice: Tenant) -> None:
    response = await alice.client.delete("/v1/users/alice")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "GET"
    # a path served by several routes names all their methods, not the first route's
    several = await alice.client.put("/v1/endpoints")
    assert_problem(several, 405, "method-not-allowed")
    assert several.headers["allow"] == "GET, POST"


async def test_date_time_filters_take_rfc_3339_only(alice: Tenant) -> None:
    for odd in ("0.5", "1732867200", "yesterday"):
        refused = await alice.client.get("/v1/deposits", params={"created_to": odd})
        assert_problem(refused, 422, "validation-error")


async def test_filters_by_user_and_asset(alice: Tenant) -> None:
    await alice.client.post("/v1/users", json={"external_id": "bob"})
    await alice.client.post("/v1/observations", json=observation())
    await alice.client.post(
        "/v1/observations", json=observation(user="bob", provider_deposit_id="d-2")
    )
    for path in ("/v1/deposits", "/v1/transactions"):
        mine = (await alice.client.get(path, params={"user": "bob"})).json()["data"]
        assert {row["user"]["external_id"] for row in mine} == {"bob"}
        assert (await alice.client.get(path, params={"user": "carol"})).json()["data"] == []
        assert (await alice.client.get(path, params={"asset": "ETH"})).json()["data"] == []
        assert_problem(await alice.client.get(path, params={"asset": "DOGE"}), 422, "unknown-asset")
