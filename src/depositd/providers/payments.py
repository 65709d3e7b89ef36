"""Starting card and bank transfer payments at a payment provider (PSP).

A fiat deposit order needs a payment at the provider before the user can pay: a checkout page
for a card, an account and a reference to quote for a bank transfer. ``PaymentGateway`` is
that one call; ``HttpPaymentGateway`` makes it against a provider's JSON API as configured
(``[providers.<name>.payments]``). What happens to the payment afterwards arrives the way
every provider deposit does: as a signed callback to ``/v1/callbacks/<name>`` whose deposit
id is the payment's id, recorded through the same engine.

The order id travels as the ``Idempotency-Key``: a retried request returns the payment the
first one created, never a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from depositd.config import Config, PaymentsApiConfig
from depositd.domain.orders import OrderMethod, Payment
from depositd.providers.mapping import MAX_FIELD_CHARS, resolve

#: the longest answer read from a provider
_MAX_ANSWER_BYTES = 65536


@dataclass(frozen=True)
class PaymentRequest:
    """What the provider needs to start a payment for one order."""

    #: our order id: the provider's reference for us, and the idempotency key
    order_id: str
    method: OrderMethod
    #: minor units (cents)
    amount: int
    #: ISO 4217 code (the asset's symbol)
    currency: str
    #: the merchant's id for the user; callbacks carry it back in ``metadata.user``
    customer: str
    expires_at: datetime

    def body(self) -> dict[str, Any]:
        return {
            "reference": self.order_id,
            "method": self.method.value,
            "amount": self.amount,
            "currency": self.currency,
            "customer": self.customer,
            "metadata": {"order": self.order_id, "user": self.customer},
            "expires_at": self.expires_at.isoformat(),
        }


class PaymentUnavailable(Exception):
    """The provider did not start the payment (unreachable, an error status, an odd answer)."""


class PaymentGateway(Protocol):
    async def create_payment(self, request: PaymentRequest) -> Payment: ...

    async def close(self) -> None: ...


class HttpPaymentGateway:
    """A payment provider's JSON API, as ``PaymentsApiConfig`` describes it."""

    def __init__(self, provider: str, api: PaymentsApiConfig) -> None:
        self.provider, self._api = provider, api
        self._session: aiohttp.ClientSession | None = None

    async def create_payment(self, request: PaymentRequest) -> Payment:
        api = self._api
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {
            "idempotency-key": request.order_id,
            **token_headers(api.token_header, api.token),
        }
        timeout = aiohttp.ClientTimeout(total=api.timeout_seconds)
        try:
            async with self._session.post(
                api.url, json=request.body(), headers=headers, timeout=timeout
            ) as response:
                body = await response.content.read(_MAX_ANSWER_BYTES + 1)
                if response.status not in (200, 201):
                    raise PaymentUnavailable(
                        f"{self.provider} answered HTTP {response.status}: {_excerpt(body)}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PaymentUnavailable(
                f"{self.provider} unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc
        if len(body) > _MAX_ANSWER_BYTES:
            raise PaymentUnavailable(f"{self.provider} answered with more than 64 KiB")
        try:
            answer = json.loads(body)
        except ValueError:
            raise PaymentUnavailable(f"{self.provider} answered with no JSON") from None
        return self._payment(answer)

    def _payment(self, answer: Any) -> Payment:
        api = self._api
        reference = resolve(answer, api.reference)
        if not isinstance(reference, str | int) or isinstance(reference, bool):
            raise PaymentUnavailable(f"{self.provider} answered without a payment id at "
                                     f"{api.reference}")  # fmt: skip
        reference = str(reference)
        if not reference or len(reference) > MAX_FIELD_CHARS:
            raise PaymentUnavailable(f"{self.provider} answered with an unusable payment id")
        redirect = None if api.redirect_url is None else resolve(answer, api.redirect_url)
        instructions = None if api.instructions is None else resolve(answer, api.instructions)
        return Payment(
            provider=self.provider,
            reference=reference,
            redirect_url=redirect if isinstance(redirect, str) and redirect else None,
            instructions=instructions if isinstance(instructions, dict) else None,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def token_headers(header: str | None, token: str | None) -> dict[str, str]:
    """The header that carries a provider API token: ``Authorization: Bearer <token>``, or the
    token as it is in any other header."""
    if not header or not token:
        return {}
    return {header: f"Bearer {token}" if header.lower() == "authorization" else token}


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").replace("\n", " ")


class PaymentGateways:
    """The configured payment providers: which one takes a merchant's payments of a method."""

    def __init__(self, gateways: Mapping[tuple[str, OrderMethod], PaymentGateway]) -> None:
        self._by_method = dict(gateways)

    @classmethod
    def from_config(cls, config: Config) -> PaymentGateways:
        gateways: dict[tuple[str, OrderMethod], PaymentGateway] = {}
        for name, provider in config.providers.items():
            if provider.payments is None:
                continue
            gateway = HttpPaymentGateway(name, provider.payments)
            for method in provider.payments.methods:
                gateways[provider.merchant, OrderMethod(method)] = gateway
        return cls(gateways)

    def get(self, merchant_id: str, method: OrderMethod) -> PaymentGateway | None:
        return self._by_method.get((merchant_id, method))

    async def close(self) -> None:
        for gateway in {id(g): g for g in self._by_method.values()}.values():
            await gateway.close()
