"""The port through which the dashboard learns which alerts are active.

The alert rules live elsewhere; the dashboard only shows what an ``AlertSource`` says is
active for the operator's merchant. Until rules are evaluated, ``NoAlerts`` says nothing is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True)
class ActiveAlert:
    #: the rule that fired, e.g. ``endpoint_disabled``, ``reconciliation_mismatch``
    rule: str
    severity: Literal["warning", "critical"]
    #: one line for people, in English
    summary: str
    #: when it started firing
    since: datetime


class AlertSource(Protocol):
    async def active(self, merchant_id: str) -> Sequence[ActiveAlert]:
        """The merchant's alerts firing now, most severe first."""
        ...


class NoAlerts:
    """No alert rules yet: nothing is ever active."""

    async def active(self, merchant_id: str) -> Sequence[ActiveAlert]:
        return ()
