"""Group commit: concurrent single observations share one transaction.

Every recorded observation costs a transaction, and on PostgreSQL the event cursor's row lock
is held from the event append to the end of the commit, so one-per-transaction writers queue
behind each other's commits. A ``Recorder`` lets concurrent callers (provider callbacks, API
requests) hand their observation to one flusher that records whatever has queued up as a
batch, in order of arrival, and answers each caller once the batch is durable. At low load a
batch is one observation and nothing waits; under load, batches grow by themselves.

A batch that fails because of one caller's input (say a conflicting amount) is retried one
observation per transaction, so that caller alone gets the error.
"""

from __future__ import annotations

import asyncio
from collections import deque

from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import Observation
from depositd.errors import DepositdError
from depositd.services.observations import Recorded, record_observations


class RecorderStopped(Exception):
    """The recorder stopped (shutdown) before it could confirm this observation.

    It may or may not be committed; recording it again is safe, recording is idempotent.
    """


class Recorder:
    def __init__(self, db: Database, assets: AssetBook, *, max_batch: int = 256) -> None:
        self._db = db
        self._assets = assets
        self._max_batch = max_batch
        self._queue: deque[tuple[Observation, asyncio.Future[Recorded]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def record(self, observation: Observation) -> Recorded:
        """Record ``observation``; returns once it is committed (with others, maybe)."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._queue.append((observation, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # the flusher finishes the batch even if this caller goes away
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queue:
            size = min(len(self._queue), self._max_batch)
            batch = [self._queue.popleft() for _ in range(size)]
            try:
                results = await record_observations(
                    self._db, self._assets, [obs for obs, _ in batch]
                )
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

    async def _one_by_one(self, batch: list[tuple[Observation, asyncio.Future[Recorded]]]) -> None:
        for observation, future in batch:
            try:
                (result,) = await record_observations(self._db, self._assets, [observation])
            except Exception as exc:
                _settle(future, exc)
            else:
                if not future.done():
                    future.set_result(result)


def _settle(future: asyncio.Future[Recorded], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
