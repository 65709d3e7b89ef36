"""The webhook sender: posts every outbox row to its endpoint until it is delivered (or dead).

It keeps up to ``concurrency`` requests in flight. It claims due deliveries in batches into
queues of its own, one per endpoint, ahead of need (a lease: ``next_attempt_at`` moves past
the attempt, so a sender that dies leaves them to be claimed again when the lease ends),
posts each one as a slot frees — signed, to the primary URL and then to each fallback URL
until one answers 2xx — and, beside that, writes the outcomes down in batches (every
``_RECORD_BATCH`` answers, or ``_RECORD_WAIT_SECONDS`` after the first unwritten one): the
attempt log, the delivery's next attempt (full-jitter schedule, ``Retry-After`` honoured)
or its end, and the endpoint's health. The database is met once per batch, not once per
request.

An endpoint may hold only a share of the slots (a quarter) until its answers show it fast
(then all but a sixteenth, kept for the others), and its circuit opens after consecutive
failures, so a dead or slow endpoint never holds up the others. A 410 disables the endpoint
and emits ``endpoint.disabled``; so does failing without a single success for too long.

Delivery is at least once: a sender killed between a receiver's 2xx and the write sends
that event again later, with the same ``webhook-id`` for the receiver to drop.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import structlog

from depositd import metrics
from depositd.clock import utcnow, wait_set
from depositd.config import DeliveryConfig
from depositd.db.engine import Database
from depositd.db.outbox import (
    DEAD,
    DELIVERED,
    PENDING,
    AttemptRow,
    Claimed,
    DeliveryUpdate,
    claim_due,
)
from depositd.db.uow import UnitOfWork
from depositd.delivery.poster import Poster
from depositd.delivery.retries import (
    Verdict,
    next_attempt_at,
    parse_retry_after,
    verdict,
)
from depositd.delivery.signing import signature_headers
from depositd.delivery.ssrf import UnsafeDestination
from depositd.domain.events import PendingEvent, endpoint_event
from depositd.ids import new_id
from depositd.jsontext import dump_json
from depositd.services.queries import Event

log = structlog.get_logger("depositd.sender")

#: metric labels of the delivery statuses an attempt leaves (pending: it will be retried)
_OUTCOME_NAMES = {DELIVERED: "delivered", DEAD: "dead"}

#: answers written down together, at most; and how long the first of them may wait
_RECORD_BATCH = 200
_RECORD_WAIT_SECONDS = 0.02
#: an endpoint answering 2xx faster than this on average may hold more than its share
_FAST_SECONDS = 0.25


@dataclass(frozen=True)
class _Job:
    delivery_id: int
    attempt: int
    endpoint_id: str
    merchant_id: str
    urls: tuple[str, ...]
    secrets: tuple[str, ...]
    event_id: str
    body: bytes
    #: when the event was appended (delivery latency counts from here)
    event_created_at: datetime


@dataclass
class _Outcome:
    job: _Job
    verdict: Verdict
    tried: list[AttemptRow] = field(default_factory=list)
    status_code: int | None = None
    error: str | None = None
    retry_after: timedelta | None = None


class Sender:
    def __init__(
        self,
        db: Database,
        config: DeliveryConfig,
        poster: Poster,
        *,
        clock: Callable[[], datetime] = utcnow,
        poll_interval_seconds: float = 0.5,
    ) -> None:
        self._db = db
        self._config = config
        self._poster = poster
        self._clock = clock
        self._poll = poll_interval_seconds
        #: requests in flight per endpoint; an endpoint may hold only a share of the slots
        self._busy: Counter[str] = Counter()
        #: claimed deliveries waiting for a slot, per endpoint in claim order; the endpoints
        #: in turn (one that was served goes to the back)
        self._queues: dict[str, deque[tuple[_Job, datetime]]] = {}
        self._share = max(1, config.concurrency // 4)
        self._fast_share = max(self._share, config.concurrency - max(1, self._share // 4))
        #: per endpoint: the smoothed latency (seconds) of its answers, None after a failure
        self._pace: dict[str, float | None] = {}
        self._request_time = timedelta(seconds=config.total_timeout_seconds)
        self._tasks: set[asyncio.Task[_Outcome]] = set()
        self._done: list[_Outcome] = []
        self._first_done_at: float | None = None
        #: the outcomes being written down, beside the main loop (one write at a time)
        self._recording: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: more may be due than the last claim found (news from a writer, or our own writes
        #: that let the next event of a deposit go); else claims wait for the poll interval
        self._news = True
        self._claimed_at = 0.0
        #: endpoints the last claim stopped at their room: more of theirs may be due
        self._capped: set[str] = set()
        #: a request task that failed unexpectedly (a bug): the main loop raises it
        self._crashed: BaseException | None = None
        self._closing = False

    def wake(self) -> None:
        """New deliveries may be due (a writer committed events)."""
        self._news = True
        self._wake.set()

    async def close(self) -> None:
        self._closing = True
        pending = [*self._tasks, *([self._recording] if self._recording else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._poster.close()

    async def run(self) -> None:
        """Deliver until cancelled."""
        log.info("sender started", concurrency=self._config.concurrency)
        try:
            while True:
                if self._crashed is not None:
                    raise self._crashed
                if self._record_due():
                    if self._db.is_sqlite:
                        # one writer connection: nothing to overlap, and back-to-back claims
                        # would keep taking it from a write waiting beside them
                        await self._finish()
                    else:
                        self._start_recording()
                claimed = await self._claim() if self._wants_more() else 0
                launched = self._launch()
                if not (claimed or launched or self._record_due()):
                    await self._idle()
        finally:
            await self.close()

    async def drain(self) -> int:
        """Deliver what is due now and wait for it (tests, one-shot use); how many."""
        handled = 0
        while True:
            claimed = await self._claim()
            handled += claimed
            while self._queues or self._tasks:
                self._launch()
                if self._tasks:
                    await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                if self._crashed is not None:
                    raise self._crashed
            await self._finish()
            if not claimed:
                return handled

    # -- claiming and posting --------------------------------------------------------------

    def _fast(self, endpoint_id: str) -> bool:
        pace = self._pace.get(endpoint_id)
        return pace is not None and pace < _FAST_SECONDS

    def _allowance(self, endpoint_id: str) -> int:
        """Requests an endpoint may have in flight: its share, more once it is seen fast."""
        return self._fast_share if self._fast(endpoint_id) else self._share

    def _reserve(self, endpoint_id: str) -> int:
        """Deliveries an endpoint may have queued beyond its allowance, to keep its slots busy
        between claims: a batch for a fast one (its queue drains in well under a second),
        else as many as its allowance (a slow one's queue must not outlast the lease)."""
        return self._config.batch_size if self._fast(endpoint_id) else self._allowance(endpoint_id)

    def _room(self, endpoint_id: str) -> int:
        """Deliveries the endpoint may have claimed beyond those it holds (in flight or
        queued)."""
        held = self._busy[endpoint_id] + len(self._queues.get(endpoint_id, ()))
        return self._allowance(endpoint_id) + self._reserve(endpoint_id) - held

    def _wants_more(self) -> bool:
        """Claim when the queue runs short of deliveries that could go (those of endpoints
        at their allowance wait for it: they count for nothing), and there may be some: news,
        the poll interval passed, or an endpoint whose last claim stopped at its room has
        used half of its reserve."""
        ready = sum(len(q) for e, q in self._queues.items() if self._busy[e] < self._allowance(e))
        if ready >= max(1, self._config.batch_size // 2):
            return False
        if self._news or time.monotonic() - self._claimed_at >= self._poll:
            return True
        return any(self._room(e) >= max(1, self._reserve(e) // 2) for e in self._capped)

    async def _claim(self) -> int:
        """Claim a batch of due deliveries into the queue; how many."""
        now = self._clock()
        lease = now + timedelta(seconds=self._config.lease_seconds)
        known = set(self._busy) | set(self._queues) | set(self._pace)
        room = {e: self._room(e) for e in known}
        unknown_room = 2 * self._share
        rows = await claim_due(
            self._db, now, lease, self._config.batch_size, room=room, room_per_endpoint=unknown_room
        )
        self._claimed_at = time.monotonic()
        # a full batch may have left more behind; a short one found all there was, but for
        # the endpoints it stopped at their room
        self._news = len(rows) >= self._config.batch_size
        taken: Counter[str] = Counter()
        for row in rows:
            job = _job(row, now)
            self._queues.setdefault(job.endpoint_id, deque()).append((job, lease))
            taken[job.endpoint_id] += 1
        self._capped = {e for e, n in taken.items() if n >= room.get(e, unknown_room)}
        return len(rows)

    def _launch(self) -> int:
        """Post queued deliveries while slots are free, each endpoint within its allowance
        (one endpoint at its limit does not hold back the others); the work is in the
        endpoints looked at, not in the deliveries queued: this runs once per answer."""
        free = self._config.concurrency - len(self._tasks)
        launched = 0
        for endpoint in list(self._queues):
            if launched >= free:
                break
            room = min(self._allowance(endpoint) - self._busy[endpoint], free - launched)
            if room <= 0:
                continue
            jobs = self._queues.pop(endpoint)
            count = min(room, len(jobs))
            for _ in range(count):
                job, lease = jobs.popleft()
                task = asyncio.create_task(self._deliver(job, lease))
                self._tasks.add(task)
                task.add_done_callback(self._on_done)
            self._busy[endpoint] += count
            launched += count
            if jobs:
                self._queues[endpoint] = jobs  # served: to the back of the line
        return launched

    def _on_done(self, task: asyncio.Task[_Outcome]) -> None:
        """A request ended: note its outcome, and give its slot to the next queued delivery
        at once (the main loop may be busy claiming or writing down)."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            self._crashed = error
            self._wake.set()
            return
        outcome = task.result()
        self._done.append(outcome)
        endpoint = outcome.job.endpoint_id
        self._busy[endpoint] -= 1
        if self._busy[endpoint] <= 0:
            del self._busy[endpoint]
        self._note_pace(outcome)
        if self._first_done_at is None:
            self._first_done_at = time.monotonic()
        if not self._closing:
            self._launch()
        self._wake.set()

    def _note_pace(self, outcome: _Outcome) -> None:
        endpoint = outcome.job.endpoint_id
        if outcome.verdict is not Verdict.DELIVERED or not outcome.tried:
            self._pace[endpoint] = None  # back to its share until it answers well again
            return
        seconds = outcome.tried[-1].latency_ms / 1000
        pace = self._pace.get(endpoint)
        self._pace[endpoint] = seconds if pace is None else 0.8 * pace + 0.2 * seconds

    def _record_due(self) -> bool:
        """Whether the answers in hand should be written down now (one write at a time)."""
        if not self._done or self._recording is not None:
            return False
        if len(self._done) >= _RECORD_BATCH or not self._tasks:
            return True
        assert self._first_done_at is not None
        return time.monotonic() - self._first_done_at >= _RECORD_WAIT_SECONDS

    async def _idle(self) -> None:
        timeout = max(0.0, self._poll - (time.monotonic() - self._claimed_at))
        if self._done and self._recording is None and self._first_done_at is not None:
            # wake in time to write down the answers in hand (a write under way wakes us)
            waited = time.monotonic() - self._first_done_at
            timeout = max(0.0, min(timeout, _RECORD_WAIT_SECONDS - waited))
        await wait_set(self._wake, timeout)
        self._wake.clear()

    async def _deliver(self, job: _Job, lease: datetime) -> _Outcome:
        """One attempt: the primary URL, then each fallback until one answers 2xx or 410."""
        outcome = _Outcome(job, Verdict.FAILED)
        for url in job.urls:
            if outcome.tried and self._clock() >= lease - self._request_time:
                break  # a fallback's request could outlast the lease: another sender's turn
            at = self._clock()
            headers = {
                **signature_headers(job.event_id, job.body.decode(), job.secrets, at),
                "content-type": "application/json",
            }
            started = time.perf_counter()
            status_code: int | None = None
            excerpt = error_class = error = None
            try:
                answer = await self._poster.post(url, job.body, headers)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error_class, error = _error_class(exc), (str(exc) or type(exc).__name__)[:300]
            else:
                status_code, excerpt = answer.status, answer.excerpt
                if 300 <= answer.status < 400:
                    error_class = "redirect"
                    error = f"HTTP {answer.status} (redirects are not followed)"
                elif answer.status >= 400:
                    error_class, error = "http_status", f"HTTP {answer.status}"
                outcome.retry_after = parse_retry_after(answer.headers.get("retry-after"), at)
            latency = round((time.perf_counter() - started) * 1000)
            outcome.tried.append(
                AttemptRow(
                    job.delivery_id,
                    job.attempt,
                    url,
                    status_code,
                    latency,
                    excerpt,
                    error_class,
                    error,
                    at,
                )
            )
            outcome.status_code, outcome.error = status_code, error
            outcome.verdict = verdict(status_code)
            if outcome.verdict is not Verdict.FAILED:
                break
        return outcome

    # -- writing outcomes down -------------------------------------------------------------

    def _start_recording(self) -> None:
        """Write the answers in hand down beside the main loop, which goes on claiming and
        posting meanwhile."""
        done, self._done = self._done, []
        self._first_done_at = None
        self._recording = asyncio.create_task(self._record(done, self._clock()))
        self._recording.add_done_callback(self._on_recorded)

    def _on_recorded(self, task: asyncio.Task[None]) -> None:
        self._recording = None
        if task.cancelled():
            return
        if (error := task.exception()) is not None:
            self._crashed = error
        self._news = True  # a deposit's next event may go now
        self._wake.set()

    async def _finish(self) -> None:
        """Write down every answer in hand, and wait for it."""
        if self._recording is not None:
            await asyncio.wait([self._recording])
        if self._crashed is not None:
            raise self._crashed
        done, self._done = self._done, []
        self._first_done_at = None
        if not done:
            return
        self._news = True  # a deposit's next event may go now
        await self._record(done, self._clock())

    async def _record(self, done: Sequence[_Outcome], now: datetime) -> None:
        updates, tried = [], []
        for outcome in done:
            tried.extend(outcome.tried)
            updates.append(_update(outcome, now))
        async with UnitOfWork(self._db, write=True) as uow:
            await uow.deliveries.record(updates, tried)
            disabled = await self._judge_endpoints(uow, done, now)
            if disabled:
                await uow.events.append(disabled, now)
            await uow.commit()
        for outcome, update in zip(done, updates, strict=True):
            _account(outcome, update, now)
        for event in disabled:
            # the endpoint_disabled alert (services.alerts) follows from the stored state
            log.error("endpoint_disabled", **event.data)

    async def _judge_endpoints(
        self, uow: UnitOfWork, done: Sequence[_Outcome], now: datetime
    ) -> list[PendingEvent]:
        """Update each endpoint's failure streak and circuit; disable the dead ones."""
        by_endpoint: dict[str, list[_Outcome]] = {}
        for outcome in done:
            by_endpoint.setdefault(outcome.job.endpoint_id, []).append(outcome)
        # the common case, every answer a success, in one statement; the others one by one
        delivered = {
            endpoint
            for endpoint, outcomes in by_endpoint.items()
            if all(o.verdict is Verdict.DELIVERED for o in outcomes)
        }
        if delivered:
            await uow.deliveries.clear_health(delivered, now)
        troubled = [endpoint for endpoint in by_endpoint if endpoint not in delivered]
        config = self._config
        events = []
        for row in await uow.deliveries.endpoint_health(troubled) if troubled else ():
            streak, since = row.failure_streak, row.failing_since
            reason = None
            for outcome in by_endpoint[row.id]:
                if outcome.verdict is Verdict.DELIVERED:
                    streak, since = 0, None
                    continue
                streak, since = streak + 1, since or now
                if outcome.verdict is Verdict.GONE:
                    reason = f"the endpoint answered 410 Gone at {outcome.tried[-1].url}"
            patience = timedelta(hours=config.disable_after_hours)
            if reason is None and since is not None and now - since >= patience:
                reason = f"no successful delivery since {since.isoformat()}"
            circuit = None
            if streak >= config.circuit_failures:
                circuit = now + timedelta(seconds=config.circuit_open_seconds)
            if row.disabled_at is not None:
                reason = None  # already disabled: no second notice
            await uow.deliveries.set_health(
                row.id,
                failure_streak=streak,
                failing_since=since,
                circuit_open_until=circuit,
                now=now,
                disabled_reason=reason,
            )
            if reason is not None:
                events.append(
                    endpoint_event(
                        new_id("evt"),
                        "disabled",
                        row.merchant_id,
                        row.id,
                        now,
                        url=row.url,
                        reason=reason,
                        disabled_at=now.isoformat(),
                    )
                )
        return events


def _account(outcome: _Outcome, update: DeliveryUpdate, now: datetime) -> None:
    """Count an attempt's result, and log the ones that did not get through."""
    job = outcome.job
    metrics.DELIVERIES.labels(_OUTCOME_NAMES.get(update.status, "retrying")).inc()
    if update.status == DELIVERED:
        delay = (update.finished_at or now) - job.event_created_at
        metrics.DELIVERY_LATENCY.observe(max(0.0, delay.total_seconds()))
        return
    (log.error if update.status == DEAD else log.warning)(
        "delivery_dead" if update.status == DEAD else "delivery_failed",
        delivery_id=job.delivery_id,
        endpoint_id=job.endpoint_id,
        event_id=job.event_id,
        attempt=job.attempt,
        status_code=outcome.status_code,
        error=outcome.error,
        next_attempt_at=None if update.status == DEAD else update.next_attempt_at.isoformat(),
    )


def _job(row: Claimed, now: datetime) -> _Job:
    secrets = [row.secret]
    if row.previous_secret and row.previous_secret_until and row.previous_secret_until > now:
        secrets.append(row.previous_secret)
    envelope = Event(row.seq, row.event_id, row.type, row.created_at, row.data).envelope()
    return _Job(
        delivery_id=row.delivery_id,
        attempt=row.attempts + 1,
        endpoint_id=row.endpoint_id,
        merchant_id=row.merchant_id,
        urls=(row.url, *(row.fallback_urls or ())),
        secrets=tuple(secrets),
        event_id=row.event_id,
        body=dump_json(envelope).encode(),
        event_created_at=row.created_at,
    )


def _update(outcome: _Outcome, now: datetime) -> DeliveryUpdate:
    job = outcome.job
    status, finished, retry = PENDING, None, now
    if outcome.verdict is Verdict.DELIVERED:
        status, finished = DELIVERED, now
    elif outcome.verdict is Verdict.FAILED or outcome.verdict is Verdict.GONE:
        # after a 410 the endpoint is disabled: the delivery waits, and goes out if the
        # merchant enables the endpoint again
        later = next_attempt_at(job.attempt, now, outcome.retry_after)
        if later is None:
            status, finished = DEAD, now
        else:
            retry = later
    return DeliveryUpdate(
        delivery_id=job.delivery_id,
        status=status,
        attempts=job.attempt,
        next_attempt_at=retry,
        last_attempt_at=outcome.tried[-1].created_at if outcome.tried else now,
        last_status_code=outcome.status_code,
        last_error=outcome.error,
        finished_at=finished,
    )


def _error_class(exc: BaseException) -> str:
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, UnsafeDestination):
        return "ssrf_blocked"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ClientError):
        return "http"
    return type(exc).__name__.lower()[:60]
