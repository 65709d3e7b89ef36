"""When to try a delivery again, and what an endpoint's answer means (DESIGN §2, §5). Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

#: the wait before each retry: the first attempt goes at once, then these, about three days
#: in all; after the last one the delivery is dead
RETRY_SCHEDULE = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
#: attempts in all: the first and one per scheduled wait
MAX_ATTEMPTS = len(RETRY_SCHEDULE) + 1
#: ``Retry-After`` is honoured between these bounds (a receiver cannot stall us for days,
#: nor make us hammer it)
RETRY_AFTER_MIN = timedelta(seconds=1)
RETRY_AFTER_MAX = timedelta(hours=24)


class Verdict(StrEnum):
    DELIVERED = "delivered"
    #: failed this time; try again later (or give up when out of attempts)
    FAILED = "failed"
    #: 410 Gone: the receiver says the endpoint no longer exists
    GONE = "gone"


def verdict(status_code: int | None) -> Verdict:
    """Only 2xx is success; 3xx is failure (redirects are not followed); 410 disables."""
    if status_code is not None and 200 <= status_code < 300:
        return Verdict.DELIVERED
    if status_code == 410:
        return Verdict.GONE
    return Verdict.FAILED


def next_attempt_at(
    attempts: int,
    now: datetime,
    retry_after: timedelta | None = None,
    rng: random.Random | None = None,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None when out of attempts.

    Full jitter: the wait is drawn uniformly from ``[0, 2 × scheduled)``, so retries of many
    deliveries that failed together spread out while their average follows the schedule.
    A receiver's ``Retry-After`` (bounded) replaces the drawn wait.
    """
    if attempts >= MAX_ATTEMPTS:
        return None
    if retry_after is not None:
        return now + min(max(retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX)
    scheduled = RETRY_SCHEDULE[attempts - 1]
    draw = (rng or random).uniform(0, 2)
    return now + scheduled * draw


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, timedelta(0))


@dataclass(frozen=True)
class CircuitPolicy:
    """Per endpoint: consecutive failures that open its circuit, and for how long; failing
    without a success for ``disable_after`` disables it."""

    failures_to_open: int
    open_for: timedelta
    disable_after: timedelta
