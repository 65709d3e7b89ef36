"""The webhook sender against real local receivers (aiohttp servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web
from sqlalchemy import select

from depositd.clock import utcnow
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.notify import wake_on_events
from depositd.db.outbox import due_postgresql
from depositd.db.tables import deliveries, delivery_attempts, endpoints, events
from depositd.db.uow import UnitOfWork
from depositd.delivery.poster import HttpPoster
from depositd.delivery.signing import new_secret
from depositd.domain.assets import AssetBook
from depositd.ids import new_id
from depositd.services import queries
from depositd.services.endpoints import get_endpoint
from depositd.services.observations import record_observation, record_observations
from depositd.workers.sender import Sender

from .helpers import eth_transfer, merchant_with_user


@dataclass
class Receiver:
    """A local webhook receiver; ``script`` says what to answer to each request, in turn."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    script: list[Callable[[], web.StreamResponse]] = field(default_factory=list)
    delay: float = 0.0
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append((headers, await request.read()))
        async with self.arrived:
            self.arrived.notify_all()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.script:
            return self.script.pop(0)()
        return web.Response(text="ok")

    async def wait_for(self, count: int, within: float) -> None:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: len(self.received) >= count)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Receiver], Any]]:
    runners: list[web.AppRunner] = []

    async def start(receiver: Receiver) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", receiver.handle)
        # a still-running handler (a receiver made to hang) is not waited for at the end
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        runners.append(runner)
        return receiver

    yield start
    for runner in runners:
        await runner.cleanup()


def status(code: int, **headers: str) -> Callable[[], web.StreamResponse]:
    return lambda: web.Response(status=code, headers=headers, text=f"answer {code}")


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def sender(db: Database, config: Config, clock: Clock | None = None, **changes: Any) -> Sender:
    """A sender on the test config's policy (http and 127.0.0.1 allowed), through the
    SSRF-guarded session the worker uses."""
    policy = config.delivery.model_copy(update=changes)
    return Sender(db, policy, HttpPoster.for_policy(policy), clock=clock or utcnow)


async def send_due(db: Database, config: Config, clock: Clock | None = None, **changes: Any) -> int:
    """Send what is due now with a fresh sender; how many deliveries it handled."""
    worker = sender(db, config, clock, **changes)
    try:
        return await worker.drain()
    finally:
        await worker.close()


async def add_endpoint(
    db: Database, merchant_id: str, url: str, *, fallback_urls: tuple[str, ...] = ()
) -> tuple[str, str]:
    endpoint_id, secret = new_id("end"), new_secret()
    async with UnitOfWork(db, write=True) as uow:
        await uow.endpoints.add(endpoint_id, merchant_id, url, ["*"], utcnow())
        await uow.commit()
    async with db.writer.begin() as conn:
        await conn.execute(
            endpoints.update()
            .where(endpoints.c.id == endpoint_id)
            .values(secret=secret, fallback_urls=list(fallback_urls))
        )
    return endpoint_id, secret


async def rows(db: Database, query: Any) -> list[Any]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(query)).all())


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = standardwebhooks.Webhook(secret).verify(body, headers)
    return payload


async def test_a_receiver_failing_three_times_gets_the_event_once_with_one_id(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver(script=[status(500), status(503), status(429)]))
    endpoint_id, secret = await add_endpoint(db, merchant_id, receiver.url)
    recorded = await record_observation(db, assets, eth_transfer(address, 1, 12))
    clock = Clock()
    worker = sender(db, config, clock)
    try:
        for _ in range(4):
            assert await worker.drain() == 1
            assert await worker.drain() == 0  # nothing due before the retry wait ends
            (delivery,) = await rows(db, select(deliveries))
            # full jitter may make the wait shorter than a second: step past it by one, so
            # each attempt's (whole-second) timestamp differs
            clock.now = max(clock.now, delivery.next_attempt_at) + timedelta(seconds=1)
    finally:
        await worker.close()
    assert len(receiver.received) == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert len(ids) == 1
    stamps = [headers["webhook-timestamp"] for headers, _ in receiver.received]
    assert len(set(stamps)) == 4  # a fresh timestamp per attempt
    # the first attempt is signed now: the library's check, timestamp tolerance included;
    # the later ones carry the test clock's times, so their signatures are recomputed
    first_headers, first_body = receiver.received[0]
    payload = verify(secret, first_headers, first_body)
    assert payload["type"] == "deposit.credited"
    assert payload["data"]["seq"] == recorded.seq
    for headers, body in receiver.received:
        at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
        expected = standardwebhooks.Webhook(secret).sign(headers["webhook-id"], at, body.decode())
        assert headers["webhook-signature"] == expected
        assert body == first_body
    (delivery,) = await rows(db, select(deliveries))
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 4, 200)
    tried = await rows(db, select(delivery_attempts).order_by(delivery_attempts.c.id))
    assert [a.status_code for a in tried] == [500, 503, 429, 200]
    assert [a.error_class for a in tried] == ["http_status"] * 3 + [None]
    (health,) = await rows(db, select(endpoints).where(endpoints.c.id == endpoint_id))
    assert health.failure_streak == 0


async def test_retry_after_is_honoured_within_bounds(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver(script=[status(503, **{"Retry-After": "120"})]))
    await add_endpoint(db, merchant_id, receiver.url)
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    clock = Clock()
    await send_due(db, config, clock)
    (delivery,) = await rows(db, select(deliveries))
    assert delivery.next_attempt_at == clock.now + timedelta(seconds=120)


async def test_410_disables_the_endpoint_and_emits_endpoint_disabled(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    gone = await serve(Receiver(script=[status(410)]))
    endpoint_id, _ = await add_endpoint(db, merchant_id, gone.url)
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    worker = sender(db, config)
    try:
        await worker.drain()
        assert await worker.drain() == 0  # nothing more goes to a disabled endpoint
    finally:
        await worker.close()
    (endpoint,) = await rows(db, select(endpoints).where(endpoints.c.id == endpoint_id))
    assert endpoint.disabled_at is not None
    assert "410" in endpoint.disabled_reason
    notices = await rows(db, select(events).where(events.c.type == "endpoint.disabled"))
    assert [n.data["endpoint_id"] for n in notices] == [endpoint_id]
    (delivery,) = await rows(db, select(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
    assert delivery.status == "pending"  # kept for when the merchant enables it again


async def test_a_redirect_is_not_followed(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    target = await serve(Receiver())
    redirecting = await serve(Receiver(script=[status(302, Location=target.url)]))
    await add_endpoint(db, merchant_id, redirecting.url)
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    await send_due(db, config)
    assert len(redirecting.received) == 1
    assert target.received == []
    (delivery,) = await rows(db, select(deliveries))
    assert (delivery.status, delivery.last_status_code) == ("pending", 302)
    assert "redirects are not followed" in delivery.last_error


async def test_the_fallback_url_is_used_when_the_primary_is_down(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    fallback = await serve(Receiver())
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"  # nothing listens there
    await add_endpoint(db, merchant_id, dead, fallback_urls=(fallback.url,))
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    await send_due(db, config)
    assert len(fallback.received) == 1
    tried = await rows(db, select(delivery_attempts).order_by(delivery_attempts.c.id))
    assert [(a.url, a.error_class) for a in tried] == [(dead, "connect"), (fallback.url, None)]
    (delivery,) = await rows(db, select(deliveries))
    assert delivery.status == "delivered"


async def test_during_a_rotation_both_signatures_are_sent_and_each_verifies(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver())
    endpoint_id, old = await add_endpoint(db, merchant_id, receiver.url)
    new = new_secret()
    async with db.writer.begin() as conn:
        await conn.execute(
            endpoints.update()
            .where(endpoints.c.id == endpoint_id)
            .values(
                secret=new,
                previous_secret=old,
                previous_secret_until=utcnow() + timedelta(hours=24),
            )
        )
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    await send_due(db, config)
    ((headers, body),) = receiver.received
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        verify(secret, headers, body)


async def test_a_timing_out_endpoint_does_not_hold_back_a_healthy_one(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    stuck = await serve(Receiver(delay=30))
    healthy = await serve(Receiver())
    await add_endpoint(db, merchant_id, stuck.url)
    await add_endpoint(db, merchant_id, healthy.url)
    for tx in range(1, 21):  # 20 events, each due at both endpoints, interleaved
        await record_observation(db, assets, eth_transfer(address, tx, 12))
    # the circuit breaker would also stop the stuck endpoint after 5 timeouts: kept closed
    # here, the endpoint's share of the slots alone must keep the healthy one going
    worker = sender(
        db, config, total_timeout_seconds=2.0, concurrency=8, batch_size=4, circuit_failures=1000
    )
    started = time.monotonic()
    task = asyncio.create_task(worker.run())
    try:
        await healthy.wait_for(20, within=20)
        took = time.monotonic() - started
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(healthy.received) == 20
    # the stuck endpoint holds at most its share of the slots, each for one timeout (2 s);
    # the healthy one's 20 events never wait behind it for more than that
    assert took < 2.5, took
    bodies = [json.loads(body) for _, body in healthy.received]
    assert len({b["id"] for b in bodies}) == 20


async def test_an_address_outside_the_policy_is_refused_at_connect_time(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    # the endpoint was allowed when it was made; the policy has since dropped loopback
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver())
    await add_endpoint(db, merchant_id, receiver.url)
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    # a still clock: a short (jittered) retry wait cannot fall due again within the drain
    await send_due(db, config, Clock(), allow_networks=[])
    assert receiver.received == []
    (tried,) = await rows(db, select(delivery_attempts))
    assert tried.error_class == "ssrf_blocked"
    assert "loopback" in tried.error
    (delivery,) = await rows(db, select(deliveries))
    assert delivery.status == "pending"
    assert "loopback" in delivery.last_error


async def test_after_the_last_attempt_the_delivery_is_dead_and_the_circuit_opened(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver(script=[status(500) for _ in range(20)]))
    endpoint_id, _ = await add_endpoint(db, merchant_id, receiver.url)
    await record_observation(db, assets, eth_transfer(address, 1, 12))
    clock = Clock()
    # kept enabled however long it fails, to reach the last attempt
    worker = sender(db, config, clock, disable_after_hours=720, circuit_failures=5)
    try:
        for attempt in range(1, 11):
            assert await worker.drain() == 1
            (delivery,) = await rows(db, select(deliveries))
            (health,) = await rows(db, select(endpoints).where(endpoints.c.id == endpoint_id))
            assert health.failure_streak == attempt
            # five failures in a row open the endpoint's circuit for a while
            assert (health.circuit_open_until is not None) == (attempt >= 5)
            if attempt < 10:
                assert delivery.status == "pending"
                clock.now = max(delivery.next_attempt_at, health.circuit_open_until or clock.now)
        assert await worker.drain() == 0
    finally:
        await worker.close()
    assert (delivery.status, delivery.attempts) == ("dead", 10)
    assert delivery.finished_at is not None
    assert len(receiver.received) == 10


async def test_an_endpoint_failing_without_a_success_for_too_long_is_disabled(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    # two merchants: the notice about one endpoint is not queued to the other
    broken_merchant, broken_address = await merchant_with_user(db, "alice")
    flaky_merchant, flaky_address = await merchant_with_user(db, "bob")
    broken = await serve(Receiver(script=[status(500) for _ in range(20)]))
    # fails, answers once inside the window, then fails on
    flaky = await serve(Receiver(script=[status(500), status(200)] + [status(500)] * 20))
    broken_id, _ = await add_endpoint(db, broken_merchant, broken.url)
    flaky_id, _ = await add_endpoint(db, flaky_merchant, flaky.url)
    await record_observation(db, assets, eth_transfer(broken_address, 1, 12))
    await record_observation(db, assets, eth_transfer(flaky_address, 2, 12))
    window = timedelta(hours=config.delivery.disable_after_hours)
    clock = Clock()
    started = clock.now
    # the circuit stays closed: only disabling may stop the attempts
    worker = sender(db, config, clock, circuit_failures=1000)
    try:
        assert await worker.drain() == 2  # both fail
        clock.now = started + window * 2 / 3
        assert await worker.drain() == 2  # broken fails again, flaky succeeds
        assert (await get_endpoint(db, broken_merchant, broken_id)).disabled_at is None
        await record_observation(db, assets, eth_transfer(broken_address, 3, 12))
        await record_observation(db, assets, eth_transfer(flaky_address, 4, 12))
        disabled_at = clock.now = started + window + timedelta(minutes=1)
        assert await worker.drain() == 3  # broken's two deliveries and flaky's new one fail
        # long past every retry wait: only broken's disabling keeps its deliveries back
        clock.now += timedelta(hours=3)
        assert await worker.drain() == 1  # flaky's
    finally:
        await worker.close()

    reason = f"no successful delivery since {started.isoformat()}"
    endpoint = await get_endpoint(db, broken_merchant, broken_id)
    assert (endpoint.disabled_at, endpoint.disabled_reason) == (disabled_at, reason)
    assert len(broken.received) == 4
    waiting = await rows(db, select(deliveries).where(deliveries.c.endpoint_id == broken_id))
    assert [d.status for d in waiting] == ["pending", "pending"]
    notices = [
        event
        for event in await queries.events_after(db, broken_merchant, 0, 100)
        if event.type == "endpoint.disabled"
    ]
    assert [(n.data["endpoint_id"], n.data["reason"]) for n in notices] == [(broken_id, reason)]

    # failing for longer than the window too, but with a success inside it
    assert len(flaky.received) == 4
    assert (await get_endpoint(db, flaky_merchant, flaky_id)).disabled_at is None
    assert [
        event.type
        for event in await queries.events_after(db, flaky_merchant, 0, 100)
        if event.type == "endpoint.disabled"
    ] == []


async def test_events_another_process_commits_wake_the_sender(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    # PostgreSQL: only the NOTIFY of the other pool's commit can wake a sender that polls
    # every 30 s; SQLite has no such channel between processes, so there it polls
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver())
    await add_endpoint(db, merchant_id, receiver.url)
    policy = config.delivery
    worker = Sender(
        db,
        policy,
        HttpPoster.for_policy(policy),
        poll_interval_seconds=30 if not db.is_sqlite else 0.2,
    )
    running = asyncio.create_task(worker.run())
    listening = asyncio.create_task(wake_on_events(db, worker.wake))
    other = Database(db.url)
    try:
        await asyncio.sleep(0.5)  # both listening and idle
        recorded = await record_observation(other, assets, eth_transfer(address, 1, 12))
        await receiver.wait_for(1, within=5)
        ((_, body),) = receiver.received
        assert json.loads(body)["data"]["seq"] == recorded.seq
    finally:
        listening.cancel()
        running.cancel()
        await asyncio.gather(listening, running, return_exceptions=True)
        await worker.close()
        await other.dispose()


async def test_answers_are_written_down_in_batches_while_the_sender_runs(
    db: Database, config: Config, assets: AssetBook, serve: Any
) -> None:
    # the answers reach the database in batches as they come, not when the claims run out
    # (each unwritten answer is sent again after a crash). Not reproduced here: on SQLite,
    # a write beside the main loop lost the one writer connection to back-to-back claims
    # for a whole bench run (bench/deliver.py, receiver in another process); with this
    # in-process receiver the claims pause often enough for it
    merchant_id, address = await merchant_with_user(db)
    receiver = await serve(Receiver())
    await add_endpoint(db, merchant_id, receiver.url)
    total = 3_000
    for start in range(0, total, 500):
        batch = [eth_transfer(address, tx, 12) for tx in range(start, start + 500)]
        await record_observations(db, assets, batch)
    worker = sender(db, config)
    written: list[int] = []
    all_written = asyncio.Event()
    record = worker._record

    async def counted(done: Any, now: datetime) -> None:
        await record(done, now)
        written.append(len(done))
        if sum(written) >= total:
            all_written.set()

    worker._record = counted  # type: ignore[method-assign]
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(60):
            await all_written.wait()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert len(receiver.received) == total
    assert max(written) <= 1_000, written


async def test_the_claims_generic_plan_reads_the_pending_rows_by_index_postgresql(
    pg_url: str,
) -> None:
    # [postgresql] only. asyncpg prepares every statement, and PostgreSQL plans a prepared
    # statement generically after five runs: a partial index (WHERE status = 'pending') is
    # usable in that plan only if the statement holds the value itself, not a parameter.
    # (Holding it as a parameter made each claim scan the table: 20-50 ms, bench/deliver.py.)
    db = Database(pg_url)
    try:
        async with db.writer.connect() as conn:
            await conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            await conn.exec_driver_sql("SET enable_seqscan = off")
            for excluding, arguments in ((False, "now()"), (True, "now(), '{end_x}'")):
                name = f"claim_{int(excluding)}"
                await conn.exec_driver_sql(f"PREPARE {name} AS {due_postgresql(20, excluding)}")
                explained = await conn.exec_driver_sql(f"EXPLAIN EXECUTE {name}({arguments})")
                plan = "\n".join(row[0] for row in explained)
                assert "ix_deliveries_pending_due" in plan, plan
                assert "ix_deliveries_pending_order" in plan, plan
    finally:
        await db.dispose()
