"""Waiting for a signal with a time limit."""

from __future__ import annotations

import asyncio

import pytest

from depositd.clock import wait_set


async def test_wait_set_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 10) is True


async def test_a_cancellation_arriving_with_the_event_stops_the_waiter() -> None:
    # asyncio.wait_for (Python 3.11) dropped this cancellation: the loop below ran on
    event = asyncio.Event()

    async def worker() -> None:
        while True:
            await wait_set(event, 10)
            event.clear()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)  # the worker is waiting
    event.set()
    task.cancel()
    await asyncio.sleep(0.05)
    assert task.done()
    with pytest.raises(asyncio.CancelledError):
        await task
