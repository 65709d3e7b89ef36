"""Retry a whole transaction when PostgreSQL aborts it for a deadlock or serialization."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

#: deadlock_detected, serialization_failure
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})

T = TypeVar("T")


class RetryTransaction(Exception):
    """Raised inside a unit of work that lost a race it can only win by starting over."""


def is_transient(exc: DBAPIError) -> bool:
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in _TRANSIENT_SQLSTATES


async def retry_transient(work: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Run ``work`` (a whole unit of work) again after a transient abort, with jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except (DBAPIError, RetryTransaction) as exc:
            transient = isinstance(exc, RetryTransaction) or is_transient(exc)
            if attempt == attempts or not transient:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311
    raise AssertionError("unreachable")
