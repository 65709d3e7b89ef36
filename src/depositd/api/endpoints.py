"""The /v1/endpoints routes: webhook endpoints, their secrets and a test delivery."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from depositd.api.deps import Caller, Context, MerchantId
from depositd.api.endpoint_schemas import (
    EndpointIn,
    EndpointList,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecretOut,
    QueuedTestOut,
    RotateIn,
)
from depositd.api.schemas import problem_responses
from depositd.clock import utcnow
from depositd.services import endpoints
from depositd.services.endpoints import EndpointWithSecret

router = APIRouter(
    prefix="/v1", tags=["endpoints"], responses=problem_responses(400, 401, 404, 413, 422)
)

EndpointId = Annotated[str, Path(max_length=40, description="the endpoint's id (end_…)")]


@router.post(
    "/endpoints",
    response_model=EndpointWithSecretOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint; the answer holds its secret, shown only this once",
)
async def create_endpoint(body: EndpointIn, caller: Caller, ctx: Context) -> EndpointWithSecretOut:
    created = await endpoints.create_endpoint(
        ctx.db,
        ctx.delivery,
        caller.merchant_id,
        body.url,
        fallback_urls=body.fallback_urls,
        event_types=body.event_types,
        description=body.description,
        actor=caller.actor,
    )
    return _with_secret(created)


@router.get("/endpoints", response_model=EndpointList, summary="Your webhook endpoints")
async def list_endpoints(merchant_id: MerchantId, ctx: Context) -> EndpointList:
    found = await endpoints.list_endpoints(ctx.db, merchant_id)
    now = utcnow()
    return EndpointList(data=[EndpointOut.of(endpoint, now) for endpoint in found])


@router.get("/endpoints/{endpoint_id}", response_model=EndpointOut, summary="A webhook endpoint")
async def get_endpoint(
    endpoint_id: EndpointId, merchant_id: MerchantId, ctx: Context
) -> EndpointOut:
    found = await endpoints.get_endpoint(ctx.db, merchant_id, endpoint_id)
    return EndpointOut.of(found, utcnow())


@router.patch(
    "/endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="Change an endpoint's URLs, event types or description",
)
async def update_endpoint(
    endpoint_id: EndpointId, body: EndpointPatch, caller: Caller, ctx: Context
) -> EndpointOut:
    changed = await endpoints.update_endpoint(
        ctx.db,
        ctx.delivery,
        caller.merchant_id,
        endpoint_id,
        url=body.url,
        fallback_urls=body.fallback_urls,
        event_types=body.event_types,
        description=body.description,
        actor=caller.actor,
    )
    return EndpointOut.of(changed, utcnow())


@router.delete(
    "/endpoints/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an endpoint; its pending deliveries are dropped, never sent",
)
async def delete_endpoint(endpoint_id: EndpointId, caller: Caller, ctx: Context) -> None:
    await endpoints.delete_endpoint(ctx.db, caller.merchant_id, endpoint_id, actor=caller.actor)


@router.post(
    "/endpoints/{endpoint_id}/disable",
    response_model=EndpointOut,
    summary="Stop sending to an endpoint (queued deliveries wait until it is enabled)",
)
async def disable_endpoint(endpoint_id: EndpointId, caller: Caller, ctx: Context) -> EndpointOut:
    found = await endpoints.disable_endpoint(
        ctx.db, caller.merchant_id, endpoint_id, actor=caller.actor
    )
    return EndpointOut.of(found, utcnow())


@router.post(
    "/endpoints/{endpoint_id}/enable",
    response_model=EndpointOut,
    summary="Send to an endpoint again, its failure count reset and its circuit closed",
)
async def enable_endpoint(endpoint_id: EndpointId, caller: Caller, ctx: Context) -> EndpointOut:
    found = await endpoints.enable_endpoint(
        ctx.db, caller.merchant_id, endpoint_id, actor=caller.actor
    )
    return EndpointOut.of(found, utcnow())


@router.post(
    "/endpoints/{endpoint_id}/rotate-secret",
    response_model=EndpointWithSecretOut,
    summary="Give an endpoint a new secret (shown only this once); the old one signs too"
    " until previous_secret_until",
)
async def rotate_secret(
    endpoint_id: EndpointId,
    caller: Caller,
    ctx: Context,
    body: RotateIn | None = None,
) -> EndpointWithSecretOut:
    hours = ctx.delivery.rotation_grace_hours
    if body is not None and body.grace_hours is not None:
        hours = body.grace_hours
    rotated = await endpoints.rotate_secret(
        ctx.db, caller.merchant_id, endpoint_id, timedelta(hours=hours), actor=caller.actor
    )
    return _with_secret(rotated)


@router.post(
    "/endpoints/{endpoint_id}/test",
    response_model=QueuedTestOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: problem_responses(409)[409]},
    summary="Queue an endpoint.test event for this endpoint only",
)
async def send_test_event(
    endpoint_id: EndpointId, merchant_id: MerchantId, ctx: Context
) -> QueuedTestOut:
    queued = await endpoints.send_test_event(ctx.db, merchant_id, endpoint_id)
    return QueuedTestOut(event_id=queued.event_id, seq=queued.seq)


def _with_secret(found: EndpointWithSecret) -> EndpointWithSecretOut:
    shown = EndpointOut.of(found.endpoint, utcnow())
    return EndpointWithSecretOut(**shown.model_dump(), secret=found.secret)
