"""Webhook endpoints over the API: registration, secrets, pausing, deletion and test events."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries, endpoints
from depositd.db.uow import UnitOfWork

from ..conftest import Tenant
from .test_api import assert_problem, observation

HOOK = "http://127.0.0.1:9/hook"


def assert_secret(value: Any) -> str:
    assert isinstance(value, str)
    assert value.startswith("whsec_")
    assert len(base64.b64decode(value.removeprefix("whsec_"), validate=True)) == 32
    return value


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/endpoints", json={"url": HOOK, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored(db: Database, endpoint_id: str) -> Any:
    """The endpoint's row as stored, secrets included."""
    async with db.reader.connect() as conn:
        result = await conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id))
        return result.one()


async def queued(db: Database, endpoint_id: str) -> list[tuple[int, str]]:
    async with UnitOfWork(db, write=False) as uow:
        return await uow.endpoints.deliveries_for(endpoint_id)


async def test_create_list_get_change_and_delete(db: Database, tenant: Tenant) -> None:
    client = tenant.client
    created = await create(client, description="main hook")
    endpoint_id = created["id"]
    assert endpoint_id.startswith("end_")
    assert assert_secret(created["secret"]) == (await stored(db, endpoint_id)).secret
    assert {k: created[k] for k in ("url", "fallback_urls", "event_types", "description")} == {
        "url": HOOK,
        "fallback_urls": [],
        "event_types": ["*"],
        "description": "main hook",
    }
    assert (created["disabled"], created["disabled_at"], created["disabled_reason"]) == (
        False,
        None,
        None,
    )
    assert created["previous_secret_until"] is None
    assert created["health"] == {
        "failure_streak": 0,
        "failing_since": None,
        "circuit_open_until": None,
    }
    assert created["updated_at"] == created["created_at"]

    shown = (await client.get(f"/v1/endpoints/{endpoint_id}")).json()
    assert shown == {k: v for k, v in created.items() if k != "secret"}
    listing = await client.get("/v1/endpoints")
    assert listing.json() == {"data": [shown]}

    changed = await client.patch(
        f"/v1/endpoints/{endpoint_id}",
        json={
            "url": "http://127.0.0.1:9/v2",
            "fallback_urls": ["http://127.0.0.1:10/backup"],
            "event_types": ["deposit.pending", "deposit.credited"],
        },
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["url"] == "http://127.0.0.1:9/v2"
    assert body["fallback_urls"] == ["http://127.0.0.1:10/backup"]
    assert body["event_types"] == ["deposit.credited", "deposit.pending"]
    assert body["description"] == "main hook"
    assert at(body["updated_at"]) >= at(created["updated_at"])
    described = await client.patch(f"/v1/endpoints/{endpoint_id}", json={"description": ""})
    assert {**body, "description": "", "updated_at": None} == {
        **described.json(),
        "updated_at": None,
    }
    everything = await client.patch(
        f"/v1/endpoints/{endpoint_id}", json={"event_types": ["deposit.failed", "*"]}
    )
    assert everything.json()["event_types"] == ["*"]

    deleted = await client.delete(f"/v1/endpoints/{endpoint_id}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_problem(await client.get(f"/v1/endpoints/{endpoint_id}"), 404, "not-found")
    assert (await client.get("/v1/endpoints")).json() == {"data": []}
    assert_problem(await client.delete(f"/v1/endpoints/{endpoint_id}"), 404, "not-found")
    assert_problem(await client.post(f"/v1/endpoints/{endpoint_id}/enable"), 404, "not-found")


async def test_the_secret_is_shown_on_create_and_rotation_only(
    db: Database, tenant: Tenant, config: Config
) -> None:
    client = tenant.client
    created = await create(client)
    endpoint_id, first = created["id"], assert_secret(created["secret"])
    for response in (
        await client.get(f"/v1/endpoints/{endpoint_id}"),
        await client.get("/v1/endpoints"),
        await client.patch(f"/v1/endpoints/{endpoint_id}", json={"description": "x"}),
        await client.post(f"/v1/endpoints/{endpoint_id}/disable"),
        await client.post(f"/v1/endpoints/{endpoint_id}/enable"),
    ):
        assert response.status_code == 200
        assert "secret" not in response.text.replace("previous_secret_until", "")
        assert first not in response.text

    before = datetime.now(UTC)
    rotated = await client.post(f"/v1/endpoints/{endpoint_id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    second = assert_secret(rotated.json()["secret"])
    assert second != first
    grace = timedelta(hours=config.delivery.rotation_grace_hours)
    until = at(rotated.json()["previous_secret_until"])
    assert before + grace <= until <= datetime.now(UTC) + grace
    row = await stored(db, endpoint_id)
    assert (row.secret, row.previous_secret, row.previous_secret_until) == (second, first, until)
    # the grace shows until it ends; the secrets never do
    shown = await client.get(f"/v1/endpoints/{endpoint_id}")
    assert at(shown.json()["previous_secret_until"]) == until
    assert second not in shown.text
    assert first not in shown.text

    # a rotation that ends the grace at once: only the newest secret signs
    now = await client.post(f"/v1/endpoints/{endpoint_id}/rotate-secret", json={"grace_hours": 0})
    third = assert_secret(now.json()["secret"])
    assert now.json()["previous_secret_until"] is None
    row = await stored(db, endpoint_id)
    assert (row.secret, row.previous_secret, row.previous_secret_until) == (third, None, None)

    short = await client.post(
        f"/v1/endpoints/{endpoint_id}/rotate-secret", json={"grace_hours": 1.5}
    )
    row = await stored(db, endpoint_id)
    assert (row.previous_secret, row.secret) == (third, short.json()["secret"])
    assert at(short.json()["previous_secret_until"]) <= datetime.now(UTC) + timedelta(hours=1.5)
    bad = await client.post(f"/v1/endpoints/{endpoint_id}/rotate-secret", json={"grace_hours": -1})
    assert_problem(bad, 422, "validation-error")


async def test_disable_and_enable(db: Database, tenant: Tenant) -> None:
    client = tenant.client
    endpoint_id = (await create(client))["id"]
    disabled = (await client.post(f"/v1/endpoints/{endpoint_id}/disable")).json()
    assert disabled["disabled"] is True
    assert disabled["disabled_reason"] == "disabled by the merchant"
    again = (await client.post(f"/v1/endpoints/{endpoint_id}/disable")).json()
    assert again["disabled_at"] == disabled["disabled_at"]
    assert (await client.get("/v1/endpoints")).json()["data"][0]["disabled"] is True

    # the sender gave up on it meanwhile: enabling starts afresh
    failing = datetime.now(UTC) - timedelta(hours=1)
    async with db.writer.begin() as conn:
        await conn.execute(
            endpoints.update()
            .where(endpoints.c.id == endpoint_id)
            .values(
                failure_streak=7,
                failing_since=failing,
                circuit_open_until=failing + timedelta(days=1),
            )
        )
    health = (await client.get(f"/v1/endpoints/{endpoint_id}")).json()["health"]
    assert health["failure_streak"] == 7
    assert at(health["failing_since"]) == failing
    enabled = (await client.post(f"/v1/endpoints/{endpoint_id}/enable")).json()
    assert (enabled["disabled"], enabled["disabled_at"], enabled["disabled_reason"]) == (
        False,
        None,
        None,
    )
    assert enabled["health"] == {
        "failure_streak": 0,
        "failing_since": None,
        "circuit_open_until": None,
    }


async def test_unknown_event_types_are_refused(tenant: Tenant) -> None:
    client = tenant.client
    response = await client.post(
        "/v1/endpoints", json={"url": HOOK, "event_types": ["deposit.credited", "deposit.stolen"]}
    )
    body = assert_problem(response, 422, "unknown-event-type")
    assert "'deposit.stolen'" in body["detail"]
    assert "deposit.credited" in body["detail"]  # names the types there are
    assert_problem(
        await client.post("/v1/endpoints", json={"url": HOOK, "event_types": []}),
        422,
        "validation-error",
    )
    endpoint_id = (await create(client))["id"]
    response = await client.patch(
        f"/v1/endpoints/{endpoint_id}", json={"event_types": ["deposits"]}
    )
    assert_problem(response, 422, "unknown-event-type")
    assert (await client.get(f"/v1/endpoints/{endpoint_id}")).json()["event_types"] == ["*"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.0.0.1/hook", "a private address"),
        ("http://169.254.169.254/", "the cloud metadata address"),
        ("ftp://x", "ftp:// URLs are not supported"),
        ("http://0x0a000001/hook", "a private address"),
        ("http://user:pw@127.0.0.1:9/hook", "credentials"),
    ],
)
async def test_unsafe_urls_are_refused(tenant: Tenant, url: str, says: str) -> None:
    client = tenant.client
    for body in ({"url": url}, {"url": HOOK, "fallback_urls": [url]}):
        response = await client.post("/v1/endpoints", json=body)
        assert says in assert_problem(response, 422, "unsafe-url")["detail"]
    assert (await client.get("/v1/endpoints")).json() == {"data": []}
    endpoint_id = (await create(client))["id"]
    for change in ({"url": url}, {"fallback_urls": [url]}):
        response = await client.patch(f"/v1/endpoints/{endpoint_id}", json=change)
        assert says in assert_problem(response, 422, "unsafe-url")["detail"]
    unchanged = (await client.get(f"/v1/endpoints/{endpoint_id}")).json()
    assert (unchanged["url"], unchanged["fallback_urls"]) == (HOOK, [])


async def test_urls_are_stored_normalised(tenant: Tenant) -> None:
    created = await create(
        tenant.client, url="http://2130706433:9/hook", fallback_urls=["HTTP://127.1:10/b"]
    )
    assert created["url"] == HOOK
    assert created["fallback_urls"] == ["http://127.0.0.1:10/b"]


async def test_fallback_urls_are_bounded_and_distinct(tenant: Tenant) -> None:
    client = tenant.client
    six = [f"http://127.0.0.1:{port}/hook" for port in range(10, 16)]
    response = await client.post("/v1/endpoints", json={"url": HOOK, "fallback_urls": six})
    assert_problem(response, 422, "validation-error")
    created = await create(client, fallback_urls=six[:5])
    assert created["fallback_urls"] == six[:5]
    response = await client.post("/v1/endpoints", json={"url": HOOK, "fallback_urls": [HOOK]})
    assert_problem(response, 422, "invalid-endpoint")
    # a change is checked against the URLs the endpoint keeps
    path = f"/v1/endpoints/{created['id']}"
    for change in ({"url": six[0]}, {"fallback_urls": [HOOK]}, {"fallback_urls": [six[0]] * 2}):
        body = assert_problem(await client.patch(path, json=change), 422, "invalid-endpoint")
        assert "listed twice" in body["detail"]
    swapped = await client.patch(path, json={"url": six[0], "fallback_urls": [HOOK]})
    assert (swapped.json()["url"], swapped.json()["fallback_urls"]) == (six[0], [HOOK])


async def test_another_merchants_endpoint_is_not_found(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    created = await create(tenant.client)
    endpoint_id = created["id"]
    rival = other_tenant.client
    path = f"/v1/endpoints/{endpoint_id}"
    attempts: list[tuple[str, str, Any]] = [
        ("GET", path, None),
        ("PATCH", path, {"url": "http://127.0.0.1:9/stolen"}),
        ("POST", f"{path}/disable", None),
        ("POST", f"{path}/enable", None),
        ("POST", f"{path}/rotate-secret", None),
        ("POST", f"{path}/test", None),
        ("DELETE", path, None),
    ]
    for method, url, body in attempts:
        response = await rival.request(method, url, json=body)
        assert_problem(response, 404, "not-found")
        assert HOOK not in response.text
    assert (await rival.get("/v1/endpoints")).json() == {"data": []}
    mine = (await tenant.client.get(path)).json()
    assert mine == {k: v for k, v in created.items() if k != "secret"}
    assert (await stored(db, endpoint_id)).secret == created["secret"]
    assert await queued(db, endpoint_id) == []


async def test_a_test_event_goes_to_that_endpoint_alone(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = tenant.client
    target, sibling = (await create(client))["id"], (await create(client))["id"]
    theirs = (await create(other_tenant.client))["id"]
    response = await client.post(f"/v1/endpoints/{target}/test")
    assert response.status_code == 202, response.text
    queued_test = response.json()
    assert queued_test["event_id"].startswith("evt_")

    assert await queued(db, target) == [(queued_test["seq"], "endpoint.test")]
    assert await queued(db, sibling) == []
    assert await queued(db, theirs) == []
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(select(deliveries).where(deliveries.c.endpoint_id == target))
        ).one()
    assert (row.status, row.attempts, row.ordering_key) == ("pending", 0, None)
    events = (await client.get("/v1/events")).json()["data"]
    assert [(e["id"], e["seq"], e["type"]) for e in events] == [
        (queued_test["event_id"], queued_test["seq"], "endpoint.test")
    ]
    assert events[0]["data"]["endpoint_id"] == target
    assert events[0]["data"]["message"]
    assert (await other_tenant.client.get("/v1/events")).json()["data"] == []

    await client.post(f"/v1/endpoints/{sibling}/disable")
    body = assert_problem(
        await client.post(f"/v1/endpoints/{sibling}/test"), 409, "endpoint-disabled"
    )
    assert "enable it" in body["detail"]
    assert await queued(db, sibling) == []


async def test_deposit_events_reach_subscribed_enabled_endpoints_only(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = tenant.client
    assert (await client.post("/v1/users", json={"external_id": "alice"})).status_code == 201
    everything = (await create(client))["id"]
    credits = (await create(client, event_types=["deposit.credited"]))["id"]
    pending = (await create(client, event_types=["deposit.pending"]))["id"]
    paused = (await create(client))["id"]
    deleted = (await create(client))["id"]
    theirs = (await create(other_tenant.client))["id"]
    await client.post(f"/v1/endpoints/{paused}/disable")
    await client.delete(f"/v1/endpoints/{deleted}")

    recorded = await client.post("/v1/observations", json=observation())
    seq = recorded.json()["seq"]
    assert await queued(db, everything) == [(seq, "deposit.credited")]
    assert await queued(db, credits) == [(seq, "deposit.credited")]
    for endpoint_id in (pending, paused, deleted, theirs):
        assert await queued(db, endpoint_id) == []


async def test_deleting_an_endpoint_drops_its_pending_deliveries(
    db: Database, tenant: Tenant
) -> None:
    client = tenant.client
    doomed, kept = (await create(client))["id"], (await create(client))["id"]
    for endpoint_id in (doomed, kept, doomed):
        assert (await client.post(f"/v1/endpoints/{endpoint_id}/test")).status_code == 202
    assert (await client.delete(f"/v1/endpoints/{doomed}")).status_code == 204

    async with db.reader.connect() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.endpoint_id, deliveries.c.status, deliveries.c.last_error)
            )
        ).all()
    by_endpoint = sorted((r.endpoint_id == doomed, r.status, r.last_error) for r in rows)
    assert by_endpoint == [
        (False, "pending", None),
        (True, "dead", "endpoint deleted"),
        (True, "dead", "endpoint deleted"),
    ]
    row = await stored(db, doomed)
    assert row.disabled_at is not None
    assert row.disabled_reason == "deleted"


async def test_openapi_documents_the_endpoint_routes(app_client: httpx.AsyncClient) -> None:
    spec = (await app_client.get("/openapi.json")).json()
    paths = spec["paths"]
    routes = {
        "/v1/endpoints": {"get", "post"},
        "/v1/endpoints/{endpoint_id}": {"get", "patch", "delete"},
        "/v1/endpoints/{endpoint_id}/disable": {"post"},
        "/v1/endpoints/{endpoint_id}/enable": {"post"},
        "/v1/endpoints/{endpoint_id}/rotate-secret": {"post"},
        "/v1/endpoints/{endpoint_id}/test": {"post"},
    }
    for path, methods in routes.items():
        assert set(paths[path]) == methods
        for method in methods:
            operation = paths[path][method]
            assert operation["tags"] == ["endpoints"]
            assert operation["summary"]
            assert "application/problem+json" in operation["responses"]["404"]["content"]
    assert "409" in paths["/v1/endpoints/{endpoint_id}/test"]["post"]["responses"]
