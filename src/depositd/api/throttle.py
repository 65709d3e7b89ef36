"""Rate limits for the end-user auth routes: so many requests per source address a minute.

A fixed one-minute window per address, counted in this process (with ``serve --processes N``
each process counts on its own, so an address gets up to N times the limit). Guessing one
account's password is stopped independently, in the database: the account locks after
``end_users.max_failed_logins`` failures whichever process saw them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

#: when more addresses than this are being counted, windows that have ended are dropped
_PRUNE_AT = 10_000


class Throttle:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, window: float = 60.0
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self._clock = clock
        self._counts: dict[str, tuple[float, int]] = {}

    def allow(self, address: str) -> float | None:
        """Count a request from ``address``; None if allowed, else seconds until it may retry."""
        now = self._clock()
        started, count = self._counts.get(address, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        if count >= self.per_minute:
            return max(started + self.window - now, 0.0)
        if len(self._counts) >= _PRUNE_AT:
            self._prune(now)
        self._counts[address] = (started, count + 1)
        return None

    def _prune(self, now: float) -> None:
        ended = [a for a, (started, _) in self._counts.items() if now - started >= self.window]
        for address in ended:
            del self._counts[address]


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
