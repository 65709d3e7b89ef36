"""Every request gets an id: taken from ``X-Request-ID`` when the caller (or a proxy) sent a
sane one, else made here; bound to every log line written while serving it and returned in
the response's ``X-Request-ID``."""

from __future__ import annotations

import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depositd.ids import new_id

_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,100}")


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = given if given is not None and _SANE.fullmatch(given) else None
        header = request_id or new_id("req").encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", header)]
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=header.decode()):
            await self.app(scope, receive, send_with_id)
