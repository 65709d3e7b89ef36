"""WebSocket /v1/ws: replay then live, exact resumption, isolation, refusals, heartbeats, slow
clients — against a real server, on both engines."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import uvicorn
from sqlalchemy import update

from depositd.app import create_app
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import event_counter, events
from depositd.delivery.hub import EventHub, StreamSettings
from depositd.domain.assets import AssetBook
from depositd.jsontext import dump_json
from depositd.services import merchants, queries
from depositd.services.observations import record_observation, record_observations

from ..conftest import free_port
from .helpers import eth_transfer, merchant_with_user

#: no poll for half a minute: a stream that gets an event in time was woken for it
QUIET = StreamSettings(heartbeat_seconds=30, poll_seconds=30, auth_timeout_seconds=0.5)


@asynccontextmanager
async def serving(db: Database, config: Config, settings: StreamSettings) -> AsyncIterator[str]:
    """The app on a real server (uvicorn, this event loop); yields the stream's URL."""
    app = create_app(config, db)
    app.state.event_hub = EventHub(db, settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    serve = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or serve.done():
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"ws://127.0.0.1:{port}/v1/ws"
    finally:
        server.should_exit = True
        await serve


class Stream:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def message(self) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        found: dict[str, Any] = json.loads(msg.data)
        return found

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` events, passing over heartbeats."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await self.message()
            if message["type"] != "heartbeat":
                found.append(message)
        return found

    async def closed(self) -> tuple[int, str]:
        """The code and reason the server closed with (after any messages before it)."""
        while True:
            msg = await self.ws.receive(timeout=5)
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra
            assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data)


@asynccontextmanager
async def connect(
    url: str,
    key: str | None,
    after: int | str | None = None,
    *,
    in_message: bool = False,
    headers: dict[str, str] | None = None,
    ready: bool = True,
) -> AsyncIterator[Stream]:
    """A stream; the key goes in the header or, ``in_message``, in the first message."""
    sent = dict(headers or {})
    if key is not None and not in_message:
        sent["Authorization"] = f"Bearer {key}"
    params = {} if after is None else {"after": str(after)}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=sent, params=params) as ws,
    ):
        if in_message:
            await ws.send_str(json.dumps({"type": "auth", "api_key": key}))
        stream = Stream(ws)
        if ready:
            assert (await stream.message())["type"] == "ready"
        yield stream


async def pay(db: Database, assets: AssetBook, address: str, tx: int) -> int:
    """Record a first sighting (one ``deposit.pending`` event); its seq."""
    recorded = await record_observation(db, assets, eth_transfer(address, tx, 0))
    assert recorded.seq is not None
    return recorded.seq


async def merchant_and_key(db: Database, user: str = "alice") -> tuple[str, str, str]:
    """(merchant id, API key, deposit address of its user)."""
    merchant_id, address = await merchant_with_user(db, user)
    key = await merchants.create_api_key(db, merchant_id, "ws")
    return merchant_id, key.secret, address


async def envelopes(db: Database, merchant_id: str, after: int = 0) -> list[dict[str, Any]]:
    """The merchant's events as ``GET /v1/events`` lists them, as JSON would carry them."""
    found = await queries.events_after(db, merchant_id, after, 1000)
    return [json.loads(dump_json(event.envelope())) for event in found]


async def test_replays_from_the_cursor_then_streams_events_as_they_commit(
    db: Database, config: Config, assets: AssetBook
) -> None:
    merchant_id, key, address = await merchant_and_key(db)
    first, *rest = [await pay(db, assets, address, tx) for tx in (1, 2, 3)]
    async with serving(db, config, QUIET) as url:
        async with connect(url, key, after=first, ready=False) as stream:
            assert await stream.message() == {"type": "ready", "seq": first}
            replayed = await stream.events(2)
            assert replayed == await envelopes(db, merchant_id, first)
            assert [event["seq"] for event in replayed] == rest
            live = [await pay(db, assets, address, tx) for tx in (4, 5)]
            assert [event["seq"] for event in await stream.events(2)] == live

        async with connect(url, key, after="latest", ready=False) as stream:
            assert await stream.message() == {"type": "ready", "seq": live[-1]}
            newest = await pay(db, assets, address, 6)
            (event,) = await stream.events(1)
            assert (event["seq"], event["type"]) == (newest, "deposit.pending")
            assert event == (await envelopes(db, merchant_id, live[-1]))[0]


async def test_a_client_dropped_at_random_seqs_resumes_with_exactly_the_missing_events(
    db: Database, config: Config, assets: AssetBook
) -> None:
    alice, key, alice_address = await merchant_and_key(db, "alice")
    _, _, bob_address = await merchant_and_key(db, "bob")
    total = 30

    async def deposits(address: str, first_tx: int) -> None:
        for tx in range(first_tx, first_tx + total):
            await pay(db, assets, address, tx)

    # two merchants write concurrently: alice's seqs have gaps that are bob's
    writing = asyncio.gather(deposits(alice_address, 100), deposits(bob_address, 500))
    rng = random.Random(7)
    received: list[int] = []
    async with serving(db, config, QUIET) as url:
        while len(received) < total:
            cursor = received[-1] if received else 0
            async with connect(url, key, after=cursor) as stream:
                for _ in range(rng.randint(1, 6)):
                    (event,) = await stream.events(1)
                    received.append(event["seq"])
                    if len(received) == total:
                        break
        await writing
    assert received == [event["seq"] for event in await envelopes(db, alice)]


async def test_a_merchant_never_sees_another_merchants_events(
    db: Database, config: Config, assets: AssetBook
) -> None:
    alice, alice_key, alice_address = await merchant_and_key(db, "alice")
    bob, bob_key, bob_address = await merchant_and_key(db, "bob")
    await pay(db, assets, alice_address, 1)
    settings = replace(QUIET, heartbeat_seconds=0.3)
    async with (
        serving(db, config, settings) as url,
        connect(url, alice_key) as alice_stream,
        connect(url, bob_key) as bob_stream,
    ):
        for tx in range(2, 6):
            await pay(db, assets, alice_address, tx)
            await pay(db, assets, bob_address, 100 + tx)
        assert await alice_stream.events(5) == await envelopes(db, alice)
        assert await bob_stream.events(4) == await envelopes(db, bob)
        # and nothing more: the next message is a heartbeat at bob's last seq
        last_bob = (await envelopes(db, bob))[-1]["seq"]
        assert await bob_stream.message() == {"type": "heartbeat", "seq": last_bob}


async def test_a_missing_or_wrong_key_is_refused_with_a_reason(
    db: Database, config: Config, assets: AssetBook
) -> None:
    _, key, _ = await merchant_and_key(db)
    async with serving(db, config, QUIET) as url:
        async with connect(url, "dpk_not-a-key", ready=False) as stream:
            assert await stream.closed() == (4401, "the API key is unknown or revoked")
        async with connect(url, None, headers={"Authorization": f"Basic {key}"}, ready=False) as s:
            code, reason = await s.closed()
            assert code == 4401
            assert "Authorization: Bearer" in reason
        async with connect(url, "dpk_nope", in_message=True, ready=False) as stream:
            assert await stream.closed() == (4401, "the API key is unknown or revoked")
        # the key in the URL counts for nothing: no key arrives in time
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url, params={"api_key": key, "after": "0"}) as ws:
                stream = Stream(ws)
                code, reason = await stream.closed()
                assert code == 4401
                assert reason.startswith("no API key within 0.5 s")
            async with session.ws_connect(url) as ws:
                await ws.send_str(json.dumps({"type": "hello", "key": key}))
                code, reason = await Stream(ws).closed()
                assert (code, '"type": "auth"' in reason) == (4401, True)
        async with connect(url, key, after="-1", ready=False) as stream:
            code, reason = await stream.closed()
            assert (code, "after must be" in reason) == (1008, True)
        # the browser way: the key in the first message
        async with connect(url, key, in_message=True, ready=False) as stream:
            assert await stream.message() == {"type": "ready", "seq": 0}


async def test_heartbeats_carry_the_last_seq_sent(
    db: Database, config: Config, assets: AssetBook
) -> None:
    _, key, address = await merchant_and_key(db)
    seq = await pay(db, assets, address, 1)
    async with (
        serving(db, config, replace(QUIET, heartbeat_seconds=0.2)) as url,
        connect(url, key) as stream,
    ):
        assert [event["seq"] for event in await stream.events(1)] == [seq]
        assert await stream.message() == {"type": "heartbeat", "seq": seq}
        assert await stream.message() == {"type": "heartbeat", "seq": seq}


async def test_a_client_that_falls_behind_is_dropped_with_a_reason_and_resumes_without_loss(
    db: Database, config: Config, assets: AssetBook
) -> None:
    merchant_id, key, address = await merchant_and_key(db)
    await pay(db, assets, address, 1)
    async with serving(db, config, replace(QUIET, max_backlog=3)) as url:
        async with connect(url, key, after="latest") as stream:
            # one live event first: the stream has left its replay (where an overflow only
            # means reading on from the log) before the burst comes
            start = await pay(db, assets, address, 2)
            assert [event["seq"] for event in await stream.events(1)] == [start]
            # eight events in one commit: more than the stream may hold back for its client
            await record_observations(
                db, assets, [eth_transfer(address, tx, 0) for tx in range(10, 18)]
            )
            code, reason = await stream.closed()
        assert (code, reason) == (
            1013,
            f"too slow: more than 3 events behind; resume with after={start}",
        )
        # catching up from the log is not bound by the backlog
        async with connect(url, key, after=start) as stream:
            assert await stream.events(8) == await envelopes(db, merchant_id, start)
            newest = await pay(db, assets, address, 30)
            assert [event["seq"] for event in await stream.events(1)] == [newest]


async def test_events_another_process_appends_reach_the_stream(
    db: Database, config: Config, assets: AssetBook
) -> None:
    merchant_id, key, address = await merchant_and_key(db)
    # PostgreSQL: only the NOTIFY from the other pool's commit can wake the hub in time;
    # SQLite has no such channel between processes, so there the hub polls
    settings = replace(QUIET, poll_seconds=30 if not db.is_sqlite else 0.2)
    other = Database(db.url)
    try:
        async with serving(db, config, settings) as url, connect(url, key) as stream:
            seq = await pay(other, assets, address, 1)
            (event,) = await stream.events(1)
            assert event["seq"] == seq
            assert [event] == await envelopes(db, merchant_id)
    finally:
        await other.dispose()


async def test_an_event_committed_after_a_higher_seq_is_never_skipped(
    db: Database, config: Config, assets: AssetBook
) -> None:
    merchant_id, key, address = await merchant_and_key(db)
    before = await pay(db, assets, address, 1)
    settings = replace(QUIET, poll_seconds=0.05, heartbeat_seconds=0.3)

    async def append(seq: int, *, advance_counter: bool) -> None:
        # a writer that took its seq earlier and commits only now, as a concurrent one might
        async with db.writer.begin() as conn:
            await conn.execute(
                events.insert().values(
                    seq=seq,
                    id=f"evt_late{seq}",
                    merchant_id=merchant_id,
                    type="deposit.pending",
                    data={"note": "out of order"},
                    created_at=datetime.now(UTC),
                )
            )
            if advance_counter:
                await conn.execute(update(event_counter).values(last_seq=seq))

    async with serving(db, config, settings) as url, connect(url, key, after=before) as stream:
        await append(before + 2, advance_counter=True)
        # the stream holds at the hole: heartbeats, still at the cursor, and no event
        assert await stream.message() == {"type": "heartbeat", "seq": before}
        assert await stream.message() == {"type": "heartbeat", "seq": before}
        await append(before + 1, advance_counter=False)
        assert [e["seq"] for e in await stream.events(2)] == [before + 1, before + 2]


@pytest.mark.parametrize("after", ["latest", "0", "12"])
async def test_the_ready_message_names_the_cursor(
    db: Database, config: Config, assets: AssetBook, after: str
) -> None:
    _, key, address = await merchant_and_key(db)
    last = await pay(db, assets, address, 1)
    async with serving(db, config, QUIET) as url, connect(url, key, after, ready=False) as stream:
        expected = last if after == "latest" else int(after)
        assert await stream.message() == {"type": "ready", "seq": expected}


async def wait_for_horizon(hub: EventHub, seq: int) -> None:
    for _ in range(500):
        if hub.horizon >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the horizon stayed at {hub.horizon}, below {seq}")


async def test_the_hub_hands_over_from_replay_to_live_without_repeats(
    db: Database, assets: AssetBook
) -> None:
    merchant_id, _, address = await merchant_and_key(db)
    hub = EventHub(db, QUIET)
    try:
        subscription = await hub.subscribe(merchant_id, 0)
        # committed after the subscription took its floor and before its replay ran: the
        # replay reads it, and the hub offers it too
        seq = await pay(db, assets, address, 1)
        await wait_for_horizon(hub, seq)
        assert [event.seq for event in await subscription.next_events(1)] == [seq]
        assert await subscription.next_events(0.1) == []
        later = await pay(db, assets, address, 2)
        assert [event.seq for event in await subscription.next_events(5)] == [later]
    finally:
        await hub.close()


async def test_a_backlog_overflowing_during_replay_only_means_reading_on_from_the_log(
    db: Database, assets: AssetBook
) -> None:
    merchant_id, _, address = await merchant_and_key(db)
    old = [await pay(db, assets, address, tx) for tx in (1, 2, 3)]
    hub = EventHub(db, replace(QUIET, max_backlog=1, replay_page=1))
    try:
        subscription = await hub.subscribe(merchant_id, 0)
        first = await subscription.next_events(1)
        burst = await record_observations(
            db, assets, [eth_transfer(address, tx, 0) for tx in (10, 11, 12)]
        )
        await wait_for_horizon(hub, max(r.seq or 0 for r in burst))
        taken = [event.seq for event in first]
        while batch := await subscription.next_events(0.1):
            taken += [event.seq for event in batch]
        assert taken == [*old, *(r.seq for r in burst)]
    finally:
        await hub.close()
