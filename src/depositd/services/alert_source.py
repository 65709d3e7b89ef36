"""The port through which the dashboard learns which alerts are active.

The alert rules live in ``services.alerts`` and keep their incidents in the database;
``StoredAlerts`` reads the ones open now for the operator's merchant (and those about the
whole deployment, such as a chain node down). ``NoAlerts`` says nothing is active.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork


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


#: the rules whose incidents put money or the deposit flow at risk
CRITICAL = frozenset(
    {"chain_node_down", "watcher_lag", "deposit_reversed", "reconciliation_mismatch"}
)


class StoredAlerts:
    """The open incidents of the alert rules (``services.alerts``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def active(self, merchant_id: str) -> Sequence[ActiveAlert]:
        async with UnitOfWork(self.db, write=False) as uow:
            found = await uow.alerts.open()
        mine = [a for a in found if a.merchant_id in (merchant_id, None)]
        alerts = [
            ActiveAlert(
                a.name, "critical" if a.name in CRITICAL else "warning", a.summary, a.fired_at
            )
            for a in mine
        ]
        return sorted(alerts, key=lambda a: (a.severity != "critical", a.since))
