"""``POST /v1/callbacks/{provider}``: deposit callbacks from upstream providers.

This is the hottest route (a provider may post thousands a second) and the simplest: raw
bytes in, a stored row, a fixed acknowledgement out. It is served by ``CallbackIngress``, a
plain ASGI layer in front of the FastAPI app, which skips the framework's routing, dependency
solving and middleware (those cost several times the callback's own work). The route is still
described in the OpenAPI document (``document_callbacks``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depositd.api.deps import AppContext
from depositd.api.problems import MEDIA_TYPE, Problem
from depositd.services.callbacks import (
    CallbackRejected,
    client_address,
    process_accepted,
    receive_callback,
)
from depositd.services.callbacks import Request as CallbackRequest

log = structlog.get_logger("depositd.api")

PREFIX = "/v1/callbacks/"
#: the most bytes read from a body of unknown size before giving up on it
_READ_CAP = 16 * 1024 * 1024
_LONGEST_PROVIDER = 200


class CallbackIngress:
    """ASGI: serves ``POST /v1/callbacks/{provider}`` itself and passes the rest to ``app``."""

    def __init__(self, app: ASGIApp, context: Callable[[], AppContext]) -> None:
        self.app = app
        self._context = context
        #: inline processing of accepted callbacks (held so they are not collected mid-way)
        self._processing: set[asyncio.Task[Any]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        provider = path[len(PREFIX) :]
        try:
            if scope["method"] != "POST":
                raise Problem(405, "method-not-allowed", "Method Not Allowed",
                              headers={"allow": "POST"})  # fmt: skip
            if not provider or "/" in provider or len(provider) > _LONGEST_PROVIDER:
                raise Problem(404, "not-found", "Not Found")
            await self._receive(self._context(), scope, receive, send, provider)
        except Problem as problem:
            await _send_problem(send, problem, path)
        except Exception:  # a bug or an outage: logged, answered without details
            log.exception("unhandled error", path=path)
            await _send_problem(send, Problem(500, "internal-error", "Internal error"), path)

    async def _receive(
        self, ctx: AppContext, scope: Scope, receive: Receive, send: Send, provider: str
    ) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        configured = ctx.providers.get(provider)
        limit = configured.max_body_bytes if configured is not None else ctx.max_body_bytes
        body, size = await _read_body(receive, headers, limit)
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        try:
            acknowledged = await receive_callback(
                ctx.callbacks,
                ctx.providers,
                ctx.assets,
                CallbackRequest(
                    provider=provider,
                    source_ip=client_address(peer, headers, ctx.trusted_proxies),
                    headers=headers,
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
        ack = acknowledged.ack
        await _send(send, ack.status, ack.content_type, ack.body.encode())
        if acknowledged.accepted is not None and ctx.process_callbacks_inline:
            # stored: a failure here leaves the callback to the workers' sweep
            task = asyncio.create_task(
                process_accepted(
                    ctx.callbacks, ctx.recorder, [acknowledged.accepted], verifier=ctx.verifier
                )
            )
            self._processing.add(task)
            task.add_done_callback(self._processed)

    def _processed(self, task: asyncio.Task[Any]) -> None:
        self._processing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("inline callback processing failed; the sweep will retry",
                        error=repr(task.exception()))  # fmt: skip


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> tuple[bytes, int]:
    """The body (its first ``limit`` bytes when larger) and its size.

    Reading stops once past the limit when the length was declared; a body of undeclared
    length is read on (up to a hard cap) to learn its size. Only ``limit`` bytes are kept.
    """
    declared_text = headers.get("content-length", "")
    declared = int(declared_text) if declared_text.isdigit() else None
    kept = bytearray()
    size = 0
    more = True
    while more:
        message: Message = await receive()
        if message["type"] != "http.request":
            break  # the client went away
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if len(kept) <= limit:
            kept += chunk[: limit + 1 - len(kept)]
        if size > limit and (declared is not None or size > _READ_CAP):
            break
    return bytes(kept[:limit]), max(size, declared or 0)


async def _send(
    send: Send, status: int, content_type: str, body: bytes, extra: dict[str, str] | None = None
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_problem(send: Send, problem: Problem, path: str) -> None:
    body = json.dumps(problem.document(path)).encode()
    await _send(send, problem.status, MEDIA_TYPE, body, problem.headers)


def document_callbacks(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the route ``CallbackIngress`` serves to an OpenAPI document."""
    problem = {MEDIA_TYPE: {"schema": {"type": "object"}}}
    refused = {
        "400": "malformed JSON (`malformed_json`, `body_not_json`)",
        "401": "no or a wrong signature, or a timestamp outside the window",
        "403": "the source address is not allowed (`source_ip_not_allowed`)",
        "404": "no such provider (`unknown_provider`)",
        "413": "the body is larger than the provider's limit (`body_too_large`)",
        "422": "the payload lacks what the mapping needs (`field_missing`, ...)",
    }
    responses: dict[str, Any] = {
        "200": {
            "description": "stored; the body is the acknowledgement the provider expects",
            "content": {"application/json": {}, "text/plain": {}},
        }
    }
    for status, description in refused.items():
        responses[status] = {"description": description, "content": problem}
    schema.setdefault("paths", {})["/v1/callbacks/{provider}"] = {
        "post": {
            "tags": ["callbacks"],
            "summary": "Receive a deposit callback from an upstream provider",
            "description": (
                "The provider's signature, source address, timestamp and payload are checked"
                " as its configuration says; the request is stored whatever the outcome, and"
                " acknowledged (with the answer the provider expects) only once it is stored."
                " A replayed event is acknowledged again and has no further effect. A refused"
                " callback gets a problem response whose `code` says why."
            ),
            "operationId": "receive_callback",
            "parameters": [
                {
                    "name": "provider",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "maxLength": _LONGEST_PROVIDER},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": responses,
        }
    }
    return schema
