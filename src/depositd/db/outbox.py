"""The outbox as the sender sees it: claiming due deliveries and writing down what happened."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Row,
    TextClause,
    and_,
    bindparam,
    exists,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from depositd.db.engine import Database
from depositd.db.tables import (
    deliveries,
    delivery_attempts,
    endpoint_subscriptions,
    endpoints,
    events,
)

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"

# The PostgreSQL batch writes: one statement each, the batch as one array per column (an
# executemany is a round of the protocol per row); parameters named after the dataclasses'
# fields (``_columns``)
_UPDATE_FROM_ARRAYS = text(
    """
    UPDATE deliveries AS d SET
        status = u.status, attempts = u.attempts, next_attempt_at = u.next_attempt_at,
        last_attempt_at = u.last_attempt_at, last_status_code = u.last_status_code,
        last_error = u.last_error, finished_at = u.finished_at
    FROM unnest(
        CAST(:delivery_id AS bigint[]), CAST(:status AS varchar[]), CAST(:attempts AS integer[]),
        CAST(:next_attempt_at AS timestamptz[]), CAST(:last_attempt_at AS timestamptz[]),
        CAST(:last_status_code AS integer[]), CAST(:last_error AS varchar[]),
        CAST(:finished_at AS timestamptz[])
    ) AS u(id, status, attempts, next_attempt_at, last_attempt_at, last_status_code,
           last_error, finished_at)
    WHERE d.id = u.id AND d.status = 'pending'
    """
)
_INSERT_ATTEMPTS_FROM_ARRAYS = text(
    """
    INSERT INTO delivery_attempts (delivery_id, attempt, url, status_code, latency_ms,
                                   response_excerpt, error_class, error, created_at)
    SELECT * FROM unnest(
        CAST(:delivery_id AS bigint[]), CAST(:attempt AS integer[]), CAST(:url AS varchar[]),
        CAST(:status_code AS integer[]), CAST(:latency_ms AS integer[]),
        CAST(:response_excerpt AS varchar[]), CAST(:error_class AS varchar[]),
        CAST(:error AS varchar[]), CAST(:created_at AS timestamptz[])
    )
    """
)


# -- the claim: built once (the sender claims many times a second) --------------------------


class Claimed(NamedTuple):
    """A leased delivery with what posting it needs: its endpoint and its event."""

    delivery_id: int
    attempts: int
    endpoint_id: str
    merchant_id: str
    url: str
    fallback_urls: list[str]
    secret: str
    previous_secret: str | None
    previous_secret_until: datetime | None
    seq: int
    event_id: str
    type: str
    data: dict[str, Any]
    created_at: datetime


# One deposit's events in order: a delivery goes only when no earlier one of its (endpoint,
# ordering key) is pending (test events have no key: each is its own). With statistics the
# planner reads the due rows in order from the partial index ix_deliveries_pending_due,
# probes each through ix_deliveries_pending_order and stops at the limit: ~2 ms for 400 rows
# out of 20,000 pending. (On a table filled since its last ANALYZE it may sort every due
# row first, ~50 ms for 20,000, until autovacuum analyzes it.) 'pending' is written into the
# text, not bound: only then can a generic plan (PostgreSQL's after five runs of a prepared
# statement) use those partial indexes; the scan's limit too, or the generic plan cannot
# tell a batch from the whole table. Endpoints are not joined: on a small, never analyzed
# endpoints table the planner's guess of the join made it sort every due row.
_DUE = """
    SELECT d.id, d.endpoint_id
    FROM deliveries AS d
    WHERE d.status = 'pending' AND d.next_attempt_at <= {now}
      AND d.endpoint_id NOT IN (
          SELECT id FROM endpoints
          WHERE disabled_at IS NOT NULL OR circuit_open_until > {now})
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS earlier
          WHERE earlier.status = 'pending' AND earlier.endpoint_id = d.endpoint_id
            AND earlier.ordering_key = d.ordering_key AND earlier.event_seq < d.event_seq)
      {exclude}
    ORDER BY d.next_attempt_at, d.id
    LIMIT {scan:d}{lock}
"""


@functools.cache
def due_postgresql(scan: int, excluding: bool) -> str:
    """PostgreSQL (asyncpg, ``$1`` now, ``$2`` the endpoints to leave out when
    ``excluding``): the first ``scan`` due rows in order, (id, endpoint id), locked, other
    senders' rows skipped."""
    exclude = "AND d.endpoint_id <> ALL($2::varchar[])" if excluding else ""
    return _DUE.format(now="$1", exclude=exclude, scan=scan, lock=" FOR UPDATE OF d SKIP LOCKED")


@functools.cache
def _due_sqlite(scan: int, excluding: bool) -> TextClause:
    exclude = "AND d.endpoint_id NOT IN :full" if excluding else ""
    statement = text(_DUE.format(now=":now", exclude=exclude, scan=scan, lock="")).bindparams(
        bindparam("now", type_=deliveries.c.next_attempt_at.type)
    )
    return statement.bindparams(bindparam("full", expanding=True)) if excluding else statement


#: PostgreSQL (asyncpg): lease the chosen rows ($1) until $2 and return them with their
#: endpoint and event, in one statement
_LEASE_RETURNING_POSTGRESQL = """
    UPDATE deliveries AS d SET next_attempt_at = $2
    FROM endpoints AS e, events AS ev
    WHERE d.id = ANY($1::bigint[]) AND e.id = d.endpoint_id AND ev.seq = d.event_seq
    RETURNING d.id, d.attempts, d.endpoint_id, e.merchant_id, e.url, e.fallback_urls,
              e.secret, e.previous_secret, e.previous_secret_until, ev.seq, ev.id, ev.type,
              ev.data, ev.created_at
"""
#: SQLite: lease the chosen rows (its RETURNING cannot name the other tables), then read them
_LEASE_SQLITE = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
    .values(next_attempt_at=bindparam("lease_until"))
)
_CLAIMED_SQLITE = (
    select(
        deliveries.c.id,
        deliveries.c.attempts,
        deliveries.c.endpoint_id,
        endpoints.c.merchant_id,
        endpoints.c.url,
        endpoints.c.fallback_urls,
        endpoints.c.secret,
        endpoints.c.previous_secret,
        endpoints.c.previous_secret_until,
        events.c.seq,
        events.c.id,
        events.c.type,
        events.c.data,
        events.c.created_at,
    )
    .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
    .join(events, events.c.seq == deliveries.c.event_seq)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(deliveries.c.id)
)


async def claim_due(
    db: Database,
    now: datetime,
    lease_until: datetime,
    limit: int,
    *,
    room: Mapping[str, int] | None = None,
    room_per_endpoint: int | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries (until ``lease_until``) in one transaction and
    return them, in id order.

    Due: pending, ``next_attempt_at`` passed, the endpoint enabled with its circuit closed,
    and no earlier event of the same deposit still pending for the endpoint (one deposit's
    events reach an endpoint in order). An endpoint gets at most ``room`` of them (by
    endpoint id; ``room_per_endpoint`` for the others). On PostgreSQL concurrent senders
    skip each other's rows (``SKIP LOCKED``), and the claim talks to asyncpg directly (half
    the CPU per row of going through SQLAlchemy); SQLite has one sender.
    """
    room = room or {}
    # capped endpoints leave room for the next ones in line
    scan = limit * 2 if room_per_endpoint is not None else limit
    full = sorted(endpoint for endpoint, free in room.items() if free <= 0)
    if db.is_sqlite:
        async with db.writer.begin() as conn:
            due = await conn.execute(_due_sqlite(scan, bool(full)), {"now": now, "full": full})
            ids = _choose(due.all(), limit, room, room_per_endpoint)
            if not ids:
                return []
            await conn.execute(_LEASE_SQLITE, {"ids": ids, "lease_until": lease_until})
            rows = (await conn.execute(_CLAIMED_SQLITE, {"ids": ids})).all()
        return [Claimed._make(row) for row in rows]
    pool = await db.driver_pool()
    async with pool.acquire() as raw, raw.transaction():
        due_rows = await raw.fetch(due_postgresql(scan, bool(full)), now, *([full] if full else []))
        ids = _choose(due_rows, limit, room, room_per_endpoint)
        if not ids:
            return []
        leased = await raw.fetch(_LEASE_RETURNING_POSTGRESQL, ids, lease_until)
    # asyncpg hands json columns over as text (read with json: orjson makes a float of an
    # integer past 64 bits, and token amounts are such integers)
    claimed = [
        Claimed._make((*row[:5], json.loads(row[5]), *row[6:12], json.loads(row[12]), row[13]))
        for row in leased
    ]
    claimed.sort(key=lambda row: row.delivery_id)
    return claimed


def _choose(
    due: Sequence[Any], limit: int, room: Mapping[str, int], room_per_endpoint: int | None
) -> list[int]:
    """The ids of the due (id, endpoint id) rows to take, in order: each endpoint's first
    ``room`` (``room_per_endpoint`` for those not in it), up to ``limit``."""
    ids: list[int] = []
    taken: dict[str, int] = {}
    for delivery_id, endpoint_id in due:
        cap = room.get(endpoint_id, room_per_endpoint)
        if cap is not None and taken.get(endpoint_id, 0) >= cap:
            continue
        taken[endpoint_id] = taken.get(endpoint_id, 0) + 1
        ids.append(delivery_id)
        if len(ids) == limit:
            break
    return ids


def _columns(rows: Sequence[Any]) -> dict[str, list[Any]]:
    """Dataclass rows as one list per field: the parameters of an ``unnest`` write."""
    names = [field.name for field in dataclasses.fields(rows[0])]
    return {name: [getattr(row, name) for row in rows] for name in names}


@dataclass(frozen=True)
class AttemptRow:
    """One request to one URL (an attempt tries the fallback URLs after the primary); the
    fields are ``delivery_attempts``' columns."""

    delivery_id: int
    attempt: int
    url: str
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error_class: str | None
    error: str | None
    created_at: datetime


@dataclass(frozen=True)
class DeliveryUpdate:
    """A delivery's new state; the fields after ``delivery_id`` are ``deliveries``' columns."""

    delivery_id: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None


class DeliveryRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def record(self, updates: Sequence[DeliveryUpdate], tried: Sequence[AttemptRow]) -> None:
        postgresql = self._conn.dialect.name == "postgresql"
        if tried and postgresql:
            await self._conn.execute(_INSERT_ATTEMPTS_FROM_ARRAYS, _columns(tried))
        elif tried:
            await self._conn.execute(insert(delivery_attempts), [vars(a) for a in tried])
        if updates and postgresql:
            # only rows still pending: one that ended meanwhile (endpoint deleted) stays ended
            await self._conn.execute(_UPDATE_FROM_ARRAYS, _columns(updates))
        elif updates:
            # one statement for the batch (bind names must not be the columns' own)
            columns = [f.name for f in dataclasses.fields(DeliveryUpdate)]
            columns.remove("delivery_id")
            await self._conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.id == bindparam("b_delivery_id"), deliveries.c.status == PENDING
                )
                .values({name: bindparam(f"b_{name}") for name in columns}),
                [{f"b_{name}": value for name, value in vars(u).items()} for u in updates],
            )

    async def clear_health(self, endpoint_ids: Collection[str], now: datetime) -> None:
        """Endpoints that just delivered: no failure streak, no open circuit (one statement;
        rows with nothing to clear are left alone)."""
        await self._conn.execute(
            update(endpoints)
            .where(
                endpoints.c.id.in_(sorted(endpoint_ids)),
                or_(
                    endpoints.c.failure_streak != 0,
                    endpoints.c.failing_since.is_not(None),
                    endpoints.c.circuit_open_until.is_not(None),
                ),
            )
            .values(failure_streak=0, failing_since=None, circuit_open_until=None, updated_at=now)
        )

    async def endpoint_health(self, endpoint_ids: Collection[str]) -> Sequence[Row[Any]]:
        """The endpoints' failure counters, locked until commit (PostgreSQL)."""
        query = (
            select(
                endpoints.c.id,
                endpoints.c.merchant_id,
                endpoints.c.url,
                endpoints.c.disabled_at,
                endpoints.c.failure_streak,
                endpoints.c.failing_since,
            )
            .where(endpoints.c.id.in_(sorted(endpoint_ids)))
            .order_by(endpoints.c.id)
        )
        if self._conn.dialect.name == "postgresql":
            # FOR NO KEY UPDATE: writers queuing deliveries take KEY SHARE locks on these rows
            # (the foreign key) and must not wait for the sender
            query = query.with_for_update(key_share=True)
        return cast(Sequence[Row[Any]], (await self._conn.execute(query)).all())

    async def set_health(
        self,
        endpoint_id: str,
        *,
        failure_streak: int,
        failing_since: datetime | None,
        circuit_open_until: datetime | None,
        now: datetime,
        disabled_reason: str | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "failure_streak": failure_streak,
            "failing_since": failing_since,
            "circuit_open_until": circuit_open_until,
            "updated_at": now,
        }
        if disabled_reason is not None:
            values |= {"disabled_at": now, "disabled_reason": disabled_reason}
        await self._conn.execute(
            update(endpoints).where(endpoints.c.id == endpoint_id).values(**values)
        )

    # -- operators: listing, manual retry, replay ------------------------------------------

    async def page(
        self,
        merchant_id: str | None,
        *,
        status: str | None = None,
        endpoint_id: str | None = None,
        before_id: int | None = None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """Deliveries newest first (by id), with their event; ``before_id`` continues a
        listing after its last id. ``merchant_id`` None: every merchant's (operators)."""
        query = self._viewed(merchant_id)
        if status is not None:
            query = query.where(deliveries.c.status == status)
        if endpoint_id is not None:
            query = query.where(deliveries.c.endpoint_id == endpoint_id)
        if before_id is not None:
            query = query.where(deliveries.c.id < before_id)
        result = await self._conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit))
        return result.all()

    async def get(
        self, merchant_id: str | None, delivery_id: int, *, lock: bool = False
    ) -> Row[Any] | None:
        """One delivery as ``page`` shows it; ``lock`` holds its row until commit."""
        query = self._viewed(merchant_id).where(deliveries.c.id == delivery_id)
        if lock:
            query = query.with_for_update(of=deliveries)
        return (await self._conn.execute(query)).first()

    async def of_deposit(self, merchant_id: str, deposit_id: str) -> Sequence[Row[Any]]:
        """The deliveries of a deposit's events, as ``page`` shows them, oldest first."""
        query = self._viewed(merchant_id).where(events.c.deposit_id == deposit_id)
        result = await self._conn.execute(query.order_by(deliveries.c.id))
        return result.all()

    async def attempts_of(self, delivery_id: int, limit: int) -> Sequence[Row[Any]]:
        """The delivery's latest ``limit`` attempts (one row per URL tried), oldest first."""
        result = await self._conn.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.delivery_id == delivery_id)
            .order_by(delivery_attempts.c.id.desc())
            .limit(limit)
        )
        return list(reversed(result.all()))

    async def make_due(self, delivery_id: int, now: datetime) -> None:
        """Pending and due at ``now``, whatever it was; its attempts keep counting."""
        await self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(status=PENDING, next_attempt_at=now, finished_at=None)
        )

    async def endpoint_state(self, merchant_id: str | None, endpoint_id: str) -> Row[Any] | None:
        """The endpoint's owner and whether it is disabled (or deleted), including deleted
        endpoints; ``merchant_id`` None: any merchant's."""
        query = select(
            endpoints.c.id,
            endpoints.c.merchant_id,
            endpoints.c.disabled_at,
            endpoints.c.disabled_reason,
        ).where(endpoints.c.id == endpoint_id)
        if merchant_id is not None:
            query = query.where(endpoints.c.merchant_id == merchant_id)
        return cast(Row[Any] | None, (await self._conn.execute(query)).first())

    async def replayable_events(
        self,
        merchant_id: str,
        endpoint_id: str,
        *,
        after_seq: int | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        limit: int,
    ) -> Sequence[Row[Any]]:
        """(seq, deposit_id) of the merchant's events the endpoint gets, in seq order: after
        ``after_seq``, or created in ``[created_from, created_to)``.

        The endpoint gets what the live fan-out would queue for it: the types it subscribes
        to (``*``: all), except ``endpoint.test`` events, which go only to the endpoint they
        were queued for.
        """
        subscribed = exists().where(
            endpoint_subscriptions.c.endpoint_id == endpoint_id,
            or_(
                endpoint_subscriptions.c.event_type == events.c.type,
                endpoint_subscriptions.c.event_type == "*",
            ),
        )
        queued_here = exists().where(
            deliveries.c.endpoint_id == endpoint_id, deliveries.c.event_seq == events.c.seq
        )
        query = select(events.c.seq, events.c.deposit_id).where(
            events.c.merchant_id == merchant_id,
            or_(
                and_(events.c.type != "endpoint.test", subscribed),
                and_(events.c.type == "endpoint.test", queued_here),
            ),
        )
        if after_seq is not None:
            query = query.where(events.c.seq > after_seq)
        if created_from is not None:
            query = query.where(events.c.created_at >= created_from)
        if created_to is not None:
            query = query.where(events.c.created_at < created_to)
        result = await self._conn.execute(query.order_by(events.c.seq).limit(limit))
        return cast(Sequence[Row[Any]], result.all())

    async def requeue(
        self,
        endpoint_id: str,
        due: Sequence[tuple[int, str | None, datetime]],
        now: datetime,
        *,
        batch: int = 5000,
    ) -> None:
        """Queue each (event seq, deposit id, due time) for the endpoint afresh.

        A delivery the endpoint already has for the event (pending, delivered or dead) is
        reset: pending, due at the time given, no attempts counted yet; a missing one is
        inserted. The attempt log keeps the earlier attempts.
        """
        stmt: Any = (sqlite_insert if self._conn.dialect.name == "sqlite" else pg_insert)(
            deliveries
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[deliveries.c.endpoint_id, deliveries.c.event_seq],
            set_={
                "status": stmt.excluded.status,
                "attempts": stmt.excluded.attempts,
                "next_attempt_at": stmt.excluded.next_attempt_at,
                "finished_at": None,
            },
        )
        rows = [
            {
                "endpoint_id": endpoint_id,
                "event_seq": seq,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": now,
                "ordering_key": deposit_id,
            }
            for seq, deposit_id, at in due
        ]
        for start in range(0, len(rows), batch):
            await self._conn.execute(stmt, rows[start : start + batch])

    @staticmethod
    def _viewed(merchant_id: str | None) -> Any:
        query = (
            select(
                deliveries.c.id,
                deliveries.c.endpoint_id,
                deliveries.c.event_seq,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.next_attempt_at,
                deliveries.c.last_attempt_at,
                deliveries.c.last_status_code,
                deliveries.c.last_error,
                deliveries.c.finished_at,
                deliveries.c.created_at,
                events.c.id.label("event_id"),
                events.c.type.label("event_type"),
                endpoints.c.merchant_id,
                endpoints.c.disabled_at.label("endpoint_disabled_at"),
                endpoints.c.disabled_reason.label("endpoint_disabled_reason"),
            )
            .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            .join(events, events.c.seq == deliveries.c.event_seq)
        )
        if merchant_id is not None:
            query = query.where(endpoints.c.merchant_id == merchant_id)
        return query
