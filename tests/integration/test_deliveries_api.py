"""Webhook deliveries over the API: listing, attempt logs, manual retry and replay."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from depositd.clock import utcnow
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries
from depositd.db.uow import UnitOfWork
from depositd.delivery.retries import MAX_ATTEMPTS
from depositd.domain.events import PendingEvent
from depositd.ids import new_id
from depositd.services import deliveries as delivery_service

from ..conftest import Tenant
from . import test_sender
from .test_api import assert_problem
from .test_endpoints_api import create
from .test_sender import Clock, Receiver, rows, sender, status

serve = test_sender.serve  # the local receivers' fixture


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


async def emit(
    db: Database, merchant_id: str, *types: str, when: datetime | None = None
) -> list[int]:
    """Append the merchant's events (queued to its subscribed endpoints); their seqs."""
    now = when or utcnow()
    pending = [
        PendingEvent(
            id=new_id("evt"),
            type=event_type,
            merchant_id=merchant_id,
            deposit_id=None,
            version=None,
            data={"n": n},
            created_at=now,
        )
        for n, event_type in enumerate(types)
    ]
    async with UnitOfWork(db, write=True) as uow:
        seqs = await uow.events.append(pending, now)
        await uow.commit()
    return seqs


async def outbox(db: Database, endpoint_id: str) -> list[Any]:
    """The endpoint's deliveries in event order."""
    return await rows(
        db,
        select(deliveries)
        .where(deliveries.c.endpoint_id == endpoint_id)
        .order_by(deliveries.c.event_seq),
    )


async def set_delivery(db: Database, delivery_id: int, **values: Any) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(values))


async def listed(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/v1/deliveries", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    found: list[dict[str, Any]] = response.json()["data"]
    return found


async def test_list_filters_and_pages_newest_first(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = tenant.client
    everything = (await create(client))["id"]
    credits = (await create(client, event_types=["deposit.credited"]))["id"]
    theirs = (await create(other_tenant.client))["id"]
    pending, credited, held = await emit(
        db, tenant.merchant_id, "deposit.pending", "deposit.credited", "deposit.held"
    )
    await emit(db, other_tenant.merchant_id, "deposit.credited")
    done = utcnow()
    first, second, third = await outbox(db, everything)
    await set_delivery(
        db, first.id, status="delivered", attempts=1, last_status_code=200, finished_at=done
    )
    await set_delivery(
        db,
        second.id,
        status="dead",
        attempts=MAX_ATTEMPTS,
        last_status_code=500,
        last_error="HTTP 500",
        finished_at=done,
    )

    everyone = await listed(client)
    ids = [d["id"] for d in everyone]
    assert len(ids) == 4
    assert ids == sorted(ids, reverse=True)
    by_id = {d["id"]: d for d in everyone}
    events = {e["seq"]: e for e in (await client.get("/v1/events")).json()["data"]}
    assert by_id[first.id] == {
        "id": first.id,
        "endpoint_id": everything,
        "event_id": events[pending]["id"],
        "event_seq": pending,
        "event_type": "deposit.pending",
        "status": "delivered",
        "attempts": 1,
        "next_attempt_at": None,
        "last_attempt_at": None,
        "last_status_code": 200,
        "last_error": None,
        "finished_at": by_id[first.id]["finished_at"],
        "created_at": by_id[first.id]["created_at"],
    }
    assert at(by_id[first.id]["finished_at"]) == done
    assert by_id[third.id]["status"] == "pending"
    assert at(by_id[third.id]["next_attempt_at"]) == third.next_attempt_at
    assert by_id[third.id]["event_seq"] == held

    dead = await listed(client, status="dead")
    assert [(d["id"], d["attempts"], d["last_error"]) for d in dead] == [
        (second.id, MAX_ATTEMPTS, "HTTP 500")
    ]
    assert [d["status"] for d in await listed(client, status="pending")] == ["pending"] * 2
    only_credits = await listed(client, endpoint_id=credits)
    assert [(d["event_seq"], d["event_type"]) for d in only_credits] == [
        (credited, "deposit.credited")
    ]
    assert await listed(client, endpoint_id=credits, status="dead") == []

    # keyset pages, newest first, end to end
    paged: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/deliveries", params=params)).json()
        paged += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == ids

    assert_problem(
        await client.get("/v1/deliveries", params={"cursor": "bm9wZQ"}), 422, "invalid-cursor"
    )
    assert_problem(
        await client.get("/v1/deliveries", params={"status": "lost"}), 422, "validation-error"
    )
    assert_problem(
        await client.get("/v1/deliveries", params={"limit": 501}), 422, "validation-error"
    )
    assert_problem(
        await client.get("/v1/deliveries", params={"endpoint_id": theirs}), 404, "not-found"
    )
    rival = await listed(other_tenant.client)
    assert [d["endpoint_id"] for d in rival] == [theirs]


async def test_the_detail_shows_the_attempt_log(
    db: Database, config: Config, tenant: Tenant, serve: Any
) -> None:
    client = tenant.client
    receiver = await serve(Receiver(script=[status(500)]))
    await create(client, url=receiver.url)
    await emit(db, tenant.merchant_id, "deposit.credited")
    clock = Clock()
    worker = sender(db, config, clock)
    try:
        assert await worker.drain() == 1
        (row,) = await rows(db, select(deliveries))
        clock.now = max(clock.now, row.next_attempt_at)
        assert await worker.drain() == 1
    finally:
        await worker.close()

    (summary,) = await listed(client)
    response = await client.get(f"/v1/deliveries/{summary['id']}")
    assert response.status_code == 200, response.text
    detail = response.json()
    log = detail.pop("attempt_log")
    assert detail == summary
    assert (detail["status"], detail["attempts"], detail["last_status_code"]) == (
        "delivered",
        2,
        200,
    )
    assert detail["next_attempt_at"] is None
    assert detail["finished_at"] is not None
    assert [(a["attempt"], a["url"], a["status_code"], a["error_class"]) for a in log] == [
        (1, receiver.url, 500, "http_status"),
        (2, receiver.url, 200, None),
    ]
    assert (log[0]["response_excerpt"], log[0]["error"]) == ("answer 500", "HTTP 500")
    assert (log[1]["response_excerpt"], log[1]["error"]) == ("ok", None)
    assert all(a["latency_ms"] >= 0 for a in log)
    assert at(log[0]["created_at"]) < at(log[1]["created_at"])

    assert_problem(await client.get("/v1/deliveries/999999"), 404, "not-found")
    assert_problem(await client.get("/v1/deliveries/nope"), 422, "validation-error")


async def test_a_retried_dead_delivery_gets_one_more_attempt_with_the_same_webhook_id(
    db: Database, config: Config, tenant: Tenant, serve: Any
) -> None:
    client = tenant.client
    receiver = await serve(Receiver(script=[status(500)] * MAX_ATTEMPTS))
    await create(client, url=receiver.url)
    await emit(db, tenant.merchant_id, "deposit.credited")
    clock = Clock()
    # the circuit and auto-disable would stop the endpoint on the way: kept out of this
    worker = sender(db, config, clock, circuit_failures=1000, disable_after_hours=24 * 30)
    try:
        for _ in range(MAX_ATTEMPTS):
            assert await worker.drain() == 1
            (row,) = await rows(db, select(deliveries))
            clock.now = max(clock.now, row.next_attempt_at)
        (row,) = await rows(db, select(deliveries))
        assert (row.status, row.attempts) == ("dead", MAX_ATTEMPTS)
        assert await worker.drain() == 0

        before = utcnow()
        response = await client.post(f"/v1/deliveries/{row.id}/retry")
        assert response.status_code == 202, response.text
        retried = response.json()
        assert (retried["id"], retried["status"], retried["attempts"]) == (
            row.id,
            "pending",
            MAX_ATTEMPTS,
        )
        assert retried["finished_at"] is None
        assert before <= at(retried["next_attempt_at"]) <= utcnow()

        assert await worker.drain() == 1  # the receiver answers 200 now
        detail = (await client.get(f"/v1/deliveries/{row.id}")).json()
        assert (detail["status"], detail["attempts"]) == ("delivered", MAX_ATTEMPTS + 1)
        assert [a["attempt"] for a in detail["attempt_log"]] == list(range(1, MAX_ATTEMPTS + 2))

        # delivered, it can be sent again too; past the schedule, one failure ends it
        receiver.script.append(status(503))
        again = await client.post(f"/v1/deliveries/{row.id}/retry")
        assert (again.status_code, again.json()["status"]) == (202, "pending")
        assert await worker.drain() == 1
        assert await worker.drain() == 0
    finally:
        await worker.close()
    (row,) = await rows(db, select(deliveries))
    assert (row.status, row.attempts, row.last_status_code) == ("dead", MAX_ATTEMPTS + 2, 503)
    assert len(receiver.received) == MAX_ATTEMPTS + 2
    assert len({headers["webhook-id"] for headers, _ in receiver.received}) == 1
    assert len({body for _, body in receiver.received}) == 1


async def test_a_pending_delivery_is_made_due_now(db: Database, tenant: Tenant) -> None:
    client = tenant.client
    endpoint_id = (await create(client))["id"]
    await emit(db, tenant.merchant_id, "deposit.credited")
    (row,) = await outbox(db, endpoint_id)
    later = utcnow() + timedelta(hours=2)
    await set_delivery(db, row.id, attempts=3, next_attempt_at=later, last_error="HTTP 502")
    assert at((await listed(client))[0]["next_attempt_at"]) == later
    response = await client.post(f"/v1/deliveries/{row.id}/retry")
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["status"], body["attempts"], body["last_error"]) == ("pending", 3, "HTTP 502")
    assert at(body["next_attempt_at"]) <= utcnow()
    assert_problem(await client.post("/v1/deliveries/999999/retry"), 404, "not-found")


async def test_retry_and_replay_need_an_enabled_endpoint(db: Database, tenant: Tenant) -> None:
    client = tenant.client
    endpoint_id = (await create(client))["id"]
    await emit(db, tenant.merchant_id, "deposit.credited")
    (row,) = await outbox(db, endpoint_id)
    await set_delivery(db, row.id, status="dead", attempts=MAX_ATTEMPTS, finished_at=utcnow())
    await client.post(f"/v1/endpoints/{endpoint_id}/disable")

    body = assert_problem(
        await client.post(f"/v1/deliveries/{row.id}/retry"), 409, "endpoint-disabled"
    )
    assert "enable it" in body["detail"]
    body = assert_problem(
        await client.post(f"/v1/endpoints/{endpoint_id}/replay", json={"after_seq": 0}),
        409,
        "endpoint-disabled",
    )
    assert "enable it" in body["detail"]
    (unchanged,) = await outbox(db, endpoint_id)
    assert unchanged.status == "dead"

    await client.post(f"/v1/endpoints/{endpoint_id}/enable")
    assert (await client.post(f"/v1/deliveries/{row.id}/retry")).status_code == 202

    # a deleted endpoint's deliveries stay readable, and are never sent again
    await client.delete(f"/v1/endpoints/{endpoint_id}")
    (history,) = await listed(client, endpoint_id=endpoint_id)
    assert (history["status"], history["last_error"]) == ("dead", "endpoint deleted")
    body = assert_problem(
        await client.post(f"/v1/deliveries/{row.id}/retry"), 409, "endpoint-disabled"
    )
    assert "deleted" in body["detail"]
    assert_problem(
        await client.post(f"/v1/endpoints/{endpoint_id}/replay", json={"after_seq": 0}),
        404,
        "not-found",
    )


async def test_replay_after_a_seq_queues_the_subscribed_events_spread_out(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    client = tenant.client
    target = (await create(client, event_types=["deposit.pending", "deposit.credited"]))["id"]
    sibling = (await create(client))["id"]
    theirs = (await create(other_tenant.client))["id"]
    s1, s2 = await emit(db, tenant.merchant_id, "deposit.pending", "deposit.credited")
    await client.post(f"/v1/endpoints/{target}/disable")
    # while the target is disabled nothing is queued for it: the replay inserts these
    s3, s4, s5 = await emit(
        db, tenant.merchant_id, "deposit.credited", "deposit.held", "deposit.pending"
    )
    await client.post(f"/v1/endpoints/{target}/enable")
    s6 = (await client.post(f"/v1/endpoints/{sibling}/test")).json()["seq"]
    s7 = (await client.post(f"/v1/endpoints/{target}/test")).json()["seq"]
    await emit(db, other_tenant.merchant_id, "deposit.pending")
    first, second, _test = await outbox(db, target)
    await set_delivery(db, first.id, status="delivered", attempts=1, finished_at=utcnow())
    await set_delivery(db, second.id, status="dead", attempts=MAX_ATTEMPTS, finished_at=utcnow())
    sibling_before = await outbox(db, sibling)
    theirs_before = await outbox(db, theirs)

    before = utcnow()
    response = await client.post(
        f"/v1/endpoints/{target}/replay", json={"after_seq": 0, "rate_per_second": 4}
    )
    assert response.status_code == 202, response.text
    replayed = response.json()
    queued = await outbox(db, target)
    # the held event is not subscribed to, and the sibling's test event is the sibling's
    assert [r.event_seq for r in queued] == [s1, s2, s3, s5, s7]
    assert {(r.status, r.attempts, r.finished_at) for r in queued} == {("pending", 0, None)}
    due = [r.next_attempt_at for r in queued]
    assert before <= due[0] <= utcnow()
    assert [d - due[0] for d in due] == [timedelta(seconds=i / 4) for i in range(5)]
    assert replayed == {
        "queued": 5,
        "first_seq": s1,
        "last_seq": s7,
        "finishes_by": replayed["finishes_by"],
    }
    assert at(replayed["finishes_by"]) == due[-1]
    assert [r.id for r in queued[:2]] == [first.id, second.id]  # the same rows, reset
    assert await outbox(db, sibling) == sibling_before
    assert await outbox(db, theirs) == theirs_before
    assert not {s4, s6} & {r.event_seq for r in queued}

    later = await client.post(f"/v1/endpoints/{target}/replay", json={"after_seq": s3})
    assert later.status_code == 202, later.text
    assert {k: v for k, v in later.json().items() if k != "finishes_by"} == {
        "queued": 2,
        "first_seq": s5,
        "last_seq": s7,
    }
    assert len(await outbox(db, target)) == 5
    nothing = await client.post(f"/v1/endpoints/{target}/replay", json={"after_seq": s7})
    assert {k: v for k, v in nothing.json().items() if k != "finishes_by"} == {
        "queued": 0,
        "first_seq": None,
        "last_seq": None,
    }


async def test_replay_over_a_time_range_sends_delivered_events_again(
    db: Database, config: Config, tenant: Tenant, serve: Any
) -> None:
    client = tenant.client
    receiver = await serve(Receiver())
    endpoint_id = (await create(client, url=receiver.url))["id"]
    start = utcnow() - timedelta(hours=1)
    seqs = []
    for minute in range(4):
        seqs += await emit(
            db, tenant.merchant_id, "deposit.credited", when=start + timedelta(minutes=minute)
        )
    clock = Clock()
    worker = sender(db, config, clock)
    try:
        assert await worker.drain() == 4
        first_round = {json.loads(body)["seq"]: (h, body) for h, body in receiver.received}
        assert {r.status for r in await outbox(db, endpoint_id)} == {"delivered"}

        span = {
            "from": (start + timedelta(minutes=1)).isoformat(),
            "to": (start + timedelta(minutes=3)).isoformat(),  # not included
            "rate_per_second": 1000,
        }
        response = await client.post(f"/v1/endpoints/{endpoint_id}/replay", json=span)
        assert response.status_code == 202, response.text
        replayed = response.json()
        assert (replayed["queued"], replayed["first_seq"], replayed["last_seq"]) == (
            2,
            seqs[1],
            seqs[2],
        )
        assert [r.status for r in await outbox(db, endpoint_id)] == [
            "delivered",
            "pending",
            "pending",
            "delivered",
        ]
        clock.now = max(clock.now, at(replayed["finishes_by"]))
        assert await worker.drain() == 2
    finally:
        await worker.close()
    again = receiver.received[4:]
    assert sorted(json.loads(body)["seq"] for _, body in again) == seqs[1:3]
    for headers, body in again:
        original_headers, original_body = first_round[json.loads(body)["seq"]]
        assert headers["webhook-id"] == original_headers["webhook-id"]
        assert body == original_body
    queued = await outbox(db, endpoint_id)
    assert [(r.status, r.attempts) for r in queued] == [("delivered", 1)] * 4
    # the attempt log keeps the first send; the replay counted from the start again
    detail = (await client.get(f"/v1/deliveries/{queued[1].id}")).json()
    assert [a["attempt"] for a in detail["attempt_log"]] == [1, 1]


async def test_replay_requests_are_checked_and_bounded(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = tenant.client
    endpoint_id = (await create(client))["id"]
    path = f"/v1/endpoints/{endpoint_id}/replay"
    t0, t1 = "2024-05-01T00:00:00Z", "2024-05-02T00:00:00+02:00"
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({}, "invalid-replay", "say what to replay"),
        ({"after_seq": 0, "from": t0, "to": t1}, "invalid-replay", "not both"),
        ({"from": t0}, "invalid-replay", "both ends"),
        ({"from": t1, "to": t0}, "invalid-replay", "from must be before to"),
        ({"from": "2024-05-01T00:00:00", "to": t1}, "validation-error", "timezone"),
        ({"after_seq": -1}, "validation-error", "after_seq"),
        ({"after_seq": 0, "rate_per_second": 0}, "validation-error", "rate_per_second"),
        ({"after_seq": 0, "rate_per_second": 5000}, "validation-error", "rate_per_second"),
        ({"after_seq": 0, "since": 3}, "validation-error", "since"),
    ]
    for body, slug, says in refused:
        problem = assert_problem(await client.post(path, json=body), 422, slug)
        assert says in problem["detail"], (body, problem)

    monkeypatch.setattr(delivery_service, "MAX_REPLAY_EVENTS", 2)
    first, _, _ = await emit(
        db, tenant.merchant_id, "deposit.pending", "deposit.credited", "deposit.held"
    )
    await set_delivery_all(db, endpoint_id, status="delivered")
    problem = assert_problem(
        await client.post(path, json={"after_seq": 0}), 422, "replay-too-large"
    )
    assert "more than 2 events" in problem["detail"]
    assert {r.status for r in await outbox(db, endpoint_id)} == {"delivered"}
    fits = await client.post(path, json={"after_seq": first})
    assert (fits.status_code, fits.json()["queued"]) == (202, 2)


async def set_delivery_all(db: Database, endpoint_id: str, **values: Any) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.endpoint_id == endpoint_id).values(values)
        )


async def test_another_merchants_deliveries_are_not_found(
    db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    endpoint_id = (await create(tenant.client))["id"]
    await emit(db, tenant.merchant_id, "deposit.credited")
    (row,) = await outbox(db, endpoint_id)
    await set_delivery(db, row.id, status="dead", attempts=MAX_ATTEMPTS, finished_at=utcnow())
    rival = other_tenant.client
    attempts: list[tuple[str, str, Any]] = [
        ("GET", f"/v1/deliveries/{row.id}", None),
        ("POST", f"/v1/deliveries/{row.id}/retry", None),
        ("POST", f"/v1/endpoints/{endpoint_id}/replay", {"after_seq": 0}),
        ("GET", f"/v1/deliveries?endpoint_id={endpoint_id}", None),
    ]
    for method, url, body in attempts:
        response = await rival.request(method, url, json=body)
        assert_problem(response, 404, "not-found")
        assert "deposit.credited" not in response.text
    assert await listed(rival) == []
    (unchanged,) = await outbox(db, endpoint_id)
    assert (unchanged.status, unchanged.attempts) == ("dead", MAX_ATTEMPTS)
    assert len(await listed(tenant.client)) == 1


async def test_openapi_documents_the_delivery_routes(app_client: httpx.AsyncClient) -> None:
    paths = (await app_client.get("/openapi.json")).json()["paths"]
    routes = {
        "/v1/deliveries": "get",
        "/v1/deliveries/{delivery_id}": "get",
        "/v1/deliveries/{delivery_id}/retry": "post",
        "/v1/endpoints/{endpoint_id}/replay": "post",
    }
    for path, method in routes.items():
        assert set(paths[path]) == {method}
        operation = paths[path][method]
        assert operation["tags"] == ["deliveries"]
        assert operation["summary"]
        assert "application/problem+json" in operation["responses"]["404"]["content"]
    for path in ("/v1/deliveries/{delivery_id}/retry", "/v1/endpoints/{endpoint_id}/replay"):
        assert "409" in paths[path]["post"]["responses"]
        assert "202" in paths[path]["post"]["responses"]
