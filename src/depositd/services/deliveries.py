"""Operator actions on outbound webhooks: list deliveries, retry one, replay an endpoint.

A merchant acts on its own deliveries and endpoints (another merchant's answer as
``NotFound``); an operator (the CLI, ``merchant_id`` None) acts on everyone's. Nothing here
posts anything: each action changes the outbox and the sender does the rest, signing with
the event id as ``webhook-id`` as on every send, so receivers can drop what they have had.

Manual retry makes one delivery due now, whatever its status (it still waits for an earlier
pending event of the same deposit to the same endpoint: one deposit's events keep their order):

* ``dead`` — its attempts keep counting, so it is past the retry schedule: the sender makes
  exactly one more attempt, and a failure leaves it dead again (retry it again to retry).
* ``pending`` — sent now instead of after its backoff. One leased to a sender this very
  moment may go out twice; delivery is at least once anyway.
* ``delivered`` — sent once more (a receiver that lost it asks for it again); a failure
  retries on what is left of the schedule after the attempts it has had.

Replay re-sends the endpoint's events after a seq, or created in a time range, through the
outbox: the endpoint's delivery of each event is reset (or inserted when it never had one,
say while it was disabled) and starts afresh, its attempts counted from zero so each event
gets the whole retry schedule (the attempt log keeps the earlier attempts, so its numbering
starts again after a replay). Row ``i`` is due ``i / rate`` seconds from now: the sender
claims by due time, so live deliveries (due at once) keep going out between them.

Retries and replays are appended to the audit log, by ``actor``, in their own transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.outbox import PENDING
from depositd.db.repositories import ENDPOINT_DELETED
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.domain.audit import AuditEntry
from depositd.errors import InputError, NotFound
from depositd.services.endpoints import EndpointDisabled
from depositd.services.queries import InvalidCursor, Page, decode_cursor, encode_cursor

#: most deliveries one page lists (the API's ``limit`` bound)
MAX_PAGE = 500
#: most attempts a delivery's detail shows (its latest; each URL tried is one)
MAX_ATTEMPT_LOG = 100
#: most events one replay re-sends
MAX_REPLAY_EVENTS = 100_000
#: replayed deliveries due per second: by default, at least, at most
DEFAULT_REPLAY_RATE = 50.0
MIN_REPLAY_RATE = 1.0
MAX_REPLAY_RATE = 1000.0

#: ``pending`` (due at ``next_attempt_at``), ``delivered``, or ``dead`` (out of attempts)
DeliveryStatus = Literal["pending", "delivered", "dead"]


class InvalidReplay(InputError):
    slug = "invalid-replay"


class ReplayTooLarge(InputError):
    slug = "replay-too-large"


@dataclass(frozen=True)
class Delivery:
    """One event's delivery to one endpoint."""

    id: int
    merchant_id: str
    endpoint_id: str
    event_id: str
    event_seq: int
    event_type: str
    status: DeliveryStatus
    attempts: int
    #: when a pending delivery is due (while a sender holds it: when its lease ends)
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class Attempt:
    """One request of an attempt (an attempt tries the fallback URLs after the primary)."""

    attempt: int
    url: str
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error_class: str | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: Delivery
    #: the latest attempts, oldest first
    attempt_log: list[Attempt]


@dataclass(frozen=True)
class Replayed:
    endpoint_id: str
    queued: int
    #: the first and last event queued; None when nothing matched
    first_seq: int | None
    last_seq: int | None
    #: when the last replayed delivery is due (sending it may take a little longer)
    finishes_by: datetime


async def list_deliveries(
    db: Database,
    merchant_id: str | None,
    *,
    status: DeliveryStatus | None = None,
    endpoint_id: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Delivery]:
    """Deliveries newest first; ``endpoint_id`` must be one of the merchant's endpoints
    (a deleted one too: its history stays readable)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit is between 1 and {MAX_PAGE}")
    before = _decode_cursor(cursor)
    async with UnitOfWork(db, write=False) as uow:
        if endpoint_id is not None and (
            await uow.deliveries.endpoint_state(merchant_id, endpoint_id) is None
        ):
            raise NotFound(f"no endpoint {endpoint_id}")
        rows = await uow.deliveries.page(
            merchant_id, status=status, endpoint_id=endpoint_id, before_id=before, limit=limit + 1
        )
    found = [_delivery(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(found, encode_cursor("dlv", found[-1].id) if more else None)


async def get_delivery(db: Database, merchant_id: str | None, delivery_id: int) -> DeliveryDetail:
    """A delivery with its latest attempts."""
    async with UnitOfWork(db, write=False) as uow:
        row = await uow.deliveries.get(merchant_id, delivery_id)
        if row is None:
            raise NotFound(f"no delivery {delivery_id}")
        tried = await uow.deliveries.attempts_of(delivery_id, MAX_ATTEMPT_LOG)
    return DeliveryDetail(
        _delivery(row),
        [
            Attempt(
                attempt=a.attempt,
                url=a.url,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                response_excerpt=a.response_excerpt,
                error_class=a.error_class,
                error=a.error,
                created_at=a.created_at,
            )
            for a in tried
        ],
    )


async def retry_delivery(
    db: Database,
    merchant_id: str | None,
    delivery_id: int,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> Delivery:
    """Make the delivery due now (see the module docstring); ``EndpointDisabled`` when its
    endpoint is disabled or deleted, as nothing would be sent."""

    async def retry() -> Delivery:
        async with UnitOfWork(db, write=True) as uow:
            row = await uow.deliveries.get(merchant_id, delivery_id, lock=True)
            if row is None:
                raise NotFound(f"no delivery {delivery_id}")
            if row.endpoint_disabled_reason == ENDPOINT_DELETED:
                raise EndpointDisabled(
                    f"endpoint {row.endpoint_id} was deleted: its deliveries are not sent"
                )
            if row.endpoint_disabled_at is not None:
                raise EndpointDisabled(
                    f"endpoint {row.endpoint_id} is disabled ({row.endpoint_disabled_reason});"
                    " enable it to retry its deliveries"
                )
            now = clock()
            await uow.deliveries.make_due(delivery_id, now)
            changed = await uow.deliveries.get(merchant_id, delivery_id)
            details = {"endpoint_id": row.endpoint_id, "event_seq": row.event_seq,
                       "status_before": row.status, "attempts": row.attempts}  # fmt: skip
            entry = AuditEntry(
                actor, "delivery.retried", str(delivery_id), row.merchant_id, details
            )
            await uow.audit.append(entry, now)
            await uow.commit()
        assert changed is not None
        return _delivery(changed)

    return await retry_transient(retry)


async def replay_endpoint(
    db: Database,
    merchant_id: str | None,
    endpoint_id: str,
    *,
    after_seq: int | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    rate_per_second: float = DEFAULT_REPLAY_RATE,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> Replayed:
    """Queue again the endpoint's events after ``after_seq``, or created in
    ``[created_from, created_to)`` (one or the other), ``rate_per_second`` of them due per
    second (see the module docstring). At most ``MAX_REPLAY_EVENTS`` at once."""
    _check_replay(after_seq, created_from, created_to, rate_per_second)

    async def replay() -> Replayed:
        async with UnitOfWork(db, write=True) as uow:
            endpoint = await uow.deliveries.endpoint_state(merchant_id, endpoint_id)
            if endpoint is None or endpoint.disabled_reason == ENDPOINT_DELETED:
                raise NotFound(f"no endpoint {endpoint_id}")
            if endpoint.disabled_at is not None:
                raise EndpointDisabled(
                    f"endpoint {endpoint_id} is disabled ({endpoint.disabled_reason});"
                    " enable it to replay events to it"
                )
            found = await uow.deliveries.replayable_events(
                endpoint.merchant_id,
                endpoint_id,
                after_seq=after_seq,
                created_from=created_from,
                created_to=created_to,
                limit=MAX_REPLAY_EVENTS + 1,
            )
            if len(found) > MAX_REPLAY_EVENTS:
                raise ReplayTooLarge(
                    f"more than {MAX_REPLAY_EVENTS} events match, and one replay sends at"
                    f" most {MAX_REPLAY_EVENTS}: replay a shorter time range ('from', 'to'),"
                    " one after another"
                )
            now = clock()
            due = [
                (row.seq, row.deposit_id, now + timedelta(seconds=i / rate_per_second))
                for i, row in enumerate(found)
            ]
            await uow.deliveries.requeue(endpoint_id, due, now)
            asked = {
                "after_seq": after_seq,
                "from": None if created_from is None else created_from.isoformat(),
                "to": None if created_to is None else created_to.isoformat(),
                "queued": len(due),
            }
            entry = AuditEntry(actor, "endpoint.replayed", endpoint_id, endpoint.merchant_id, asked)
            await uow.audit.append(entry, now)
            await uow.commit()
        return Replayed(
            endpoint_id=endpoint_id,
            queued=len(due),
            first_seq=due[0][0] if due else None,
            last_seq=due[-1][0] if due else None,
            finishes_by=due[-1][2] if due else now,
        )

    return await retry_transient(replay)


def _check_replay(
    after_seq: int | None,
    created_from: datetime | None,
    created_to: datetime | None,
    rate_per_second: float,
) -> None:
    span = created_from is not None or created_to is not None
    if after_seq is not None and span:
        raise InvalidReplay("replay after a seq or over a time range, not both")
    if after_seq is None and not span:
        raise InvalidReplay("say what to replay: after a seq, or a time range (from and to)")
    if after_seq is not None and after_seq < 0:
        raise InvalidReplay("the seq to replay after is 0 or more")
    if span:
        if created_from is None or created_to is None:
            raise InvalidReplay("a time range needs both ends: from and to")
        if created_from.tzinfo is None or created_to.tzinfo is None:
            raise InvalidReplay("give the times with a UTC offset, for example 2024-05-01T00:00Z")
        if created_from >= created_to:
            raise InvalidReplay("the time range is empty: from must be before to")
    if not MIN_REPLAY_RATE <= rate_per_second <= MAX_REPLAY_RATE:
        raise InvalidReplay(
            f"the rate is between {MIN_REPLAY_RATE:g} and {MAX_REPLAY_RATE:g} per second"
        )


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        merchant_id=row.merchant_id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_seq=row.event_seq,
        event_type=row.event_type,
        status=cast(DeliveryStatus, row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
        last_attempt_at=row.last_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        finished_at=row.finished_at,
        created_at=row.created_at,
    )


def _decode_cursor(cursor: str | None) -> int | None:
    """The delivery id a listing's cursor continues after."""
    value = decode_cursor("dlv", cursor)
    if value is None:
        return None
    try:
        before = int(value)
    except ValueError:
        raise InvalidCursor("cursor is not one this API handed out") from None
    if not 0 < before < 2**63:
        raise InvalidCursor("cursor is not one this API handed out")
    return before
