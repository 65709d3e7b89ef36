"""The time, always aware UTC; and waiting for a signal with a time limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed; whether it was set.

    Not ``asyncio.wait_for``: before Python 3.12 it returns normally when a cancellation
    arrives just as the event is set, and a worker told to stop runs on for good.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
