"""WebSocket ``/v1/ws?after=<seq>``: a merchant's event log replayed from a cursor, then live.

Protocol (every message is one JSON text frame):

* **Authenticate** with ``Authorization: Bearer <api key>`` on the upgrade request, or —
  browsers cannot set that header — with a first message ``{"type": "auth", "api_key":
  "<api key>"}`` within ``StreamSettings.auth_timeout_seconds`` (5 s by default). The key is
  never taken from the URL, where proxies and logs would keep it. A missing, malformed,
  unknown or revoked key closes the connection with code **4401** and a reason.
* **Cursor**: ``after`` is the last seq the client has (default 0, the whole log), or
  ``latest`` for only what commits from now on. Anything else closes with **1008**.
* The server then sends ``{"type": "ready", "seq": <cursor>}`` — with ``after=latest`` that
  names the seq the stream starts after — and then every event of the merchant after the
  cursor, in seq order, each exactly as ``GET /v1/events`` lists it (``id``, ``seq``,
  ``type``, ``timestamp``, ``data``): the log first, then events as they commit.
* Every ``heartbeat_seconds`` (15 s by default) it sends ``{"type": "heartbeat", "seq":
  <last seq sent>}``. Messages from the client after authentication are ignored.
* To resume, reconnect with ``after=`` the last seq received (or that a heartbeat or close
  reason named): nothing is skipped and nothing is sent twice.
* The server closes with **1013** ``too slow: more than N events behind; resume with
  after=<seq>`` when a client reads slower than its events arrive and its backlog is full,
  with **1011** ``internal error; resume with after=<seq>``, and with **1012** when it shuts
  down (uvicorn sends that one, without a reason): each time the client reconnects with
  the last seq it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from depositd.api.deps import AppContext
from depositd.delivery.hub import EventHub, StreamClosed, StreamSettings, Subscription, TooSlow
from depositd.jsontext import dump_json
from depositd.services.merchants import authenticate

log = structlog.get_logger("depositd.api")

router = APIRouter()

#: the key was missing, malformed, unknown or revoked (an HTTP 401 in WebSocket terms)
CLOSE_UNAUTHORIZED = 4401
#: the request broke the protocol (a bad ``after``)
CLOSE_POLICY = 1008
#: something failed on our side
CLOSE_INTERNAL = 1011
#: the server is going away; reconnect (to this or another replica)
CLOSE_RESTART = 1012
#: the client fell too far behind; reconnect with ``after``
CLOSE_TOO_SLOW = 1013

AUTH_HELP = 'send \'Authorization: Bearer <api key>\' or first {"type": "auth", "api_key": ...}'


@router.websocket("/v1/ws", name="event_stream")
async def event_stream(websocket: WebSocket) -> None:
    """The merchant's events after ``after``: replayed from the log, then live."""
    hub: EventHub = websocket.app.state.event_hub
    ctx: AppContext = websocket.app.state.ctx
    # accepted first: a refusal before the handshake could carry no close code or reason
    await websocket.accept()
    try:
        after = _cursor(websocket.query_params.get("after"))
    except ValueError as exc:
        await _close(websocket, CLOSE_POLICY, str(exc))
        return
    merchant_id = await _authenticate(websocket, ctx, hub.settings)
    if merchant_id is None:
        return
    try:
        subscription = await hub.subscribe(merchant_id, after)
    except StreamClosed:
        await _close(websocket, CLOSE_RESTART, "server shutting down")
        return
    try:
        await _serve(websocket, hub, subscription)
    finally:
        subscription.close()


def _cursor(raw: str | None) -> int | None:
    """``after`` as a seq; None for ``latest``."""
    if raw is None:
        return 0
    if raw == "latest":
        return None
    if raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) <= 2**62:
        return int(raw)
    raise ValueError("after must be a seq (a whole number from 0) or 'latest'")


async def _authenticate(
    websocket: WebSocket, ctx: AppContext, settings: StreamSettings
) -> str | None:
    """The merchant whose key the client presented; None once it has been refused."""
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            await _close(websocket, CLOSE_UNAUTHORIZED, AUTH_HELP)
            return None
    else:
        found = await _key_from_first_message(websocket, settings.auth_timeout_seconds)
        if found is None:
            return None
        secret = found
    holder = await authenticate(ctx.db, secret.strip())
    if holder is None:
        await _close(websocket, CLOSE_UNAUTHORIZED, "the API key is unknown or revoked")
        return None
    return holder.merchant_id


async def _key_from_first_message(websocket: WebSocket, patience: float) -> str | None:
    try:
        async with asyncio.timeout(patience):
            message = await websocket.receive()
    except TimeoutError:
        reason = f"no API key within {patience:g} s: {AUTH_HELP}"
        await _close(websocket, CLOSE_UNAUTHORIZED, reason)
        return None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        body = json.loads(message.get("text") or "")
    except ValueError:
        body = None
    if (
        not isinstance(body, dict)
        or body.get("type") != "auth"
        or not isinstance(body.get("api_key"), str)
    ):
        await _close(websocket, CLOSE_UNAUTHORIZED, AUTH_HELP)
        return None
    key: str = body["api_key"]
    return key


async def _serve(websocket: WebSocket, hub: EventHub, subscription: Subscription) -> None:
    """Stream until the client leaves or the stream ends; then close with the reason."""
    sending = asyncio.create_task(_send_events(websocket, hub, subscription))
    leaving = asyncio.create_task(_until_disconnect(websocket))
    await asyncio.wait({sending, leaving}, return_when=asyncio.FIRST_COMPLETED)
    if not sending.done():
        # the client went away: end the sender at its next step instead of cancelling it in
        # the middle of a database read
        subscription.close()
    try:
        closing = await sending
    except WebSocketDisconnect:
        closing = None
    except Exception:
        log.exception("event_stream_failed", merchant=subscription.merchant_id)
        closing = (CLOSE_INTERNAL, f"internal error; resume with after={subscription.last_seq}")
    if closing is not None and not leaving.done():
        await _close(websocket, *closing)
    leaving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leaving


async def _send_events(
    websocket: WebSocket, hub: EventHub, subscription: Subscription
) -> tuple[int, str] | None:
    """Send events and heartbeats; the close code and reason once the stream must end."""
    await websocket.send_text(dump_json({"type": "ready", "seq": subscription.last_seq}))
    loop = asyncio.get_running_loop()
    every = hub.settings.heartbeat_seconds
    beat_at = loop.time() + every
    while True:
        try:
            batch = await subscription.next_events(max(0.0, beat_at - loop.time()))
        except TooSlow as exc:
            reason = f"too slow: {exc}; resume with after={subscription.last_seq}"
            log.info("event_stream_too_slow", merchant=subscription.merchant_id, reason=reason)
            return CLOSE_TOO_SLOW, reason
        except StreamClosed:
            if hub.closed:
                return (
                    CLOSE_RESTART,
                    f"server shutting down; resume with after={subscription.last_seq}",
                )
            return None
        for event in batch:
            await websocket.send_text(dump_json(event.envelope()))
        if loop.time() >= beat_at:
            await websocket.send_text(
                dump_json({"type": "heartbeat", "seq": subscription.last_seq})
            )
            beat_at = loop.time() + every


async def _until_disconnect(websocket: WebSocket) -> None:
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass  # nothing a client says after authenticating changes the stream


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # the client may be gone already: then there is nobody to tell
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code, reason)
