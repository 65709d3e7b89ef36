"""The sender's HTTP side: signed bodies posted through the SSRF-guarded session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from depositd.config import DeliveryConfig
from depositd.delivery import ssrf


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    #: the start of the body, bounded
    excerpt: str


class Poster(Protocol):
    """Posts one signed body; raises on no usable answer (refused, timeout, unsafe, ...)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer: ...

    async def close(self) -> None: ...


class HttpPoster:
    """One pooled keep-alive session that connects only where the policy allows."""

    def __init__(self, session: aiohttp.ClientSession, *, excerpt_bytes: int = 512) -> None:
        self._session = session
        self._excerpt_bytes = excerpt_bytes

    @classmethod
    def for_policy(cls, policy: DeliveryConfig) -> HttpPoster:
        """Call inside the running event loop."""
        return cls(ssrf.new_session(policy), excerpt_bytes=policy.response_excerpt_bytes)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        reply = await ssrf.post(
            self._session, url, body, headers, excerpt_bytes=self._excerpt_bytes
        )
        headers = {name.lower(): value for name, value in reply.headers.items()}
        return Answer(reply.status, headers, reply.excerpt.decode("utf-8", "replace"))

    async def close(self) -> None:
        await self._session.close()
