"""Webhook deliveries per second against the bare HTTP posts of the same bodies, and latency.

The receiver is a raw asyncio HTTP/1.1 server (uvloop) in a process of its own on 127.0.0.1,
one port, endpoint n at the path /e<n>: it reads each request (request line, headers, a
Content-Length body), answers 200 "ok" on the kept-alive connection, and notes the path, the
``webhook-id`` header and the time the whole request had arrived (``time.time()``). Between
phases the bench fetches and clears those notes (GET /_records). For each endpoint count in
--endpoints, on a fresh database of --engine:

  setup     a merchant, 100 users with a deposit address each, the endpoints (subscribed to
            deposit.credited, made with services.endpoints.create_endpoint), and
            --deliveries / endpoints deposits recorded as the chain watcher records them
            (record_observations, 500 per transaction): each makes one deposit.credited event
            and, through the outbox fan-out, one delivery per endpoint. On PostgreSQL then
            ANALYZE deliveries, as autovacuum would within a minute. Not timed.
  floor     the sender's HTTP client (HttpPoster.for_policy on the same delivery policy,
            through the SSRF guard) posting the same bodies to the same URLs, each signed at
            post time with signature_headers as the sender signs, --concurrency requests in
            flight, no database. Run before and after the sender; the faster is the floor.
  sender    a Sender running (``run()``, as the worker runs it), timed from its start until
            its own writes have committed every delivery as delivered; then checked in the
            database (every delivery delivered, one attempt each) and at the receiver (every
            (endpoint, event) pair arrived; duplicates counted).

Then latency, on a fresh database: the sender running and woken as ``depositd serve`` wakes it
(``on_events_committed``), while --rate deposits per second arrive one by one on a steady
schedule for --seconds, each recorded as the API records a provider callback: its own call to
the app's ``Recorder`` (group commit: alone in its transaction when nothing else is waiting,
sharing one with those that arrived meanwhile otherwise); --one-per-transaction makes each its
own record_observations call instead. --latency-endpoints endpoints get each event. Latency is
the receiver's arrival time minus the event's ``created_at`` (stamped in Python when its
recording transaction starts, so the transaction and its commit are inside), and also minus
the moment the recording call returned (committed) and minus the moment the deposit arrived
(the call began, group-commit queueing included).

The sender's main loop is split into claiming (``_claim``) and waiting for answers (``_idle``),
and its writes of outcomes (``_record``, a task beside the main loop) are timed too, by
wrapping those methods on the instance; --profile adds
cProfile of the event loop over each sender phase. CPU seconds are counted per phase for this
process, the receiver and PostgreSQL (every postgres process on the machine). Ratios compare
figures of the same run only; the machine is shared and noisy.

    .venv/bin/python bench/deliver.py [--engine sqlite|postgresql] [--endpoints 1,10]
        [--deliveries 20000] [--rate 500] [--seconds 20] [--latency-endpoints 1]
        [--one-per-transaction] [--concurrency 64] [--batch-size 200]
        [--loop asyncio|uvloop] [--quick] [--profile]

--deliveries is per endpoint count (10 endpoints: a tenth as many events); 20,000 takes ~7 s
at the 3,000/s target. --concurrency and --batch-size override the delivery policy for both
the sender and the floor. SIGTERM and Ctrl-C stop the receiver and drop the database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from sqlalchemy import func, select

from _common import CpuMeter, free_port, fresh_database, percentile, wait_for_port
from depositd.clock import utcnow
from depositd.config import DeliveryConfig, load_config
from depositd.db import tables
from depositd.db.engine import Database
from depositd.db.outbox import DeliveryRepository
from depositd.delivery.poster import HttpPoster
from depositd.delivery.retries import Verdict
from depositd.delivery.signing import signature_headers
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import ChainRef, Observation, ToAddress
from depositd.jsontext import dump_json
from depositd.logs import configure_logging
from depositd.runtime import freeze_startup_objects
from depositd.services import endpoints, merchants, users
from depositd.services.group_commit import Recorder
from depositd.services.observations import on_events_committed, record_observations
from depositd.services.queries import Event
from depositd.workers import sender as sender_module
from depositd.workers.sender import Sender

CHAIN = "anvil"
#: every bench deposit is credited at first sight: one event of this type each
EVENT_TYPE = "deposit.credited"
USERS = 100
#: deposits per recording transaction in the setup (a block's worth, as the watcher records)
SETUP_BATCH = 500
#: a phase that has not finished by then has failed (plus a second per this many deliveries)
PHASE_SECONDS, PHASE_DELIVERIES_PER_SECOND = 60, 100

QUICK = {"deliveries": 600, "seconds": 2.0}


# -- the receiver (a process of its own) -----------------------------------------------------

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
RECORDS_PATH = b"/_records"


class _Receiving(asyncio.Protocol):
    """One connection: reads requests as they complete, answers each at once."""

    def __init__(self, notes: list[tuple[bytes, bytes, float]]) -> None:
        self._notes = notes
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        now = time.time()
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(buffer[:end])
            lower = head.lower()
            if b"\r\ntransfer-encoding:" in lower:
                self._transport.write(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\n\r\n")
                self._transport.close()
                return
            length = _header(head, lower, b"content-length")
            size = end + 4 + (int(length) if length else 0)
            if len(buffer) < size:
                return  # the body is still on its way
            del buffer[:size]
            path = head.split(b" ", 2)[1]
            if path == RECORDS_PATH:
                self._send_records()
                return
            self._notes.append((path, _header(head, lower, b"webhook-id") or b"-", now))
            self._transport.write(ANSWER)

    def _send_records(self) -> None:
        assert self._transport is not None
        body = b"".join(b"%s %s %r\n" % note for note in self._notes)
        self._notes.clear()
        self._transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        self._transport.close()


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    stop = lower.find(b"\r\n", start)
    return head[start : stop if stop >= 0 else len(head)].strip()


def serve_receiver(port: int) -> None:
    """The receiver's process: serves 127.0.0.1:``port`` until terminated."""
    notes: list[tuple[bytes, bytes, float]] = []

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Receiving(notes), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        run_loop(serve(), "uvloop")


@dataclass(frozen=True)
class Received:
    path: str
    event_id: str
    at: float


@dataclass
class Receiver:
    port: int
    pid: int

    def url(self, endpoint: int) -> str:
        return f"http://127.0.0.1:{self.port}/e{endpoint}"

    async def take(self) -> list[Received]:
        """What arrived since the last call (the receiver forgets it)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}{RECORDS_PATH.decode()}") as answer,
        ):
            text = await answer.text()
        found = []
        for line in text.splitlines():
            path, event_id, at = line.split(" ")
            found.append(Received(path, event_id, float(at)))
        return found


@contextlib.contextmanager
def receiver_process() -> Iterator[Receiver]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-receiver", str(port)]
    with subprocess.Popen(command, stdin=subprocess.DEVNULL) as process:  # noqa: S603 - this file
        try:
            wait_for_port(port, process, "the receiver")
            yield Receiver(port, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass
class Arrivals:
    """What the receiver saw in one phase, against what it should have seen."""

    expected: int
    requests: int
    #: distinct (path, webhook-id) pairs among the expected ones
    distinct: int
    duplicates: int
    unexpected: int
    #: the first arrival of each expected pair
    first: dict[tuple[str, str], float]

    @property
    def complete(self) -> bool:
        return self.distinct == self.expected and self.unexpected == 0

    def summary(self) -> str:
        return (
            f"{self.requests:,} requests, {self.distinct:,} of {self.expected:,}"
            f" (endpoint, event) pairs, {self.duplicates:,} duplicates,"
            f" {self.unexpected:,} unexpected"
        )


def tally(received: list[Received], expected: set[tuple[str, str]]) -> Arrivals:
    first: dict[tuple[str, str], float] = {}
    duplicates = unexpected = 0
    for note in received:
        pair = (note.path, note.event_id)
        if pair not in expected:
            unexpected += 1
        elif pair in first:
            duplicates += 1
        else:
            first[pair] = note.at
    return Arrivals(len(expected), len(received), len(first), duplicates, unexpected, first)


# -- the database ----------------------------------------------------------------------------


@dataclass
class Merchant:
    id: str
    addresses: list[str]
    #: (path at the receiver, URL, secret) of each endpoint
    endpoints: list[tuple[str, str, str]] = field(default_factory=list)


async def add_merchant(
    db: Database, policy: DeliveryConfig, receiver: Receiver, endpoint_count: int
) -> Merchant:
    """A merchant, its users with a deposit address each, and its endpoints."""
    merchant = await merchants.create_merchant(db, "bench")
    made = Merchant(merchant.id, [])
    for n in range(USERS):
        address = f"0x{n + 1:040x}"
        await users.ensure_user(db, merchant.id, f"u{n}")
        await users.add_address(db, merchant.id, f"u{n}", CHAIN, address)
        made.addresses.append(address)
    for n in range(endpoint_count):
        url = receiver.url(n)
        created = await endpoints.create_endpoint(
            db, policy, merchant.id, url, event_types=[EVENT_TYPE], actor="bench"
        )
        made.endpoints.append((f"/e{n}", created.endpoint.url, created.secret))
    return made


def credited_deposit(merchant: Merchant, n: int) -> Observation:
    """The ``n``-th bench deposit: 0.01 ETH and a bit, deep enough to be credited at once."""
    return Observation(
        ref=ChainRef(CHAIN, f"0x{n:064x}", -1),
        owner=ToAddress(CHAIN, merchant.addresses[n % len(merchant.addresses)]),
        asset="ETH",
        amount=10**16 + n,
        confirmations=12,
        block_hash=f"0x{n // SETUP_BATCH:064x}",
        block_number=1_000 + n // SETUP_BATCH,
    )


async def record_deposits(db: Database, assets: AssetBook, merchant: Merchant, count: int) -> None:
    for start in range(0, count, SETUP_BATCH):
        batch = range(start, min(count, start + SETUP_BATCH))
        recorded = await record_observations(
            db, assets, [credited_deposit(merchant, n) for n in batch]
        )
        assert all(r.changed for r in recorded)


@dataclass(frozen=True)
class Post:
    """One (endpoint, event) pair: what the sender will post, for the floor to post too."""

    path: str
    url: str
    secrets: tuple[str, ...]
    event_id: str
    body: bytes


async def posts_of(db: Database, merchant: Merchant) -> list[Post]:
    """Every delivery's body, built as the sender builds it, in the sender's claim order."""
    events = tables.events
    query = (
        select(events.c.seq, events.c.id, events.c.type, events.c.created_at, events.c.data)
        .where(events.c.type == EVENT_TYPE)
        .order_by(events.c.seq)
    )
    async with db.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    posts = []
    for row in rows:
        envelope = Event(row.seq, row.id, row.type, row.created_at, row.data).envelope()
        body = dump_json(envelope).encode()
        for path, url, secret in merchant.endpoints:
            posts.append(Post(path, url, (secret,), row.id, body))
    return posts


async def deliveries_by_status(db: Database) -> dict[str, int]:
    deliveries = tables.deliveries
    query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    async with db.reader.connect() as conn:
        return {row[0]: row[1] for row in await conn.execute(query)}


async def attempts_made(db: Database) -> int:
    query = select(func.count()).select_from(tables.delivery_attempts)
    async with db.reader.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def event_times(db: Database) -> dict[str, tuple[int, float]]:
    """event id -> (seq, created_at as Unix time) of every bench event."""
    events = tables.events
    query = select(events.c.id, events.c.seq, events.c.created_at).where(
        events.c.type == EVENT_TYPE
    )
    async with db.reader.connect() as conn:
        return {row.id: (row.seq, row.created_at.timestamp()) for row in await conn.execute(query)}


# -- the floor -------------------------------------------------------------------------------


async def post_floor(policy: DeliveryConfig, posts: Sequence[Post]) -> float:
    """Seconds for the sender's HTTP client to post every body, signed, no database."""
    poster = HttpPoster.for_policy(policy)
    pending = iter(posts)
    refused: Counter[int] = Counter()

    async def post_in_turn() -> None:
        for post in pending:
            headers = {
                **signature_headers(post.event_id, post.body.decode(), post.secrets, utcnow()),
                "content-type": "application/json",
            }
            answer = await poster.post(post.url, post.body, headers)
            if answer.status != 200:
                refused[answer.status] += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(post_in_turn() for _ in range(policy.concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await poster.close()
    assert not refused, f"the receiver refused floor posts: {dict(refused)}"
    return seconds


# -- the sender ------------------------------------------------------------------------------


#: the sender writes outcomes down beside its main loop: this stage overlaps the others
WRITING = "writing outcomes (_record, beside)"


@dataclass
class SenderLoop:
    """What a sender's main loop did; its methods timed by wrapping them on the instance."""

    expected: int
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    not_delivered: int = 0
    writes: int = 0
    claims: int = 0
    #: claims that found nothing to claim (a write transaction all the same)
    empty_claims: int = 0
    claimed: int = 0
    #: wall seconds of the main loop's steps, and of the statements within them
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def watch(self, sender: Sender) -> None:
        """Time and count what ``sender`` does (reaches into its privates)."""
        for name, stage in (
            ("_claim", "claiming (_claim)"),
            ("_idle", "waiting for answers (_idle)"),
        ):
            setattr(sender, name, self._timed(stage, getattr(sender, name)))
        record = self._timed(WRITING, sender._record)

        async def counted_record(done: Sequence[Any], now: Any) -> None:
            await record(done, now)
            self.writes += 1
            for outcome in done:
                if outcome.verdict is Verdict.DELIVERED:
                    self.delivered += 1
                else:
                    self.not_delivered += 1
            if self.delivered >= self.expected:
                self.finished.set()

        sender._record = counted_record  # type: ignore[method-assign]

    def _timed(self, stage: str, step: Callable[..., Any]) -> Callable[..., Any]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await step(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - started

        return timed

    @contextlib.contextmanager
    def clock_statements(self) -> Iterator[None]:
        """Time the claim and record statements (the sender's claim_due and
        DeliveryRepository.record, for every sender)."""
        claim, record = sender_module.claim_due, DeliveryRepository.record

        async def timed_claim(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            rows = await claim(*args, **kwargs)
            self.seconds["  of which the claim statements"] += time.perf_counter() - started
            self.claims += 1
            self.empty_claims += not rows
            self.claimed += len(rows)
            return rows

        async def timed_record(repo: DeliveryRepository, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            await record(repo, *args, **kwargs)
            self.seconds["  of which the record statements"] += time.perf_counter() - started

        sender_module.claim_due = timed_claim
        DeliveryRepository.record = timed_record  # type: ignore[method-assign]
        try:
            yield
        finally:
            sender_module.claim_due = claim
            DeliveryRepository.record = record  # type: ignore[method-assign]

    def split(self, total: float) -> list[str]:
        lines = []
        for stage in (
            "claiming (_claim)",
            "  of which the claim statements",
            "waiting for answers (_idle)",
            WRITING,
            "  of which the record statements",
        ):
            seconds = self.seconds.get(stage, 0.0)
            lines.append(f"{stage:<34} {seconds:>7.2f} s {seconds / total:>5.0%}")
        found = self.claims - self.empty_claims
        mean_claim = self.claimed / found if found else 0
        mean_write = (self.delivered + self.not_delivered) / self.writes if self.writes else 0
        lines.append(
            f"{self.claims:,} claims ({self.empty_claims:,} of them empty; the others"
            f" {mean_claim:.1f} deliveries each), {self.writes:,} writes of outcomes"
            f" ({mean_write:.1f} each)"
        )
        return lines


@contextlib.asynccontextmanager
async def running_sender(
    db: Database, policy: DeliveryConfig, loop: SenderLoop, *, wake_on_commit: bool = False
) -> AsyncIterator[Sender]:
    """A sender running as the worker runs it, its main loop watched by ``loop``."""
    sender = Sender(db, policy, HttpPoster.for_policy(policy))
    loop.watch(sender)
    stop_waking = on_events_committed(db, sender.wake) if wake_on_commit else None
    with loop.clock_statements():
        running = asyncio.create_task(sender.run())
        try:
            yield sender
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            if stop_waking is not None:
                stop_waking()


def phase_timeout(deliveries: int) -> float:
    return PHASE_SECONDS + deliveries / PHASE_DELIVERIES_PER_SECOND


async def wait_delivered(db: Database, loop: SenderLoop, what: str) -> None:
    try:
        await asyncio.wait_for(loop.finished.wait(), phase_timeout(loop.expected))
    except TimeoutError:
        statuses = await deliveries_by_status(db)
        raise RuntimeError(
            f"{what}: the sender delivered {loop.delivered:,} of {loop.expected:,} in time"
            f" ({loop.not_delivered:,} attempts failed; deliveries: {statuses})"
        ) from None


# -- the phases ------------------------------------------------------------------------------


@dataclass
class Throughput:
    endpoints: int
    events: int
    deliveries: int
    body_bytes: float
    floors: tuple[float, float]
    seconds: float
    loop: SenderLoop
    arrivals: Arrivals
    statuses: dict[str, int]
    attempts: int
    profile: str | None

    @property
    def floor(self) -> float:
        return min(self.floors)

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    @property
    def floor_rate(self) -> float:
        return self.deliveries / self.floor


async def analyze(db: Database) -> None:
    """Statistics for the planner, as autovacuum keeps them in a running service (it would
    analyze a table grown this much within its first naptime, a minute): without them the
    claim's plan sorts every due delivery (db.outbox)."""
    if not db.is_sqlite:
        async with db.writer.begin() as conn:
            await conn.exec_driver_sql("ANALYZE deliveries")


async def throughput(
    args: argparse.Namespace,
    policy: DeliveryConfig,
    assets: AssetBook,
    receiver: Receiver,
    endpoint_count: int,
    cpu: CpuMeter,
) -> Throughput:
    events = max(1, args.deliveries // endpoint_count)
    name = f"{endpoint_count} endpoint{'s' if endpoint_count > 1 else ''}"
    async with fresh_database(args.engine) as db:
        started = time.perf_counter()
        merchant = await add_merchant(db, policy, receiver, endpoint_count)
        await record_deposits(db, assets, merchant, events)
        posts = await posts_of(db, merchant)
        expected = {(post.path, post.event_id) for post in posts}
        assert len(expected) == len(posts) == events * endpoint_count
        assert await deliveries_by_status(db) == {"pending": len(posts)}
        await analyze(db)
        print(
            f"  {name}: {events:,} events, {len(posts):,} deliveries queued"
            f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        await receiver.take()

        async def floor(when: str) -> float:
            cpu.lap(None)
            seconds = await post_floor(policy, posts)
            cpu.lap(f"{name}: floor ({when})")
            arrivals = tally(await receiver.take(), expected)
            assert arrivals.complete, f"floor ({when}): {arrivals.summary()}"
            print(f"  {name}: floor ({when}) {seconds:.2f} s", flush=True)
            return seconds

        floor_before = await floor("before")
        loop = SenderLoop(expected=len(posts))
        profile = cProfile.Profile() if args.profile else None
        async with running_sender(db, policy, loop):
            cpu.lap(None)
            started = time.perf_counter()
            if profile:
                profile.enable()
            await wait_delivered(db, loop, name)
            if profile:
                profile.disable()
            seconds = time.perf_counter() - started
            cpu.lap(f"{name}: sender")
        print(f"  {name}: sender {seconds:.2f} s", flush=True)
        arrivals = tally(await receiver.take(), expected)
        statuses = await deliveries_by_status(db)
        attempts = await attempts_made(db)
        floor_after = await floor("after")
    return Throughput(
        endpoints=endpoint_count,
        events=events,
        deliveries=len(posts),
        body_bytes=sum(len(post.body) for post in posts) / len(posts),
        floors=(floor_before, floor_after),
        seconds=seconds,
        loop=loop,
        arrivals=arrivals,
        statuses=statuses,
        attempts=attempts,
        profile=profile_report(profile) if profile else None,
    )


def profile_report(profile: cProfile.Profile) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)
    return out.getvalue()


@dataclass
class Latency:
    endpoints: int
    events: int
    transactions: int
    append_seconds: float
    #: the latest a deposit arrived against its schedule (this process too busy to keep it)
    start_lag_ms: float
    from_arrival_ms: list[float]
    from_created_ms: list[float]
    from_commit_ms: list[float]
    arrivals: Arrivals
    statuses: dict[str, int]
    loop: SenderLoop
    seconds: float


async def latency(
    args: argparse.Namespace,
    policy: DeliveryConfig,
    assets: AssetBook,
    receiver: Receiver,
    cpu: CpuMeter,
) -> Latency:
    count = round(args.rate * args.seconds)
    async with fresh_database(args.engine) as db:
        merchant = await add_merchant(db, policy, receiver, args.latency_endpoints)
        loop = SenderLoop(expected=count * args.latency_endpoints)
        recorder = Recorder(db, assets)
        arrived: dict[int, float] = {}
        committed: dict[int, float] = {}

        async def deposit_arrives(n: int) -> None:
            at = time.time()
            observation = credited_deposit(merchant, n)
            if args.one_per_transaction:
                (recorded,) = await record_observations(db, assets, [observation])
            else:
                recorded = await recorder.record(observation)
            assert recorded.seq is not None
            arrived[recorded.seq], committed[recorded.seq] = at, time.time()

        await receiver.take()
        async with running_sender(db, policy, loop, wake_on_commit=True):
            await asyncio.sleep(0.2)  # the sender is idle, waiting to be woken
            cpu.lap(None)
            arrivals = []
            began = time.perf_counter()
            worst_lag = 0.0
            for n in range(count):
                lag = time.perf_counter() - (began + n / args.rate)
                if lag < 0:
                    await asyncio.sleep(-lag)
                worst_lag = max(worst_lag, lag)
                arrivals.append(asyncio.create_task(deposit_arrives(n)))
            await asyncio.gather(*arrivals)
            append_seconds = time.perf_counter() - began
            await wait_delivered(db, loop, "latency")
            seconds = time.perf_counter() - began
            cpu.lap("latency")
        times = await event_times(db)
        expected = {(path, event_id) for event_id in times for path, _, _ in merchant.endpoints}
        received = tally(await receiver.take(), expected)
        statuses = await deliveries_by_status(db)
    from_arrival, from_created, from_commit = [], [], []
    for (_, event_id), at in received.first.items():
        seq, created = times[event_id]
        from_arrival.append((at - arrived[seq]) * 1000)
        from_created.append((at - created) * 1000)
        from_commit.append((at - committed[seq]) * 1000)
    print(f"  latency: {count:,} deposits recorded in {append_seconds:.2f} s", flush=True)
    return Latency(
        endpoints=args.latency_endpoints,
        events=count,
        # one recording transaction stamps its events with one created_at
        transactions=len({created for _, created in times.values()}),
        append_seconds=append_seconds,
        start_lag_ms=worst_lag * 1000,
        from_arrival_ms=from_arrival,
        from_created_ms=from_created,
        from_commit_ms=from_commit,
        arrivals=received,
        statuses=statuses,
        loop=loop,
        seconds=seconds,
    )


# -- the run ---------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    # SIGTERM cancels the run as Ctrl-C does: the receiver stops and the database is dropped
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    config = load_config(environ={})  # the embedded defaults: http to 127.0.0.1 allowed
    changes = {"concurrency": args.concurrency, "batch_size": args.batch_size}
    policy = config.delivery.model_copy(update={k: v for k, v in changes.items() if v})
    assets = config.asset_book()
    freeze_startup_objects()  # as ``depositd worker`` and ``serve`` do once started
    cases = []
    load_before = os.getloadavg()
    with receiver_process() as receiver:
        print(f"receiver on port {receiver.port} (pid {receiver.pid})", flush=True)
        cpu = CpuMeter({"receiver": receiver.pid})
        for endpoint_count in args.endpoints:
            cases.append(await throughput(args, policy, assets, receiver, endpoint_count, cpu))
        live: Latency | str | None = None
        if args.seconds > 0:
            try:
                live = await latency(args, policy, assets, receiver, cpu)
            except RuntimeError as exc:  # the sender fell behind the rate: say so, report the rest
                live = str(exc)
    report(args, policy, cases, live, cpu, (load_before, os.getloadavg()))


def report(
    args: argparse.Namespace,
    policy: DeliveryConfig,
    cases: list[Throughput],
    live: Latency | str | None,
    cpu: CpuMeter,
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    print()
    for case in cases:
        if case.profile:
            print(f"== profile of the sender, {case.endpoints} endpoint(s)")
            print(case.profile)
    if any(case.profile for case in cases):
        print("(profiled: the sender's figures below include cProfile's overhead)")
    print(f"$ {shlex.join(['.venv/bin/python', 'bench/deliver.py', *sys.argv[1:]])}")
    share = max(1, policy.concurrency // 4)
    print(
        f"deliver.py {args.engine}: delivery policy concurrency {policy.concurrency}"
        f" (an endpoint may hold {share}), batch_size {policy.batch_size}; event loop"
        f" {args.loop}; receiver: one raw asyncio HTTP/1.1 process (uvloop) on 127.0.0.1,"
        " one port, endpoint n at /e<n>"
    )
    print(
        f"load average (1, 5, 15 min) at the start {', '.join(f'{n:.2f}' for n in loads[0])},"
        f" at the end {', '.join(f'{n:.2f}' for n in loads[1])} ({os.cpu_count()} cores)"
    )
    all_ok = True
    for case in cases:
        ok = (
            case.statuses == {"delivered": case.deliveries}
            and case.attempts == case.deliveries
            and case.arrivals.complete
        )
        all_ok &= ok
        print(
            f"{case.endpoints} endpoint(s): {case.events:,} deposit.credited events,"
            f" {case.deliveries:,} deliveries, bodies {case.body_bytes:,.0f} bytes;"
            f" deliveries {case.statuses}, {case.attempts:,} attempts; receiver:"
            f" {case.arrivals.summary()} — {'ok' if ok else 'NOT OK'}"
        )
    header = f"{'':<14} {'deliveries':>10} {'floor s':>16} {'floor/s':>8}"
    print(f"{header} {'sender s':>8} {'sender/s':>8} {'sender/floor':>12}")
    for case in cases:
        floors = f"{case.floors[0]:.2f} / {case.floors[1]:.2f}"
        print(
            f"{case.endpoints:>2} endpoint(s)  {case.deliveries:>10,} {floors:>16}"
            f" {case.floor_rate:>8,.0f} {case.seconds:>8.2f} {case.rate:>8,.0f}"
            f" {case.rate / case.floor_rate:>12.0%}"
        )
    print("(floor: before / after the sender, the faster one counts)")
    for case in cases:
        print(f"sender's main loop, {case.endpoints} endpoint(s), {case.seconds:.2f} s:")
        for line in case.loop.split(case.seconds):
            print(f"  {line}")
    print(
        f"CPU seconds ({os.cpu_count()} cores; postgres: every postgres process on the machine,"
        " others' included; a backend that exits takes its seconds with it):"
    )
    for phase, used in cpu.laps.items():
        per = ""
        for case in cases:
            if phase.startswith(f"{case.endpoints} endpoint"):
                per = f"  ({used['ours'] / case.deliveries * 1e6:,.0f} µs ours per delivery)"
        print(
            f"  {phase:<28} wall {used['wall']:>6.2f}  this process {used['ours']:>6.2f}"
            f"  receiver {used['receiver']:>6.2f}  postgres {used['postgres']:>6.2f}{per}"
        )
    if isinstance(live, str):
        all_ok = False
        print(f"latency: {args.rate:g} deposits/s for {args.seconds:g} s NOT MEASURED: {live}")
    elif live is not None:
        ok = live.statuses == {"delivered": live.arrivals.expected} and live.arrivals.complete
        all_ok &= ok
        how = "record_observations" if args.one_per_transaction else "the API's Recorder"
        print(
            f"latency: {live.events:,} deposits arriving one by one at {args.rate:g}/s for"
            f" {args.seconds:g} s, recorded through {how} in {live.transactions:,} transactions"
            f" ({live.events / live.transactions:.1f} each), in {live.append_seconds:.2f} s"
            f" (arrivals at worst {live.start_lag_ms:.0f} ms behind schedule);"
            f" {live.endpoints} endpoint(s); deliveries {live.statuses};"
            f" receiver: {live.arrivals.summary()} — {'ok' if ok else 'NOT OK'}"
        )
        for name, values in (
            ("event created_at -> received", live.from_created_ms),
            ("committed -> received", live.from_commit_ms),
            ("deposit arrived -> received", live.from_arrival_ms),
        ):
            print(
                f"  {name:<29} p50 {percentile(values, 50):>7,.1f} ms,"
                f" p99 {percentile(values, 99):>7,.1f} ms, max {max(values):>7,.1f} ms"
            )
        behind = live.seconds - live.append_seconds
        delivered = live.arrivals.expected
        print(
            f"  the last delivery was written {behind:.2f} s after the last deposit was recorded"
            f" ({delivered / live.seconds:,.0f} deliveries/s over the phase, against"
            f" {args.rate * live.endpoints:,.0f}/s arriving)"
            + (
                ": the sender fell behind, so these latencies are mostly its backlog"
                if behind > 1
                else ""
            )
        )
        print(f"  sender's main loop over {live.seconds:.2f} s:")
        for line in live.loop.split(live.seconds):
            print(f"    {line}")
    print(
        "targets:" + (" (a --quick run is a smoke test: these say nothing)" if args.quick else "")
    )
    by_count = {case.endpoints: case for case in cases}
    targets = []
    for count, case in sorted(by_count.items()):
        ratio = case.rate / case.floor_rate
        targets += [
            (
                f">= 3,000 deliveries/s, {count} endpoint(s)",
                f"{case.rate:,.0f}/s",
                case.rate >= 3000,
            ),
            (f">= 50% of the floor, {count} endpoint(s)", f"{ratio:.0%}", ratio >= 0.5),
        ]
    if isinstance(live, str):
        targets.append(("p99 created -> received < 100 ms", "fell behind", False))
    elif live is not None:
        p99 = percentile(live.from_created_ms, 99)
        targets.append(("p99 created -> received < 100 ms", f"{p99:,.1f} ms", p99 < 100))
    for name, value, met in targets:
        print(f"  {name:<40} {value:>10}  {'met' if met else 'MISSED'}")
    if args.engine != "postgresql":
        print("  (the targets are set for PostgreSQL)")
    if not all_ok:
        raise SystemExit("some deliveries were missing, duplicated or not delivered: see above")


def run_loop(main: Any, loop: str) -> None:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)
            return
        uvloop.run(main)
        return
    asyncio.run(main)


def endpoint_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(n < 1 or n > 100 for n in counts):
        raise argparse.ArgumentTypeError("endpoint counts between 1 and 100, comma-separated")
    return counts


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-receiver":
        serve_receiver(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--endpoints", type=endpoint_counts, default=[1, 10])
    parser.add_argument(
        "--deliveries", type=int, default=20_000, help="deliveries per endpoint count"
    )
    parser.add_argument("--rate", type=float, default=500, help="deposits/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=20, help="latency phase (0: skip it)")
    parser.add_argument("--latency-endpoints", type=int, default=1)
    parser.add_argument(
        "--one-per-transaction",
        action="store_true",
        help="latency phase: each deposit its own record_observations call (no group commit)",
    )
    parser.add_argument("--concurrency", type=int, help="delivery.concurrency (default: config)")
    parser.add_argument("--batch-size", type=int, help="delivery.batch_size (default: config)")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="this process's event loop (depositd serve and worker run on asyncio's)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the sender phases")
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    configure_logging("warning")
    try:
        run_loop(bench(args), args.loop)
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(
            "deliver.py: interrupted (the receiver stopped, the database dropped)"
        ) from None


if __name__ == "__main__":
    main()
