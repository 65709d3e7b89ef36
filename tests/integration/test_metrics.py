"""Metrics after a known scenario: the counters move by what happened, the gauges read from
the database say what is; request ids; readiness follows the watchers' lag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from depositd.app import create_app
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries
from depositd.domain.assets import AssetBook
from depositd.services.observations import record_observation

from ..conftest import free_port
from .helpers import eth_transfer, merchant_with_user, merchant_with_users
from .test_callbacks import Setup, app_config, client_for, payload, signed
from .test_sender import Clock, Receiver, add_endpoint, sender, serve, status

__all__ = ["serve"]  # the fixture, used by name


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
async def limited(db: Database, config: Config) -> AsyncIterator[tuple[Setup, httpx.AsyncClient]]:
    """The custody provider's callbacks, with USDT limited to 30 a day at KYC level 0."""
    merchant_id = await merchant_with_users(db, "alice")
    usdt = [
        a.model_copy(update={"kyc_limits": {0: "30"}}) if a.code == "USDT" else a
        for a in config.assets
    ]
    async with client_for(db, app_config(config, merchant_id, assets=usdt)) as client:
        yield Setup(db, merchant_id, client), client


async def test_callbacks_transitions_holds_and_database_gauges(
    limited: tuple[Setup, httpx.AsyncClient],
) -> None:
    setup, client = limited
    before = await scrape(client)
    first = payload("evt-1", id="dep-1", amount="25")
    assert (await setup.post(first, signed(first))).status_code == 200
    assert (await setup.post(first, signed(first))).status_code == 200  # a replay
    over = payload("evt-2", id="dep-2", amount="10")  # 35 in a day: over the limit, held
    assert (await setup.post(over, signed(over))).status_code == 200
    tampered = payload("evt-3", id="dep-3")
    headers = signed(tampered)
    assert (await setup.post(tampered.replace(b"25.50", b"99.50"), headers)).status_code == 401
    after = await scrape(client)

    assert delta(before, after, "depositd_callbacks_total", provider="custody",
                 outcome="accepted") == 2  # fmt: skip
    assert delta(before, after, "depositd_callbacks_total", provider="custody",
                 outcome="replayed") == 1  # fmt: skip
    assert delta(before, after, "depositd_callbacks_total", provider="custody",
                 outcome="rejected") == 1  # fmt: skip
    assert delta(before, after, "depositd_callback_rejections_total", provider="custody",
                 code="signature_mismatch") == 1  # fmt: skip
    assert delta(before, after, "depositd_deposit_transitions_total", status="credited") == 1
    assert delta(before, after, "depositd_deposit_transitions_total", status="held") == 1
    assert delta(before, after, "depositd_holds_total", reason="held_kyc_limit") == 1
    # states, from the database: exact, not deltas
    assert after[("depositd_deposits", (("status", "credited"),))] == 1
    assert after[("depositd_deposits", (("status", "held"),))] == 1
    assert after[("depositd_outbox_depth", ())] == 0  # no endpoint, nothing to deliver


async def test_deliveries_latency_and_outbox(
    db: Database, config: Config, assets: AssetBook, serve: Any, app_client: httpx.AsyncClient
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver(script=[status(500)]))
    await add_endpoint(db, merchant_id, receiver.url)
    with structlog.testing.capture_logs() as logged:
        recorded = await record_observation(db, assets, eth_transfer(address, 1, 12))
    assert recorded.deposit is not None
    assert [(line["event"], line["deposit_id"]) for line in logged] == [
        ("deposit_credited", recorded.deposit.id)
    ]
    waiting = await scrape(app_client)
    assert waiting[("depositd_outbox_depth", ())] == 1
    assert waiting[("depositd_outbox_oldest_age_seconds", ())] >= 0
    clock = Clock()
    worker = sender(db, config, clock)
    try:
        with structlog.testing.capture_logs() as logged:
            assert await worker.drain() == 1  # 500: to be retried
        failed = [line for line in logged if line["event"] == "delivery_failed"]
        assert [(line["status_code"], line["attempt"]) for line in failed] == [(500, 1)]
        assert failed[0]["delivery_id"]
        assert failed[0]["endpoint_id"]
        (due,) = await _pending(db)
        clock.now = max(clock.now, due) + timedelta(seconds=1)
        assert await worker.drain() == 1  # 200
    finally:
        await worker.close()
    after = await scrape(app_client)
    assert delta(waiting, after, "depositd_deliveries_total", outcome="retrying") == 1
    assert delta(waiting, after, "depositd_deliveries_total", outcome="delivered") == 1
    assert delta(waiting, after, "depositd_delivery_latency_seconds_count") == 1
    assert after[("depositd_outbox_depth", ())] == 0


async def _pending(db: Database) -> list[Any]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(select(deliveries.c.next_attempt_at))).scalars())


async def test_every_answer_carries_a_request_id(app_client: httpx.AsyncClient) -> None:
    made = await app_client.get("/healthz")
    assert made.headers["x-request-id"].startswith("req_")
    kept = await app_client.get("/healthz", headers={"x-request-id": "lb-7f3a"})
    assert kept.headers["x-request-id"] == "lb-7f3a"
    odd = await app_client.get("/healthz", headers={"x-request-id": "no spaces <allowed>"})
    assert odd.headers["x-request-id"].startswith("req_")
    # provider callbacks are served in front of the framework, and still carry one
    callback = await app_client.post("/v1/callbacks/nobody", content=b"{}")
    assert callback.status_code == 404
    assert callback.headers["x-request-id"].startswith("req_")


async def test_an_unhandled_error_carries_a_request_id(db: Database, config: Config) -> None:
    app = create_app(config, db)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client:
        answer = await client.get("/boom", headers={"x-request-id": "lb-500"})
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "lb-500"


@pytest.mark.parametrize("node", ["anvil", "down"])
async def test_readiness_follows_the_watchers(
    db: Database, config: Config, anvil_url: str, node: str
) -> None:
    url = anvil_url if node == "anvil" else f"http://127.0.0.1:{free_port()}"
    chain = config.chains["anvil"].model_copy(
        update={"rpc_url": url, "ws_url": None, "poll_interval_seconds": 0.2}
    )
    watched = config.model_copy(update={"chains": {"anvil": chain}})
    app = create_app(watched, db, workers=True)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client,
    ):
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            ready = await client.get("/readyz")
            if node == "anvil" and ready.status_code == 200:
                break
            if node == "down" and ready.json()["watchers"]["anvil"]["last_error"]:
                break
            assert asyncio.get_running_loop().time() < deadline, ready.text
            await asyncio.sleep(0.1)
        if node == "down":
            assert ready.status_code == 503
            assert "anvil" in ready.json()["error"]
        metrics_text = (await client.get("/metrics")).text
    up = samples(metrics_text)[("depositd_chain_node_up", (("chain", "anvil"),))]
    assert up == (1 if node == "anvil" else 0)
