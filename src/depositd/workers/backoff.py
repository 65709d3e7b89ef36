"""How long to wait before trying again after a failure."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter.

    The wait before attempt ``n`` (the first retry is ``n = 1``) is drawn uniformly from
    ``[0, min(cap, base * 2 ** (n - 1))]``: waits grow fast, and many clients failing together
    do not retry together.
    """

    base_seconds: float = 0.5
    cap_seconds: float = 30.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not secrecy
