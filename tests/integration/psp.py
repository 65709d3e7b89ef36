"""A small local payment provider (PSP) that behaves like a real one, for card and bank tests.

Like Stripe or Adyen it takes ``POST /v1/payments`` with a bearer token and an
``Idempotency-Key`` (a retry returns the payment the first request created), answers with the
payment's id and what the payer needs — a checkout page for a card, an account and a
reference to quote for a bank transfer — and later tells the merchant what happened through a
signed webhook (``stripe-signature: t=…,v1=…``, signed by the ``stripe`` package), retried
until it is acknowledged with a 2xx. ``GET /v1/payments/{id}`` answers status queries.

The payer's side is simulated through its public pages: ``POST /checkout/{id}`` with a card
number (Stripe's test cards: 4242… succeeds, 4000000000009995 is declined for insufficient
funds, 4000000000000069 has expired), and ``POST /bank/incoming`` for a transfer arriving
with a reference.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import stripe
from aiohttp import web

from ..conftest import free_port

#: Stripe's test card numbers and what they do
TEST_CARDS = {
    "4242424242424242": None,
    "4000000000009995": "insufficient_funds",
    "4000000000000069": "expired_card",
    "4000000000000002": "card_declined",
}
CARD_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "card_declined": "Your card was declined.",
}


@dataclass
class PspPayment:
    id: str
    method: str
    amount: int
    currency: str
    metadata: dict[str, str]
    status: str = "requires_payment"
    failure_code: str | None = None
    failure_message: str | None = None
    #: bank transfers: what the payer must quote
    bank_reference: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "payment",
            "method": self.method,
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "metadata": self.metadata,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
        }


@dataclass
class LocalPsp:
    port: int
    api_token: str
    webhook_secret: str
    #: where webhooks go (the merchant's depositd)
    webhook_url: str = ""
    payments: dict[str, PspPayment] = field(default_factory=dict)
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    #: every create request's headers and body, in order
    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    #: (event type, HTTP status or error) of every webhook attempt
    deliveries: list[tuple[str, str]] = field(default_factory=list)
    #: answer create requests with this status instead (a PSP outage)
    failing_with: int | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def payments_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/payments"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- the merchant's API -----------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("authorization") != f"Bearer {self.api_token}":
            return web.json_response({"error": {"type": "authentication_error"}}, status=401)
        if self.failing_with is not None:
            return web.json_response({"error": {"type": "api_error"}}, status=self.failing_with)
        try:
            body = await request.json()
            method, amount = body["method"], body["amount"]
            currency, metadata = body["currency"], body["metadata"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"type": "invalid_request_error"}}, status=400)
        self.requests.append(({k.lower(): v for k, v in request.headers.items()}, body))
        key = request.headers.get("idempotency-key")
        if key is not None and key in self.by_idempotency_key:
            return self._answer(self.payments[self.by_idempotency_key[key]])
        if method not in ("card", "bank_transfer") or not isinstance(amount, int) or amount <= 0:
            return web.json_response({"error": {"type": "invalid_request_error"}}, status=400)
        payment = PspPayment(
            id="pay_" + secrets.token_hex(8),
            method=method,
            amount=amount,
            currency=currency,
            metadata=dict(metadata),
        )
        if method == "bank_transfer":
            payment.bank_reference = "RF" + secrets.token_hex(5).upper()
            payment.status = "awaiting_transfer"
        self.payments[payment.id] = payment
        if key is not None:
            self.by_idempotency_key[key] = payment.id
        return self._answer(payment, status=201)

    def _answer(self, payment: PspPayment, status: int = 200) -> web.Response:
        answer = payment.document()
        if payment.method == "card":
            answer["redirect_url"] = f"{self.base_url}/checkout/{payment.id}"
        else:
            answer["instructions"] = {
                "iban": "GB33BUKB20201555555555",
                "bic": "BUKBGB22",
                "account_holder": "Local PSP Ltd client account",
                "reference": payment.bank_reference,
                "amount": payment.amount,
                "currency": payment.currency,
            }
        return web.json_response(answer, status=status)

    async def status(self, request: web.Request) -> web.Response:
        if request.headers.get("authorization") != f"Bearer {self.api_token}":
            return web.json_response({"error": {"type": "authentication_error"}}, status=401)
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None:
            return web.json_response({"error": {"type": "not_found"}}, status=404)
        return web.json_response(self._event(payment))

    # --- the payer's side -------------------------------------------------------------------

    async def checkout(self, request: web.Request) -> web.Response:
        payment = self.payments.get(request.match_info["payment_id"])
        if payment is None or payment.method != "card":
            return web.json_response({"error": "no such checkout"}, status=404)
        if payment.status != "requires_payment":
            return web.json_response({"error": "already paid"}, status=409)
        card = (await request.json()).get("card_number", "")
        if card not in TEST_CARDS:
            return web.json_response({"error": "unknown test card"}, status=400)
        decline = TEST_CARDS[card]
        if decline is None:
            payment.status = "succeeded"
        else:
            payment.status = "failed"
            payment.failure_code, payment.failure_message = decline, CARD_MESSAGES[decline]
        self._notify(payment)
        return web.json_response({"status": payment.status})

    async def bank_incoming(self, request: web.Request) -> web.Response:
        """A transfer reached the PSP's client account quoting ``reference``."""
        body = await request.json()
        found = [p for p in self.payments.values() if p.bank_reference == body["reference"]]
        if not found:
            return web.json_response({"error": "reference unknown: returned to sender"}, 404)
        payment = found[0]
        payment.amount = int(body["amount"])  # what arrived is what counts
        payment.status = "processing"
        self._notify(payment)  # a bank transfer is seen before it settles
        payment.status = "succeeded"
        self._notify(payment)
        return web.json_response({"status": payment.status})

    # --- webhooks ---------------------------------------------------------------------------

    def _event(self, payment: PspPayment) -> dict[str, Any]:
        return {
            "id": f"evt_{payment.id}_{payment.status}",
            "type": f"payment.{payment.status}",
            "created": int(time.time()),
            "data": {"object": payment.document()},
        }

    def _notify(self, payment: PspPayment) -> None:
        event = self._event(payment)
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: dict[str, Any]) -> None:
        """Post the webhook until it is acknowledged (a few quick tries, as tests are short)."""
        body = json.dumps(event)
        async with aiohttp.ClientSession() as session:
            for attempt in range(8):
                header = stripe.WebhookSignature.generate_signature_header(
                    body, self.webhook_secret, int(time.time())
                )
                headers = {"stripe-signature": header, "content-type": "application/json"}
                try:
                    async with session.post(self.webhook_url, data=body, headers=headers) as r:
                        self.deliveries.append((event["type"], str(r.status)))
                        if 200 <= r.status < 300:
                            return
                except aiohttp.ClientError as exc:
                    self.deliveries.append((event["type"], type(exc).__name__))
                await asyncio.sleep(0.2 * 2**attempt)

    async def delivered(self, count: int, within: float = 15) -> None:
        """Wait until ``count`` webhooks were acknowledged."""
        deadline = time.monotonic() + within
        while sum(1 for _, status in self.deliveries if status.startswith("2")) < count:
            assert time.monotonic() < deadline, f"webhooks not acknowledged: {self.deliveries}"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_psp() -> AsyncIterator[LocalPsp]:
    psp = LocalPsp(
        port=free_port(),
        api_token="sk_test_" + secrets.token_hex(12),
        webhook_secret="whsec_" + secrets.token_hex(16),
    )
    app = web.Application()
    app.router.add_post("/v1/payments", psp.create)
    app.router.add_get("/v1/payments/{payment_id}", psp.status)
    app.router.add_post("/checkout/{payment_id}", psp.checkout)
    app.router.add_post("/bank/incoming", psp.bank_incoming)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", psp.port).start()
    try:
        yield psp
    finally:
        for task in list(psp._tasks):
            task.cancel()
        await runner.cleanup()
