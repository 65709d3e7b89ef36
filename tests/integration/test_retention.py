"""Retention: exactly what the policy says expires goes; the ledger, deposits and the audit log
stay; a dry run removes nothing and counts the same."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from depositd.clock import utcnow
from depositd.config import Config, RetentionConfig
from depositd.db.engine import Database
from depositd.db.tables import (
    accounts,
    audit_log,
    deliveries,
    delivery_attempts,
    deposits,
    events,
    inbound_callbacks,
    ledger_entries,
)
from depositd.domain.deposits import Observation, ProviderRef, ProviderStatus, ToUser
from depositd.services import endpoints, merchants, queries, users
from depositd.services.observations import record_observation
from depositd.services.retention import TABLES, purge
from depositd.workers.supervisor import Workers

from .test_cli import depositd
from .test_deliveries_api import emit, outbox, set_delivery
from .test_endpoints_api import HOOK

DAY = timedelta(days=1)
POLICY = RetentionConfig(
    inbound_callbacks_days=90, delivery_attempts_days=30, events_days=365, batch_size=2
)


async def add_callback(db: Database, name: str, received_at: datetime, outcome: str,
                       *, processed: bool = False) -> None:  # fmt: skip
    async with db.writer.begin() as conn:
        await conn.execute(
            insert(inbound_callbacks).values(
                id=name, provider="psp", merchant_id=None, received_at=received_at,
                source_ip="203.0.113.5", headers={}, body=b"{}", body_bytes=2, outcome=outcome,
                event_id=name if outcome != "rejected" else None,
                processed_at=received_at if processed else None,
            )
        )  # fmt: skip


async def add_attempt(db: Database, delivery_id: int, at: datetime) -> None:
    async with db.writer.begin() as conn:
        await conn.execute(
            insert(delivery_attempts).values(
                delivery_id=delivery_id, attempt=1, url=HOOK, status_code=500, latency_ms=3,
                created_at=at,
            )
        )  # fmt: skip


async def ids(db: Database, column: Any) -> list[Any]:
    async with db.reader.connect() as conn:
        return list((await conn.execute(select(column).order_by(column))).scalars())


async def counts(db: Database, *tables: Any) -> dict[str, int]:
    found = {}
    async with db.reader.connect() as conn:
        for table in tables:
            stmt = select(func.count()).select_from(table)
            found[table.name] = (await conn.execute(stmt)).scalar_one()
    return found


KEPT_FOREVER = (ledger_entries, accounts, deposits)
PURGED = (inbound_callbacks, delivery_attempts, deliveries, events)


async def history(
    db: Database, config: Config, now: datetime, second: timedelta = timedelta(seconds=1)
) -> dict[str, Any]:
    """Rows ``second`` either side of each cutoff, and a credited deposit."""
    cut = {
        "callbacks": now - 90 * DAY,
        "attempts": now - 30 * DAY,
        "events": now - 365 * DAY,
    }
    await add_callback(db, "cb_rejected", cut["callbacks"] - second, "rejected")
    await add_callback(db, "cb_processed", cut["callbacks"] - second, "accepted", processed=True)
    await add_callback(db, "cb_replayed", cut["callbacks"] - second, "replayed")
    await add_callback(db, "cb_waiting", cut["callbacks"] - 10 * DAY, "accepted")
    await add_callback(db, "cb_recent", cut["callbacks"] + second, "rejected")

    merchant = await merchants.create_merchant(db, "acme")
    hook = await endpoints.create_endpoint(db, config.delivery, merchant.id, HOOK, actor="tests")
    old = cut["events"] - second
    seqs = [
        *await emit(db, merchant.id, "deposit.credited", when=old - second),
        *await emit(
            db, merchant.id, "deposit.credited", "deposit.held", "deposit.failed", when=old
        ),
        *await emit(db, merchant.id, "deposit.credited", when=cut["events"] + second),
    ]
    rows = await outbox(db, hook.endpoint.id)
    for row in rows:
        if row.event_seq != seqs[2]:  # the third event is still being delivered
            await set_delivery(db, row.id, status="delivered", finished_at=now)
    first, _, pending, _, recent = rows
    await add_attempt(db, first.id, cut["attempts"] - second)  # goes by its age
    await add_attempt(db, first.id, cut["attempts"] + second)  # goes with its event
    await add_attempt(db, pending.id, cut["attempts"] - second)  # goes by its age
    await add_attempt(db, recent.id, cut["attempts"] - second)  # goes by its age
    await add_attempt(db, recent.id, cut["attempts"] + second)  # stays

    await users.ensure_user(db, merchant.id, "alice")
    credited = await record_observation(
        db,
        config.asset_book(),
        Observation(
            ref=ProviderRef(merchant.id, "custody", "d1"),
            owner=ToUser(merchant.id, "alice"),
            asset="USDT",
            amount=5 * 10**6,
            provider_status=ProviderStatus.SUCCEEDED,
        ),
    )
    assert credited.deposit is not None
    return {"seqs": seqs, "recent_attempt": recent.id, "merchant": merchant.id}


async def test_purge_removes_exactly_what_expired(db: Database, config: Config) -> None:
    now = utcnow()
    made = await history(db, config, now)
    seqs = made["seqs"]
    kept = await counts(db, *KEPT_FOREVER)
    before = await counts(db, *PURGED, audit_log)
    expected = {"inbound_callbacks": 3, "delivery_attempts": 4, "deliveries": 2, "events": 2}

    dry = await purge(db, POLICY, actor="tests", dry_run=True, clock=lambda: now)
    assert dry.removed == expected
    assert dry.events_purged_through == seqs[1]
    assert await counts(db, *PURGED, audit_log) == before

    done = await purge(db, POLICY, actor="tests", clock=lambda: now)
    assert (done.removed, done.events_purged_through) == (expected, seqs[1])
    assert done.cutoffs == dry.cutoffs
    assert done.cutoffs.events == now - 365 * DAY

    assert await ids(db, inbound_callbacks.c.id) == ["cb_recent", "cb_waiting"]
    # the oldest two events go; the third is still being delivered, so it and every later
    # event stay (the event log is cut only at its start)
    assert await ids(db, events.c.seq) == [*seqs[2:], seqs[-1] + 1]
    assert await ids(db, deliveries.c.event_seq) == [*seqs[2:], seqs[-1] + 1]
    attempts = await ids(db, delivery_attempts.c.delivery_id)
    assert attempts == [made["recent_attempt"]]
    assert await counts(db, *KEPT_FOREVER) == kept

    async with db.reader.connect() as conn:
        records = (
            await conn.execute(select(audit_log).where(audit_log.c.action == "retention.purged"))
        ).all()
    # batches of two: one record per batch, together what was removed
    assert len(records) > 1
    assert {r.actor for r in records} == {"tests"}
    summed = dict.fromkeys(TABLES, 0)
    for record in records:
        for table, count in record.details["removed"].items():
            summed[table] += count
    assert summed == expected

    # the purged seqs are not gaps: the event hub's horizon and the ledger audit see none
    assert await queries.committed_through(db, 0, None) == (seqs[-1] + 1, True)
    assert (await queries.audit_ledger(db)).ok
    again = await purge(db, POLICY, actor="tests", clock=lambda: now)
    assert again.total == 0


@pytest.mark.parametrize("dry_run", [True, False])
async def test_the_purge_command_prints_what_it_removes(
    db: Database, config: Config, tmp_path: Path, dry_run: bool
) -> None:
    # the command reads the clock itself: the rows are an hour either side of the cutoffs
    await history(db, config, utcnow(), timedelta(hours=1))
    env = {"DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)}
    ran = depositd("purge", *(["--dry-run"] if dry_run else []), cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    verb = "would remove" if dry_run else "removed"
    assert [line.split(" (older than ")[0] for line in lines[:4]] == [
        f"inbound_callbacks: {verb} 3",
        f"delivery_attempts: {verb} 4",
        f"deliveries: {verb} 2",
        f"events: {verb} 2",
    ]
    assert lines[4].startswith("the event log starts after seq ")
    left = await counts(db, inbound_callbacks)
    assert left["inbound_callbacks"] == (5 if dry_run else 2)


async def test_the_retention_worker_purges_on_its_schedule(db: Database, config: Config) -> None:
    await history(db, config, utcnow(), timedelta(hours=1))
    workers = Workers(config, db, config.asset_book(), roles=["retention"])
    workers.start()
    try:
        for _ in range(200):
            if (await counts(db, inbound_callbacks))["inbound_callbacks"] == 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await workers.stop()
    assert await ids(db, inbound_callbacks.c.id) == ["cb_recent", "cb_waiting"]
    async with db.reader.connect() as conn:
        actors = (await conn.execute(select(audit_log.c.actor, audit_log.c.action))).all()
    assert ("worker", "retention.purged") in actors

    disabled = config.model_copy(
        update={"retention": config.retention.model_copy(update={"enabled": False})}
    )
    idle = Workers(disabled, db, config.asset_book(), roles=["retention"])
    idle.start()
    assert not idle._supervisor._tasks  # retention.enabled = false: no job
    await idle.stop()
