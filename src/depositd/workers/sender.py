"""The webhook sender: posts every outbox row to its endpoint until it is delivered (or dead).

It keeps up to ``concurrency`` requests in flight. Whenever there is room it claims due
deliveries (a lease: ``next_attempt_at`` moves past the attempt, so a sender that dies
leaves them to be claimed again when the lease ends), posts each one — signed, to the
primary URL and then to each fallback URL until one answers 2xx — and writes the outcomes
down in batches: the attempt log, the delivery's next attempt (full-jitter schedule,
``Retry-After`` honoured) or its end, and the endpoint's health. An endpoint may hold only
a share of the slots and its circuit opens after consecutive failures, so a dead or slow
endpoint never holds up the others. A 410 disables the endpoint and emits
``endpoint.disabled``; so does failing without a single success for too long.

Delivery is at least once: a sender killed between a receiver's 2xx and the write sends
that event again later, with the same ``webhook-id`` for the receiver to drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from depositd.clock import utcnow
from depositd.config import DeliveryConfig
from depositd.db.engine import Database
from depositd.db.outbox import DEAD, DELIVERED, PENDING, AttemptRow, DeliveryUpdate
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
from depositd.domain.events import PendingEvent
from depositd.ids import new_id
from depositd.jsontext import dump_json
from depositd.services.queries import Event

log = structlog.get_logger("depositd.sender")

#: how long a wake-up waits for more answers before writing them down together
_COALESCE_SECONDS = 0.005


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
        self._per_endpoint = max(1, config.concurrency // 4)
        self._refill_at = max(1, min(config.batch_size, config.concurrency // 4))
        self._request_time = timedelta(seconds=config.total_timeout_seconds)
        self._tasks: set[asyncio.Task[_Outcome]] = set()
        self._done: list[_Outcome] = []
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New deliveries may be due (a writer committed events)."""
        self._wake.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._poster.close()

    async def run(self) -> None:
        """Deliver until cancelled."""
        log.info("sender started", concurrency=self._config.concurrency)
        try:
            while True:
                await self._finish()  # first: it frees the finished requests' endpoint shares
                if not await self._fill():
                    await self._idle()
        finally:
            await self.close()

    async def drain(self) -> int:
        """Deliver what is due now and wait for it (tests, one-shot use); how many."""
        handled = 0
        while True:
            claimed = await self._fill()
            handled += claimed
            if self._tasks:
                await asyncio.wait(self._tasks)
            await self._finish()
            if not claimed:
                return handled

    # -- claiming and posting --------------------------------------------------------------

    async def _fill(self) -> int:
        room = self._config.concurrency - len(self._tasks)
        if room <= 0 or (self._tasks and room < self._refill_at):
            return 0  # claim in batches, not one row per finished request
        now = self._clock()
        full = [endpoint for endpoint, n in self._busy.items() if n >= self._per_endpoint]
        lease = now + timedelta(seconds=self._config.lease_seconds)
        async with UnitOfWork(self._db, write=True) as uow:
            rows = await uow.deliveries.claim(
                now, lease, min(room, self._config.batch_size), skip_endpoints=full
            )
            await uow.commit()
        for row in rows:
            job = _job(row, now)
            self._busy[job.endpoint_id] += 1
            task = asyncio.create_task(self._deliver(job, lease))
            self._tasks.add(task)
            task.add_done_callback(self._on_done)
        return len(rows)

    def _on_done(self, task: asyncio.Task[_Outcome]) -> None:
        self._wake.set()

    def _collect(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            if task.cancelled():
                continue
            outcome = task.result()
            self._done.append(outcome)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self._poll)
        if self._tasks:
            # let the answers arriving together be written together
            await asyncio.sleep(_COALESCE_SECONDS)
        self._wake.clear()
        self._collect()

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

    async def _finish(self) -> None:
        self._collect()
        done, self._done = self._done, []
        if not done:
            return
        now = self._clock()
        try:
            await self._record(done, now)
        finally:
            for outcome in done:
                self._busy[outcome.job.endpoint_id] -= 1
                if self._busy[outcome.job.endpoint_id] <= 0:
                    del self._busy[outcome.job.endpoint_id]

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
        for event in disabled:
            # TODO(issue 6): route through the alert sinks once they exist
            log.error("endpoint_disabled", **event.data)

    async def _judge_endpoints(
        self, uow: UnitOfWork, done: Sequence[_Outcome], now: datetime
    ) -> list[PendingEvent]:
        """Update each endpoint's failure streak and circuit; disable the dead ones."""
        by_endpoint: dict[str, list[_Outcome]] = {}
        for outcome in done:
            by_endpoint.setdefault(outcome.job.endpoint_id, []).append(outcome)
        config = self._config
        events = []
        for row in await uow.deliveries.endpoint_health(by_endpoint):
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
                    PendingEvent(
                        id=new_id("evt"),
                        type="endpoint.disabled",
                        merchant_id=row.merchant_id,
                        deposit_id=None,
                        version=None,
                        data={
                            "endpoint_id": row.id,
                            "url": row.url,
                            "reason": reason,
                            "disabled_at": now.isoformat(),
                        },
                        created_at=now,
                    )
                )
        return events


def _job(row: Any, now: datetime) -> _Job:
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
        last_attempt_at=outcome.tried[-1].at if outcome.tried else now,
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
