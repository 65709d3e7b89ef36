"""Every request gets an id: taken from ``X-Request-ID`` when the caller (or a proxy) sent a
sane one, else made here; added to every log line written while serving it
(``logs.REQUEST_ID``) and returned in the response's ``X-Request-ID``."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depositd.ids import new_id
from depositd.logs import REQUEST_ID

_SANE = re.compile(rb"[A-Za-z0-9._:-]{1,100}")


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                header = value if _SANE.fullmatch(value) else None
                break
        if header is None:
            header = new_id("req").encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", header)]
            await send(message)

        token = REQUEST_ID.set(header.decode())
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
