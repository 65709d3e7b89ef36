"""The /v1 delivery routes: webhook deliveries, their attempt logs, retry and replay."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from depositd.api.deps import Caller, Context, MerchantId
from depositd.api.routes import Cursor, Limit
from depositd.api.schemas import Timestamp, problem_responses
from depositd.services import deliveries
from depositd.services.deliveries import (
    DEFAULT_REPLAY_RATE,
    MAX_REPLAY_EVENTS,
    MAX_REPLAY_RATE,
    MIN_REPLAY_RATE,
    DeliveryStatus,
)

router = APIRouter(
    prefix="/v1", tags=["deliveries"], responses=problem_responses(400, 401, 404, 413, 422)
)

DeliveryId = Annotated[int, Path(ge=1, lt=2**63, description="the delivery's id")]
EndpointId = Annotated[str, Path(max_length=40, description="the endpoint's id (end_…)")]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    endpoint_id: str
    #: the event delivered; its id is the ``webhook-id`` of every send
    event_id: str
    event_seq: int
    event_type: str
    #: pending (due at ``next_attempt_at``), delivered, or dead (out of attempts)
    status: DeliveryStatus
    #: attempts made so far
    attempts: int
    #: pending only: when the next attempt is due
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None
    created_at: datetime


class AttemptOut(BaseModel):
    """One request: an attempt tries the primary URL, then each fallback URL in turn."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int
    url: str
    #: the HTTP status, or null when there was no answer (see ``error_class``)
    status_code: int | None
    latency_ms: int
    #: the start of the response body, bounded
    response_excerpt: str | None
    #: timeout, connect, ssrf_blocked, http_status, redirect, ...
    error_class: str | None
    error: str | None
    created_at: datetime


class DeliveryDetail(DeliveryOut):
    #: the latest attempts, oldest first
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    #: pass back as ``cursor`` for the next page; null on the last page
    next_cursor: str | None


class ReplayIn(BaseModel):
    """Either ``after_seq``, or ``from`` and ``to``."""

    model_config = ConfigDict(extra="forbid")

    after_seq: int | None = Field(
        None, ge=0, lt=2**63, description="re-send the events after this seq"
    )
    from_: Timestamp | None = Field(
        None, alias="from", description="re-send the events created from this time ..."
    )
    to: Timestamp | None = Field(None, description="... until (not including) this time")
    rate_per_second: float = Field(
        DEFAULT_REPLAY_RATE,
        ge=MIN_REPLAY_RATE,
        le=MAX_REPLAY_RATE,
        description="replayed deliveries due per second, so live ones keep going out between",
    )


class ReplayOut(BaseModel):
    """What the replay queued; the sender sends it from now until ``finishes_by``."""

    model_config = ConfigDict(from_attributes=True)

    queued: int
    first_seq: int | None
    last_seq: int | None
    #: when the last replayed delivery is due
    finishes_by: datetime


@router.get("/deliveries", response_model=DeliveryPage, summary="Webhook deliveries, newest first")
async def list_deliveries(
    merchant_id: MerchantId,
    ctx: Context,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    endpoint_id: Annotated[
        str | None, Query(max_length=40, description="only this endpoint's")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> DeliveryPage:
    page = await deliveries.list_deliveries(
        ctx.db, merchant_id, status=status_, endpoint_id=endpoint_id, cursor=cursor, limit=limit
    )
    return DeliveryPage(
        data=[DeliveryOut.model_validate(delivery) for delivery in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    summary="A webhook delivery with its attempt log",
)
async def get_delivery(
    delivery_id: DeliveryId, merchant_id: MerchantId, ctx: Context
) -> DeliveryDetail:
    found = await deliveries.get_delivery(ctx.db, merchant_id, delivery_id)
    return DeliveryDetail(
        **DeliveryOut.model_validate(found.delivery).model_dump(),
        attempt_log=[AttemptOut.model_validate(attempt) for attempt in found.attempt_log],
    )


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: problem_responses(409)[409]},
    summary="Send a delivery now, whatever its status (a dead one gets one more attempt)",
)
async def retry_delivery(delivery_id: DeliveryId, caller: Caller, ctx: Context) -> DeliveryOut:
    retried = await deliveries.retry_delivery(
        ctx.db, caller.merchant_id, delivery_id, actor=caller.actor
    )
    return DeliveryOut.model_validate(retried)


@router.post(
    "/endpoints/{endpoint_id}/replay",
    response_model=ReplayOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: problem_responses(409)[409]},
    summary=f"Re-send an endpoint's events after a seq or in a time range (at most"
    f" {MAX_REPLAY_EVENTS:,} at once), spread out at a rate",
)
async def replay_endpoint(
    endpoint_id: EndpointId, body: ReplayIn, caller: Caller, ctx: Context
) -> ReplayOut:
    replayed = await deliveries.replay_endpoint(
        ctx.db,
        caller.merchant_id,
        endpoint_id,
        after_seq=body.after_seq,
        created_from=body.from_,
        created_to=body.to,
        rate_per_second=body.rate_per_second,
        actor=caller.actor,
    )
    return ReplayOut.model_validate(replayed)
