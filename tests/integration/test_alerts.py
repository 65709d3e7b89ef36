"""Each alert fires once per incident, stays quiet while the trouble lasts, and resolves
once when it ends; sinks that fail are told again; Slack-compatible JSON reaches a webhook."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from depositd.config import AlertsConfig, Config
from depositd.db.alerts import AlertRow, OpsRepository
from depositd.db.engine import Database
from depositd.db.tables import deliveries, delivery_attempts, deposits, inbound_callbacks
from depositd.delivery.poster import HttpPoster
from depositd.domain.assets import AssetBook
from depositd.ids import new_id
from depositd.services import endpoints as endpoint_service
from depositd.services.alerts import Evaluator, OpsState, SlackSink
from depositd.services.observations import record_observation
from depositd.services.reconcile import Mismatch

from .helpers import eth_transfer, merchant_with_user
from .test_sender import Receiver, add_endpoint, serve, status

__all__ = ["serve"]  # the fixture, used by name


@dataclass
class Said:
    """A sink that remembers what it was told; ``fail`` makes it refuse the next ones."""

    told: list[tuple[str, str, bool]] = field(default_factory=list)
    fail: int = 0

    async def announce(self, alert: AlertRow) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("sink down")
        self.told.append((alert.name, alert.subject, alert.firing))


@dataclass
class FakeWatcher:
    chain: str = "anvil"
    node_reachable: bool = True
    last_round_at: datetime | None = None
    last_error: str | None = None
    head: int = 100
    cursor: int = 100

    @property
    def lag_blocks(self) -> int | None:
        return self.head - self.cursor


@dataclass
class Bench:
    db: Database
    assets: AssetBook
    config: Config
    merchant_id: str
    address: str
    said: Said
    evaluator: Evaluator
    watcher: FakeWatcher
    now: list[datetime]

    def later(self, **delta: float) -> None:
        self.now[0] += timedelta(**delta)

    async def round(self) -> list[tuple[str, str, bool]]:
        """One evaluation; what the sink was told in it."""
        before = len(self.said.told)
        await self.evaluator.evaluate()
        return self.said.told[before:]


@pytest.fixture
async def bench(db: Database, assets: AssetBook, config: Config) -> Bench:
    merchant_id, address = await merchant_with_user(db)
    said = Said()
    now = [datetime.now(UTC)]
    watcher = FakeWatcher(last_round_at=now[0])
    settings = AlertsConfig(delivery_min_attempts=4, callback_min_count=4)
    evaluator = Evaluator(
        db, settings, [said], lambda: [watcher], OpsState(started_at=now[0]), lambda: now[0]
    )
    return Bench(db, assets, config, merchant_id, address, said, evaluator, watcher, now)


async def lifecycle(
    bench: Bench,
    name: str,
    begin: Callable[[], Awaitable[Any]],
    end: Callable[[], Awaitable[Any]],
) -> None:
    assert await bench.round() == []
    subject = await begin()
    fired = await bench.round()
    assert fired == [(name, subject, True)]
    assert await bench.round() == []  # still in trouble: not told again
    assert await bench.round() == []
    await end()
    assert await bench.round() == [(name, subject, False)]
    assert await bench.round() == []


async def _execute(db: Database, statement: Any) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(statement)


async def test_endpoint_disabled(bench: Bench) -> None:
    endpoint_id, _ = await add_endpoint(bench.db, bench.merchant_id, "http://127.0.0.1:9/hook")

    async def begin() -> str:
        await endpoint_service.disable_endpoint(
            bench.db, bench.merchant_id, endpoint_id, actor="test"
        )
        return endpoint_id

    async def end() -> None:
        await endpoint_service.enable_endpoint(
            bench.db, bench.merchant_id, endpoint_id, actor="test"
        )

    await lifecycle(bench, "endpoint_disabled", begin, end)


async def test_dead_letters_and_delivery_failure_rate(bench: Bench) -> None:
    endpoint_id, _ = await add_endpoint(bench.db, bench.merchant_id, "http://127.0.0.1:9/hook")
    await record_observation(bench.db, bench.assets, eth_transfer(bench.address, 1, 12))

    async def begin() -> str:
        await _execute(bench.db, update(deliveries).values(status="dead", finished_at=bench.now[0]))
        return endpoint_id

    async def end() -> None:
        await _execute(bench.db, update(deliveries).values(status="pending", finished_at=None))

    await lifecycle(bench, "dead_letters", begin, end)

    async def failing() -> str:
        async with bench.db.writer.begin() as conn:
            (delivery_id,) = (await conn.execute(deliveries.select())).one()[:1]
            for attempt in range(5):
                await conn.execute(
                    delivery_attempts.insert().values(
                        delivery_id=delivery_id,
                        attempt=attempt + 1,
                        url="http://127.0.0.1:9/hook",
                        status_code=500,
                        latency_ms=3,
                        created_at=bench.now[0],
                    )
                )
        return endpoint_id

    async def window_passes() -> None:
        bench.later(minutes=6)
        bench.watcher.last_round_at = bench.now[0]

    await lifecycle(bench, "delivery_failure_rate", failing, window_passes)


async def test_callback_rejection_rate(bench: Bench) -> None:
    async def begin() -> str:
        async with bench.db.writer.begin() as conn:
            for _ in range(4):
                await conn.execute(
                    inbound_callbacks.insert().values(
                        id=new_id("cbk"),
                        provider="custody",
                        merchant_id=bench.merchant_id,
                        received_at=bench.now[0],
                        source_ip="203.0.113.9",
                        headers={},
                        body=b"{}",
                        body_bytes=2,
                        outcome="rejected",
                        rejection_code="signature_mismatch",
                        rejection="no shared secret matches the signature",
                    )
                )
        return "custody"

    async def window_passes() -> None:
        bench.later(minutes=6)
        bench.watcher.last_round_at = bench.now[0]

    await lifecycle(bench, "callback_rejection_rate", begin, window_passes)


async def test_deposits_stuck(bench: Bench) -> None:
    async def begin() -> str:
        await record_observation(bench.db, bench.assets, eth_transfer(bench.address, 2, 0))
        bench.later(minutes=31)
        bench.watcher.last_round_at = bench.now[0]
        return bench.merchant_id

    async def end() -> None:
        await record_observation(bench.db, bench.assets, eth_transfer(bench.address, 2, 12))

    await lifecycle(bench, "deposits_stuck", begin, end)


async def test_deposit_reversed_after_a_reorg(bench: Bench) -> None:
    async def begin() -> str:
        await record_observation(bench.db, bench.assets, eth_transfer(bench.address, 3, 12))
        gone = eth_transfer(bench.address, 3, 12, removed=True)
        recorded = await record_observation(bench.db, bench.assets, gone)
        assert recorded.deposit is not None
        assert recorded.deposit.status.value == "reversed"
        return bench.merchant_id

    async def window_passes() -> None:
        bench.later(minutes=61)
        bench.watcher.last_round_at = bench.now[0]

    await lifecycle(bench, "deposit_reversed", begin, window_passes)


async def test_anomaly_holds(bench: Bench) -> None:
    credited = await record_observation(bench.db, bench.assets, eth_transfer(bench.address, 4, 12))
    assert credited.deposit is not None
    deposit_id = credited.deposit.id

    async def begin() -> str:
        # as the screening leaves a deposit it holds (engine path: test_anomaly_holds)
        await _execute(
            bench.db,
            update(deposits)
            .where(deposits.c.id == deposit_id)
            .values(status="held", reason_code="anomaly_amount"),
        )
        return bench.merchant_id

    async def end() -> None:
        await _execute(
            bench.db,
            update(deposits).where(deposits.c.id == deposit_id).values(status="rejected"),
        )

    await lifecycle(bench, "anomaly_holds", begin, end)


async def test_reconciliation_mismatch(bench: Bench) -> None:
    state = bench.evaluator.state

    async def begin() -> str:
        state.mismatches = [Mismatch("account_cache", "user:x:USDT:available", "10", "12")]
        return "sums"

    async def end() -> None:
        state.mismatches = []

    await lifecycle(bench, "reconciliation_mismatch", begin, end)


async def test_watcher_lag_and_node_down(bench: Bench) -> None:
    watcher = bench.watcher

    async def lagging() -> str:
        watcher.head = watcher.cursor + 51
        return "anvil"

    async def caught_up() -> None:
        watcher.cursor = watcher.head

    await lifecycle(bench, "watcher_lag", lagging, caught_up)

    async def down() -> str:
        watcher.node_reachable, watcher.last_error = False, "ClientConnectorError"
        bench.later(seconds=61)  # not answered for over node_down_seconds
        return "anvil"

    async def up() -> None:
        watcher.node_reachable, watcher.last_round_at = True, bench.now[0]

    await lifecycle(bench, "chain_node_down", down, up)


async def test_a_failed_sink_is_told_again_and_only_once(bench: Bench) -> None:
    bench.said.fail = 2
    bench.evaluator.state.mismatches = [Mismatch("posting", "dep_1", "2", "1")]
    assert await bench.round() == []  # the sink refused
    assert await bench.round() == []  # and again
    assert await bench.round() == [("reconciliation_mismatch", "sums", True)]
    assert await bench.round() == []


async def test_slack_compatible_json_reaches_the_ops_webhook(bench: Bench, serve: Any) -> None:
    receiver = await serve(Receiver(script=[status(503)]))
    poster = HttpPoster.for_policy(bench.config.delivery)  # loopback allowed in the test config
    try:
        bench.evaluator.sinks = [SlackSink(receiver.url, poster)]
        bench.evaluator.state.mismatches = [Mismatch("posting", "dep_1", "2", "1")]
        await bench.evaluator.evaluate()  # 503: told again next round
        await bench.evaluator.evaluate()
        bench.evaluator.state.mismatches = []
        await bench.evaluator.evaluate()
    finally:
        await poster.close()
    texts = [json.loads(body)["text"] for _, body in receiver.received]
    assert texts == [
        "[FIRING] reconciliation_mismatch: reconciliation: 1 sums disagree (posting)",
        "[FIRING] reconciliation_mismatch: reconciliation: 1 sums disagree (posting)",
        "[RESOLVED] reconciliation_mismatch: reconciliation: 1 sums disagree (posting)",
    ]
    last = json.loads(receiver.received[-1][1])
    assert last["attachments"][0]["color"] == "good"


#: each rule's query and the index that must serve it
RULE_INDEXES = {
    "callbacks": "ix_inbound_callbacks_received_at",
    "delivery_attempts": "ix_delivery_attempts_created_at",
    "dead_letters": "ix_deliveries_dead",
    "stuck_deposits": "ix_deposits_open_updated",
    "reversals": "ix_events_reversed",
    "anomaly_holds": "ix_deposits_held",
}


@pytest.mark.parametrize("rule", sorted(RULE_INDEXES))
async def test_each_rule_reads_through_its_index(db: Database, rule: str) -> None:
    """The rules run every 15 s: with a table scan each, a deployment with millions of rows
    would read them all every time. On PostgreSQL with table scans priced out, and on SQLite
    as it plans, each rule's query names its index."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not the connection's own set-up
            seen.append((statement, parameters))

    engine = db.reader.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        async with db.reader.connect() as conn:
            query = getattr(OpsRepository(conn), rule)
            await (query() if rule == "anomaly_holds" else query(datetime.now(UTC)))
            [(statement, parameters)] = seen
            if db.is_sqlite:
                explain = "EXPLAIN QUERY PLAN "
            else:
                await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                explain = "EXPLAIN "
            plan = [
                str(row[-1]) for row in await conn.exec_driver_sql(explain + statement, parameters)
            ]
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert any(RULE_INDEXES[rule] in line for line in plan), plan
