"""``POST /v1/callbacks/{provider}``: deposit callbacks from upstream providers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Request
from fastapi.responses import Response

from depositd.api.deps import AppContext, Context
from depositd.api.problems import Problem
from depositd.services.callbacks import (
    CallbackRejected,
    IpNetwork,
    address_within,
    receive_callback,
)
from depositd.services.callbacks import Request as CallbackRequest
from depositd.services.callbacks import process_callbacks as process

PREFIX = "/v1/callbacks/"
router = APIRouter(prefix="/v1", tags=["callbacks"])

#: the most bytes read from a body of unknown size before giving up on it
_READ_CAP = 16 * 1024 * 1024


@router.post(
    "/callbacks/{provider}",
    summary="Receive a deposit callback from an upstream provider",
    description=(
        "The provider's signature, source address, timestamp and payload are checked as its "
        "configuration says; the request is stored whatever the outcome, and acknowledged "
        "(with the answer the provider expects) only once it is stored. A replayed event is "
        "acknowledged again and has no further effect. A refused callback gets a problem "
        "response whose `code` says why."
    ),
    responses={
        200: {"description": "stored; the body is the provider's expected acknowledgement"},
        400: {"description": "malformed JSON"},
        401: {"description": "missing or wrong signature, or a timestamp outside the window"},
        403: {"description": "the source address is not allowed"},
        404: {"description": "no such provider"},
        413: {"description": "the body is larger than the provider's limit"},
        422: {"description": "the payload lacks what the mapping needs"},
    },
)
async def receive(
    provider: Annotated[str, Path(max_length=200)],
    request: Request,
    background: BackgroundTasks,
    ctx: Context,
) -> Response:
    configured = ctx.providers.get(provider)
    limit = configured.max_body_bytes if configured is not None else ctx.max_body_bytes
    body, size = await _read_body(request, limit)
    try:
        acknowledged = await receive_callback(
            ctx.db,
            ctx.providers,
            ctx.assets,
            CallbackRequest(
                provider=provider,
                source_ip=client_address(request, ctx.trusted_proxies),
                headers={name.lower(): value for name, value in request.headers.items()},
                body=body,
                body_bytes=size,
            ),
        )
    except CallbackRejected as exc:
        raise Problem(
            exc.status,
            exc.code.replace("_", "-"),
            "Callback refused",
            str(exc),
            code=exc.code,
            callback_id=exc.callback_id,
        ) from None
    if acknowledged.replay_of is None and ctx.process_callbacks_inline:
        background.add_task(_process_now, ctx, acknowledged.callback_id)
    ack = acknowledged.ack
    return Response(ack.body, status_code=ack.status, media_type=ack.content_type)


async def _process_now(ctx: AppContext, callback_id: str) -> None:
    # the callback is stored: a failure here leaves it to the workers' sweep
    await process(ctx.db, ctx.recorder, verifier=ctx.verifier, ids=[callback_id])


async def _read_body(request: Request, limit: int) -> tuple[bytes, int]:
    """The body (its first ``limit`` bytes when larger) and its size.

    Reading stops once past the limit when the length was declared; a body of undeclared
    length is read on (up to a hard cap) to learn its size. Only ``limit`` bytes are kept.
    """
    header = request.headers.get("content-length", "")
    declared = int(header) if header.isdigit() else None
    kept = bytearray()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if len(kept) <= limit:
            kept += chunk[: limit + 1 - len(kept)]
        if size > limit and (declared is not None or size > _READ_CAP):
            break
    return bytes(kept[:limit]), max(size, declared or 0)


def client_address(request: Request, trusted_proxies: Sequence[IpNetwork]) -> str:
    """The request's source: the peer, or behind trusted proxies the last address in
    ``X-Forwarded-For`` that is not one of them."""
    peer = request.client.host if request.client is not None else "unknown"
    if not trusted_proxies or not address_within(peer, trusted_proxies):
        return peer
    forwarded = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(forwarded):
        if not address_within(hop, trusted_proxies):
            return hop
    return peer
