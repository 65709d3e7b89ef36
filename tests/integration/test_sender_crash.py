"""The sender process SIGKILLed at random moments: every event still reaches every endpoint."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries, events
from depositd.services.observations import record_observations

from . import test_sender
from .helpers import eth_transfer, merchant_with_user
from .test_sender import Receiver, add_endpoint

EVENTS = 5_000
ENDPOINTS = 3

serve = test_sender.serve  # the receivers' fixture


def start_sender(db: Database, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)
        .replace("+aiosqlite", "")
        .replace("+asyncpg", ""),
        # a killed sender's claimed deliveries are free again after the lease
        "DEPOSITD_DELIVERY__LEASE_SECONDS": "5",
        "DEPOSITD_LOG_LEVEL": "warning",
    }
    with (tmp_path / "sender.log").open("ab") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "depositd.cli", "worker", "--only", "sender"],
            env=env,
            stdout=log,
            stderr=log,
        )


async def delivered(db: Database) -> int:
    async with db.reader.connect() as conn:
        query = select(func.count()).where(deliveries.c.status == "delivered")
        return int((await conn.execute(query)).scalar_one())


async def test_every_event_reaches_every_endpoint_through_sigkills(
    db: Database, config: Config, tmp_path: Path, serve: Any
) -> None:
    merchant_id, address = await merchant_with_user(db)
    receivers = [await serve(Receiver()) for _ in range(ENDPOINTS)]
    for receiver in receivers:
        await add_endpoint(db, merchant_id, receiver.url)
    observations = [eth_transfer(address, tx, 12) for tx in range(1, EVENTS + 1)]
    for start in range(0, EVENTS, 1_000):
        await record_observations(db, config.asset_book(), observations[start : start + 1_000])
    async with db.reader.connect() as conn:
        event_ids = set((await conn.execute(select(events.c.id))).scalars())
    assert len(event_ids) == EVENTS

    rng = random.Random(os.environ.get("SEED", "crash"))
    kills = 0
    sender = start_sender(db, tmp_path)
    started = time.monotonic()
    try:
        while (done := await delivered(db)) < EVENTS * ENDPOINTS:
            assert time.monotonic() - started < 240, f"{done:,} delivered within 4 minutes"
            if kills >= 8:
                await asyncio.sleep(0.2)
                continue
            # kill it at a random moment once it is delivering (not while it starts up)
            while await delivered(db) == done and sender.poll() is None:  # noqa: ASYNC110 - the database has no event to wait on
                await asyncio.sleep(0.05)
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            sender.send_signal(signal.SIGKILL)
            sender.wait()
            kills += 1
            sender = start_sender(db, tmp_path)
    finally:
        sender.send_signal(signal.SIGKILL)
        sender.wait()
    took = time.monotonic() - started

    counts = []
    for receiver in receivers:
        ids = Counter(headers["webhook-id"] for headers, _ in receiver.received)
        assert set(ids) == event_ids  # every event, nothing else
        bodies: dict[str, set[bytes]] = {}
        for headers, body in receiver.received:
            bodies.setdefault(headers["webhook-id"], set()).add(body)
        assert all(len(sent) == 1 for sent in bodies.values())  # a duplicate is the same event
        counts.append((len(receiver.received), len(ids), sum(n - 1 for n in ids.values())))
    print(
        f"\ncrash test: {EVENTS:,} events x {ENDPOINTS} endpoints, sender SIGKILLed {kills} times"
        f" in {took:.1f} s; per endpoint (requests, distinct events, duplicates): {counts}"
    )
    assert kills >= 3
