"""Group commit: concurrent callers share one transaction.

Every recorded observation costs a transaction, and on PostgreSQL the event cursor's row lock
is held from the event append to the end of the commit, so one-per-transaction writers queue
behind each other's commits. A ``GroupCommit`` lets concurrent callers (provider callbacks, API
requests) hand their item to one flusher that writes whatever has queued up as a batch, in
order of arrival, and answers each caller once the batch is durable. At low load a batch is
one item and nothing waits; under load, batches grow by themselves. Once a backlog builds up
behind a batch in flight, a second flusher writes the next batch meanwhile: the database
works on one while this process prepares the other (a transaction's statements wait on each
other, and on this process's event loop, so one batch at a time left both idle part of the
time). Batches of concurrent flushers may commit in either order; every caller still learns
its own item's result.

A batch that fails because of one caller's input (a ``DepositdError``, say a conflicting
amount) is retried one item per transaction, so that caller alone gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import Observation
from depositd.errors import DepositdError
from depositd.services.observations import Recorded, record_observations

Item = TypeVar("Item")
Result = TypeVar("Result")


class RecorderStopped(Exception):
    """The group commit stopped (shutdown) before it could confirm this item.

    It may or may not be committed; writing it again is safe, every batch writer here is
    idempotent.
    """


class GroupCommit(Generic[Item, Result]):
    """Writes items in batches with ``write_batch`` (one transaction: all or nothing)."""

    def __init__(
        self,
        write_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        #: queued items that start another flusher while one is writing
        self._backlog = max(1, max_batch // 8)
        self._queue: deque[tuple[Item, asyncio.Future[Result]]] = deque()
        self._flushers: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        """Write ``item``; returns its result once it is committed (with others, maybe)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        running = len(self._flushers)
        if not running or (running < self._max_in_flight and len(self._queue) >= self._backlog):
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        # the flusher finishes the batch even if this caller goes away
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queue:
            size = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            try:
                results = await self._write_batch([item for item, _ in batch])
            except DepositdError:
                await self._one_by_one(batch)
            except BaseException as exc:  # database down, or we are being cancelled
                for _, future in batch:
                    _settle(future, exc if isinstance(exc, Exception) else RecorderStopped())
                if not isinstance(exc, Exception):
                    for _, future in self._queue:
                        _settle(future, RecorderStopped())
                    self._queue.clear()
                    raise
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        for item, future in batch:
            try:
                (result,) = await self._write_batch([item])
            except Exception as exc:
                _settle(future, exc)
            else:
                if not future.done():
                    future.set_result(result)


class Recorder:
    """Observations recorded through a group commit (``record_observations`` per batch)."""

    def __init__(self, db: Database, assets: AssetBook, *, max_batch: int = 256) -> None:
        async def write(items: Sequence[tuple[Observation, str | None]]) -> list[Recorded]:
            callbacks = [callback_id for _, callback_id in items]
            return await record_observations(
                db,
                assets,
                [observation for observation, _ in items],
                callbacks=callbacks if any(callbacks) else None,
            )

        self._commits: GroupCommit[tuple[Observation, str | None], Recorded] = GroupCommit(
            write, max_batch=max_batch
        )

    async def record(self, observation: Observation, *, callback_id: str | None = None) -> Recorded:
        """Record ``observation``; returns once it is committed (with others, maybe). With a
        ``callback_id``, that stored callback is marked processed in the same transaction."""
        return await self._commits.submit((observation, callback_id))


def _settle(future: asyncio.Future[Result], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
