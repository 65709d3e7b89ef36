"""Alerts: conditions evaluated inside the service, each incident fired once and resolved.

Every ``alerts.interval_seconds`` the evaluator asks each rule what holds now — one
``Condition`` per thing in trouble (an endpoint, a chain, a provider, a merchant's stuck
deposits) — and compares with the incidents stored as open in the ``alerts`` table: a new
condition opens an incident and is announced as firing; an open incident whose condition no
longer holds is resolved and announced as resolved; one that still holds is left alone, so an
alert fires once however long the trouble lasts. Announcements go to every sink (the log, and
a Slack-compatible webhook if configured); one a sink failed to take is tried again next
round, and storing the incident first means a restart neither repeats nor loses one.

The rules (thresholds in ``[alerts]``):

* ``delivery_failure_rate`` — an endpoint's attempts in the window failing at or above the
  rate (with a minimum number of attempts).
* ``callback_rejection_rate`` — a provider's inbound callbacks rejected at or above the rate.
* ``endpoint_disabled`` — an endpoint disabled (by 410 Gone, by failing too long, or by its
  merchant), until it is enabled again.
* ``dead_letters`` — deliveries to an endpoint that gave up within ``dead_letter_hours``,
  until they are retried or replayed.
* ``watcher_lag`` and ``chain_node_down`` — a chain's watcher in this process more than
  ``watcher_max_lag_blocks`` behind, or unable to reach its node for ``node_down_seconds``.
* ``deposits_stuck`` — a merchant's deposits pending or confirming with no change for
  ``stuck_minutes``.
* ``deposit_reversed`` — a credited deposit taken back after a reorg within
  ``reversal_minutes``.
* ``reconciliation_mismatch`` — the last reconciliation found sums that disagree.
* ``anomaly_holds`` — a merchant's deposits held by anomaly detection awaiting review.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from depositd import metrics
from depositd.clock import utcnow
from depositd.config import AlertsConfig
from depositd.db.alerts import AlertRow
from depositd.db.engine import Database
from depositd.db.uow import UnitOfWork
from depositd.delivery.poster import Poster
from depositd.services.reconcile import Mismatch

log = structlog.get_logger("depositd.alerts")


@dataclass(frozen=True)
class Condition:
    """Something in trouble now, as one rule sees it."""

    name: str
    subject: str
    summary: str
    merchant_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.subject}"


class WatcherView(Protocol):
    """What the alert rules read of a chain watcher's status."""

    chain: str
    node_reachable: bool
    last_round_at: datetime | None
    last_error: str | None

    @property
    def lag_blocks(self) -> int | None: ...


@dataclass
class OpsState:
    """What this process's workers know that the database does not say: the last
    reconciliation's mismatches, and when the process started."""

    started_at: datetime = field(default_factory=utcnow)
    mismatches: list[Mismatch] | None = None


async def conditions(
    db: Database,
    settings: AlertsConfig,
    watchers: Iterable[WatcherView],
    state: OpsState,
    now: datetime,
) -> list[Condition]:
    found: list[Condition] = []
    window = f"in the last {settings.window_minutes:g} min"
    since = now - timedelta(minutes=settings.window_minutes)
    async with UnitOfWork(db, write=False) as uow:
        ops = uow.ops
        for endpoint_id, merchant_id, total, failures in await ops.delivery_attempts(since):
            rate = (failures or 0) / total
            if total >= settings.delivery_min_attempts and rate >= settings.delivery_failure_rate:
                found.append(
                    Condition(
                        "delivery_failure_rate",
                        endpoint_id,
                        f"endpoint {endpoint_id}: {failures} of {total} delivery attempts failed"
                        f" {window}",
                        merchant_id,
                        {"attempts": total, "failed": failures, "rate": round(rate, 3)},
                    )
                )
        for provider, total, refused in await ops.callbacks(since):
            rate = (refused or 0) / total
            if total >= settings.callback_min_count and rate >= settings.callback_rejection_rate:
                found.append(
                    Condition(
                        "callback_rejection_rate",
                        provider,
                        f"provider {provider}: {refused} of {total} callbacks rejected {window}",
                        None,
                        {"callbacks": total, "rejected": refused, "rate": round(rate, 3)},
                    )
                )
        for endpoint_id, merchant_id, reason in await ops.disabled_endpoints():
            found.append(
                Condition(
                    "endpoint_disabled",
                    endpoint_id,
                    f"endpoint {endpoint_id} is disabled: {reason or 'no reason given'}",
                    merchant_id,
                    {"reason": reason},
                )
            )
        dead_since = now - timedelta(hours=settings.dead_letter_hours)
        for endpoint_id, merchant_id, count in await ops.dead_letters(dead_since):
            found.append(
                Condition(
                    "dead_letters",
                    endpoint_id,
                    f"endpoint {endpoint_id}: {count} deliveries gave up; retry or replay them",
                    merchant_id,
                    {"dead": count},
                )
            )
        stuck_before = now - timedelta(minutes=settings.stuck_minutes)
        for merchant_id, count, oldest in await ops.stuck_deposits(stuck_before):
            found.append(
                Condition(
                    "deposits_stuck",
                    merchant_id,
                    f"{count} deposits pending or confirming with no change for over"
                    f" {settings.stuck_minutes:g} min",
                    merchant_id,
                    {"deposits": count, "oldest_update": oldest.isoformat()},
                )
            )
        reversed_since = now - timedelta(minutes=settings.reversal_minutes)
        for merchant_id, count, example in await ops.reversals(reversed_since):
            found.append(
                Condition(
                    "deposit_reversed",
                    merchant_id,
                    f"{count} credited deposits reversed by a chain reorganisation"
                    f" (e.g. {example})",
                    merchant_id,
                    {"deposits": count, "example": example},
                )
            )
        for merchant_id, count in await ops.anomaly_holds():
            found.append(
                Condition(
                    "anomaly_holds",
                    merchant_id,
                    f"{count} deposits held by anomaly detection await review",
                    merchant_id,
                    {"deposits": count},
                )
            )
    found += _watcher_conditions(settings, watchers, state, now)
    if state.mismatches:
        kinds = sorted({m.kind for m in state.mismatches})
        found.append(
            Condition(
                "reconciliation_mismatch",
                "sums",
                f"reconciliation: {len(state.mismatches)} sums disagree ({', '.join(kinds)})",
                None,
                {"mismatches": [m.__dict__ for m in state.mismatches[:20]]},
            )
        )
    return found


def _watcher_conditions(
    settings: AlertsConfig, watchers: Iterable[WatcherView], state: OpsState, now: datetime
) -> list[Condition]:
    found = []
    down_for = timedelta(seconds=settings.node_down_seconds)
    for watcher in watchers:
        last_good = watcher.last_round_at or state.started_at
        if not watcher.node_reachable and now - last_good >= down_for:
            found.append(
                Condition(
                    "chain_node_down",
                    watcher.chain,
                    f"chain {watcher.chain}: the node has not answered since"
                    f" {last_good.isoformat(timespec='seconds')} ({watcher.last_error})",
                    None,
                    {"last_error": watcher.last_error},
                )
            )
        lag = watcher.lag_blocks
        if lag is not None and lag > settings.watcher_max_lag_blocks:
            found.append(
                Condition(
                    "watcher_lag",
                    watcher.chain,
                    f"chain {watcher.chain}: the watcher is {lag} blocks behind the node",
                    None,
                    {"lag_blocks": lag},
                )
            )
    return found


class Sink(Protocol):
    async def announce(self, alert: AlertRow) -> None:
        """Tell someone; raise if that failed (it is tried again next round)."""


class LogSink:
    async def announce(self, alert: AlertRow) -> None:
        fields = {"alert": alert.name, "subject": alert.subject, "summary": alert.summary,
                  "merchant_id": alert.merchant_id, "alert_id": alert.id}  # fmt: skip
        if alert.firing:
            log.error("alert_firing", **fields, details=alert.details)
        else:
            log.info("alert_resolved", **fields)


class SlackSink:
    """Posts Slack-compatible JSON (``text`` plus one attachment) to an incoming webhook."""

    def __init__(self, url: str, poster: Poster) -> None:
        self.url, self.poster = url, poster

    async def announce(self, alert: AlertRow) -> None:
        state = "FIRING" if alert.firing else "RESOLVED"
        message = {
            "text": f"[{state}] {alert.name}: {alert.summary}",
            "attachments": [
                {
                    "color": "danger" if alert.firing else "good",
                    "fields": [
                        {"title": "alert", "value": alert.name, "short": True},
                        {"title": "subject", "value": alert.subject, "short": True},
                        {"title": "since", "value": alert.fired_at.isoformat(), "short": True},
                    ],
                }
            ],
        }
        body = json.dumps(message).encode()
        answer = await self.poster.post(self.url, body, {"content-type": "application/json"})
        if not 200 <= answer.status < 300:
            raise RuntimeError(f"the alert webhook answered {answer.status}")


@dataclass
class Evaluator:
    db: Database
    settings: AlertsConfig
    sinks: Sequence[Sink]
    watchers: Callable[[], Iterable[WatcherView]] = lambda: ()
    state: OpsState = field(default_factory=OpsState)
    clock: Callable[[], datetime] = utcnow

    async def evaluate(self) -> list[AlertRow]:
        """One round: open and resolve incidents, then announce what is unannounced;
        returns the incidents open now."""
        now = self.clock()
        holding = {c.key: c for c in await conditions(
            self.db, self.settings, self.watchers(), self.state, now)}  # fmt: skip
        async with UnitOfWork(self.db, write=True) as uow:
            stored = await uow.alerts.open()
            await uow.alerts.resolve([a.id for a in stored if a.key not in holding], now)
            opened = {a.key for a in stored}
            for key, condition in holding.items():
                if key not in opened:
                    await uow.alerts.fire(
                        key,
                        condition.name,
                        condition.subject,
                        condition.merchant_id,
                        condition.summary,
                        condition.details,
                        now,
                    )
            await uow.commit()
        await self._announce(now)
        counts: dict[str, bool] = {name: False for name in RULES}
        for condition in holding.values():
            counts[condition.name] = True
        metrics.set_alerts(counts)
        async with UnitOfWork(self.db, write=False) as uow:
            return await uow.alerts.open()

    async def _announce(self, now: datetime) -> None:
        async with UnitOfWork(self.db, write=False) as uow:
            waiting = await uow.alerts.unannounced()
        for alert in waiting:
            try:
                for sink in self.sinks:
                    await sink.announce(alert)
            except Exception as exc:  # a sink's trouble must not stop the others' rounds
                log.warning("alert_not_announced", alert_id=alert.id, error=repr(exc))
                continue
            async with UnitOfWork(self.db, write=True) as uow:
                await uow.alerts.announced(alert, now)
                await uow.commit()


#: every rule's name, for the firing gauge (0 when quiet)
RULES = (
    "delivery_failure_rate",
    "callback_rejection_rate",
    "endpoint_disabled",
    "dead_letters",
    "chain_node_down",
    "watcher_lag",
    "deposits_stuck",
    "deposit_reversed",
    "reconciliation_mismatch",
    "anomaly_holds",
)
