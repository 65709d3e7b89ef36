"""Group commit: batches, a second batch in flight under a backlog, one result per caller."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from depositd.services.group_commit import GroupCommit


class SlowWriter:
    """A batch writer that holds every batch until released; remembers what overlapped."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return [item * 10 for item in items]


async def test_a_backlog_behind_a_batch_in_flight_is_written_meanwhile() -> None:
    writer = SlowWriter()
    commits = GroupCommit(writer, max_batch=64)  # a backlog is 8 items
    first = asyncio.create_task(commits.submit(0))
    await asyncio.sleep(0)  # the first batch is in flight, held
    rest = [asyncio.create_task(commits.submit(n)) for n in range(1, 100)]
    await asyncio.sleep(0.01)
    assert writer.in_flight == 2
    writer.release.set()
    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(100)]
    assert writer.most_in_flight == 2  # never more than max_in_flight
    assert writer.batches[0] == [0]
    assert sorted(n for batch in writer.batches for n in batch) == list(range(100))
    assert max(len(batch) for batch in writer.batches) == 64


async def test_a_few_items_wait_for_the_batch_in_flight() -> None:
    writer = SlowWriter()
    commits = GroupCommit(writer, max_batch=64)
    first = asyncio.create_task(commits.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(commits.submit(n)) for n in range(1, 8)]  # under a backlog
    await asyncio.sleep(0.01)
    assert writer.in_flight == 1
    writer.release.set()
    assert await asyncio.gather(first, *rest) == [n * 10 for n in range(8)]
    assert writer.batches == [[0], list(range(1, 8))]
    assert writer.most_in_flight == 1


async def test_one_in_flight_when_asked() -> None:
    writer = SlowWriter()
    commits = GroupCommit(writer, max_batch=16, max_in_flight=1)
    tasks = [asyncio.create_task(commits.submit(n)) for n in range(50)]
    await asyncio.sleep(0.01)
    writer.release.set()
    assert await asyncio.gather(*tasks) == [n * 10 for n in range(50)]
    assert writer.most_in_flight == 1
    assert [len(batch) for batch in writer.batches] == [16, 16, 16, 2]
