"""Card and bank transfer orders through a local payment provider that behaves like a real
one: the payment is started there, the provider's signed webhooks settle it through the same
engine as every deposit, a decline fails the order with a hint the user can act on."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import func, select

from depositd.config import (
    AssetConfig,
    Config,
    PayloadMapping,
    PaymentsApiConfig,
    ProviderConfig,
    StatusApiConfig,
)
from depositd.db.engine import Database
from depositd.db.tables import deposit_orders, ledger_entries
from depositd.providers.schemes import SignatureScheme
from depositd.services import merchants, users
from depositd.services.reconcile import reconcile

from ..conftest import free_port
from .psp import LocalPsp, running_psp
from .test_callbacks import Setup, client_for
from .test_callbacks_crash import start_server, wait_until_serving

PROBLEM = "urn:depositd:problem:"

USD = AssetConfig(code="USD", symbol="USD", decimals=2, min_deposit="1")

MAPPING: dict[str, Any] = {
    "event_id": "/id",
    "deposit_id": "/data/object/id",
    "user": "/data/object/metadata/user",
    "asset": "/data/object/currency",
    "amount": "/data/object/amount",
    "amount_unit": "base",
    "status": "/data/object/status",
    "reason": "/data/object/failure_code",
    "statuses": {
        "requires_payment": "pending",
        "awaiting_transfer": "pending",
        "processing": "pending",
        "succeeded": "succeeded",
        "failed": "failed",
    },
}


def psp_config(config: Config, merchant_id: str, psp: LocalPsp, **payments: Any) -> Config:
    """The test config plus a USD asset and the local PSP, taking card and bank payments."""
    provider = ProviderConfig(
        merchant=merchant_id,
        scheme=SignatureScheme.STRIPE,
        secrets=[psp.webhook_secret],
        mapping=PayloadMapping(**MAPPING),
        payments=PaymentsApiConfig(
            **{
                "url": psp.payments_url,
                "methods": ["card", "bank_transfer"],
                "token_header": "authorization",
                "token": psp.api_token,
                **payments,
            }
        ),
    )
    unwatched = config.chains["anvil"].model_copy(update={"rpc_url": None, "ws_url": None})
    return config.model_copy(
        update={
            "assets": [*config.assets, USD],
            "providers": {"localpsp": provider},
            "chains": {"anvil": unwatched},
        }
    )


class Shop:
    """A merchant with one user, its API client, and the local PSP."""

    def __init__(self, client: httpx.AsyncClient, psp: LocalPsp, db: Database) -> None:
        self.client, self.psp, self.db = client, psp, db

    async def order(self, method: str, amount: str | None = "25.00", **more: Any) -> Any:
        body = {"user": "alice", "asset": "USD", "method": method, **more}
        if amount is not None:
            body["amount"] = amount
        return await self.client.post("/v1/deposit-orders", json=body)

    async def webhook(self, payment_id: str) -> httpx.Response:
        """What the PSP would post about the payment now, posted by us (in-process app)."""
        event = json.dumps(self.psp._event(self.psp.payments[payment_id]))
        header = stripe.WebhookSignature.generate_signature_header(
            event, self.psp.webhook_secret, int(time.time())
        )
        headers = {"stripe-signature": header, "content-type": "application/json"}
        answer = await self.client.post("/v1/callbacks/localpsp", content=event, headers=headers)
        await Setup(self.db, "", self.client).settled()  # processed right after the answer
        return answer

    async def progress(self, order_id: str, lang: str = "en") -> Any:
        answer = await self.client.get(f"/v1/deposit-orders/{order_id}", params={"lang": lang})
        assert answer.status_code == 200, answer.text
        return answer.json()["progress"]

    async def stored_orders(self) -> int:
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(deposit_orders)) or 0)


@pytest.fixture
async def shop(db: Database, config: Config) -> AsyncIterator[Shop]:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    key = await merchants.create_api_key(db, merchant.id)
    async with (
        running_psp() as psp,
        client_for(db, psp_config(config, merchant.id, psp)) as client,
    ):
        client.headers["authorization"] = f"Bearer {key.secret}"
        yield Shop(client, psp, db)


async def test_a_card_order_starts_a_payment_at_the_provider(shop: Shop) -> None:
    answer = await shop.order("card", "25.00", expires_in_seconds=900)
    assert answer.status_code == 201, answer.text
    order = answer.json()
    (payment,) = shop.psp.payments.values()
    assert order["payment"] == {
        "provider": "localpsp",
        "reference": payment.id,
        "redirect_url": f"{shop.psp.base_url}/checkout/{payment.id}",
        "instructions": None,
    }
    assert (order["method"], order["asset"], order["amount"]) == ("card", "USD", "25")
    assert order["amount_base_units"] == "2500"
    assert (order["chain"], order["address"], order["payment_uri"], order["qr_svg"]) == (
        None,
        None,
        None,
        None,
    )
    assert order["progress"]["status"] == "awaiting_payment"
    ((headers, body),) = shop.psp.requests
    assert headers["idempotency-key"] == order["id"]
    assert (body["amount"], body["currency"], body["method"]) == (2500, "USD", "card")
    assert body["metadata"] == {"order": order["id"], "user": "alice"}
    qr = await shop.client.get(f"/v1/deposit-orders/{order['id']}/qr.svg")
    assert (qr.status_code, qr.json()["type"]) == (404, PROBLEM + "not-found")


async def test_a_bank_transfer_order_gives_the_account_and_the_reference_to_quote(
    shop: Shop,
) -> None:
    order = (await shop.order("bank_transfer", "100")).json()
    (payment,) = shop.psp.payments.values()
    instructions = order["payment"]["instructions"]
    assert instructions["iban"] == "GB33BUKB20201555555555"
    assert instructions["reference"] == payment.bank_reference
    assert order["payment"]["redirect_url"] is None


async def test_a_declined_card_fails_the_order_with_the_reason_and_what_to_do(shop: Shop) -> None:
    order = (await shop.order("card")).json()
    payment_id = order["payment"]["reference"]
    shop.psp.payments[payment_id].status = "failed"
    shop.psp.payments[payment_id].failure_code = "insufficient_funds"
    assert (await shop.webhook(payment_id)).status_code == 200

    progress = await shop.progress(order["id"])
    assert progress["status"] == "failed"
    assert progress["hint"].startswith("The card was declined for insufficient funds.")
    ((deposit),) = progress["deposits"]
    assert (deposit["status"], deposit["amount"]) == ("failed", "25")
    assert "insufficient funds" in deposit["hint"]
    assert "卡内余额不足" in (await shop.progress(order["id"], "zh-CN"))["hint"]
    balances = (await shop.client.get("/v1/users/alice/balances")).json()["balances"]
    assert [b for b in balances if b["available"] != "0"] == []


async def test_each_open_card_order_gets_its_own_payment(shop: Shop) -> None:
    first = (await shop.order("card", "10.00")).json()
    second = (await shop.order("card", "30.00")).json()
    assert first["payment"]["reference"] != second["payment"]["reference"]
    paid = shop.psp.payments[second["payment"]["reference"]]
    paid.status = "succeeded"
    assert (await shop.webhook(paid.id)).status_code == 200

    assert (await shop.progress(first["id"]))["status"] == "awaiting_payment"
    done = await shop.progress(second["id"])
    assert (done["status"], done["credited"]) == ("paid", "30")


async def test_a_provider_outage_stores_no_order_and_says_to_try_again(shop: Shop) -> None:
    shop.psp.failing_with = 503
    answer = await shop.order("card")
    assert answer.status_code == 502
    assert answer.json()["type"] == PROBLEM + "payment-provider-unavailable"
    assert "try again" in answer.json()["detail"]
    assert answer.headers["retry-after"] == "5"
    assert await shop.stored_orders() == 0


async def test_a_wrong_token_at_the_provider_is_an_outage_not_an_order(
    db: Database, config: Config
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    key = await merchants.create_api_key(db, merchant.id)
    async with running_psp() as psp:
        wrong = psp_config(config, merchant.id, psp)
        provider = wrong.providers["localpsp"]
        assert provider.payments is not None
        payments = provider.payments.model_copy(update={"token": "sk_test_wrong"})
        wrong.providers["localpsp"] = provider.model_copy(update={"payments": payments})
        async with client_for(db, wrong) as client:
            client.headers["authorization"] = f"Bearer {key.secret}"
            answer = await client.post(
                "/v1/deposit-orders",
                json={"user": "alice", "asset": "USD", "amount": "5", "method": "card"},
            )
    assert answer.status_code == 502
    assert psp.payments == {}


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"asset": "USD", "method": "crypto", "amount": "5"}, 422, "method-asset-mismatch"),
        ({"asset": "ETH", "method": "card", "amount": "5"}, 422, "method-asset-mismatch"),
        ({"asset": "USD", "method": "card"}, 422, "invalid-amount"),
        ({"asset": "USD", "method": "card", "amount": "0.50"}, 422, "invalid-amount"),
        ({"asset": "USD", "method": "card", "amount": "1.005"}, 422, "invalid-amount"),
        ({"asset": "USD", "method": "card", "amount": "5", "user": "bob"}, 404, "not-found"),
    ],
)
async def test_bad_fiat_orders(shop: Shop, body: dict[str, Any], status: int, slug: str) -> None:
    answer = await shop.client.post("/v1/deposit-orders", json={"user": "alice", **body})
    assert (answer.status_code, answer.json()["type"]) == (status, PROBLEM + slug), answer.text
    assert shop.psp.requests == []


async def test_a_method_no_provider_takes_is_refused(db: Database, config: Config) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    key = await merchants.create_api_key(db, merchant.id)
    async with running_psp() as psp:
        cards_only = psp_config(config, merchant.id, psp, methods=["card"])
        async with client_for(db, cards_only) as client:
            client.headers["authorization"] = f"Bearer {key.secret}"
            answer = await client.post(
                "/v1/deposit-orders",
                json={"user": "alice", "asset": "USD", "amount": "5", "method": "bank_transfer"},
            )
    assert (answer.status_code, answer.json()["type"]) == (422, PROBLEM + "unsupported-method")
    assert "bank_transfer" in answer.json()["detail"]


# --- end to end: depositd serve, the PSP calling it back over HTTP ------------------------------

PSP_SECTION = """
[[assets]]
code = "USD"
symbol = "USD"
decimals = 2
min_deposit = "1"

[providers.localpsp]
merchant = "{merchant}"
scheme = "stripe"

[providers.localpsp.payments]
url = "{payments_url}"
methods = ["card", "bank_transfer"]
token_header = "authorization"

[providers.localpsp.mapping]
event_id = "/id"
deposit_id = "/data/object/id"
user = "/data/object/metadata/user"
asset = "/data/object/currency"
amount = "/data/object/amount"
amount_unit = "base"
status = "/data/object/status"
reason = "/data/object/failure_code"
statuses = {{ requires_payment = "pending", awaiting_transfer = "pending", processing = "pending", succeeded = "succeeded", failed = "failed" }}
"""  # noqa: E501 - one TOML inline table


def served_config(tmp_path: Path, merchant_id: str, psp: LocalPsp) -> Path:
    defaults = resources.files("depositd").joinpath("defaults.toml").read_text()
    defaults = re.sub(r"^(rpc_url|ws_url) = .*$", "", defaults, flags=re.MULTILINE)
    path = tmp_path / "depositd.toml"
    section = PSP_SECTION.format(merchant=merchant_id, payments_url=psp.payments_url)
    path.write_text(defaults + section)
    return path


async def wait_for(
    client: httpx.AsyncClient, order_id: str, status: str, within: float = 20
) -> Any:
    deadline = time.monotonic() + within
    while True:
        progress = (await client.get(f"/v1/deposit-orders/{order_id}")).json()["progress"]
        if progress["status"] == status:
            return progress
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.1)


async def test_end_to_end_card_failure_and_bank_transfer_success(
    db: Database, tmp_path: Path
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    key = await merchants.create_api_key(db, merchant.id)
    port = free_port()
    log = tmp_path / "server.log"
    async with running_psp() as psp:
        psp.webhook_url = f"http://127.0.0.1:{port}/v1/callbacks/localpsp"
        server = start_server(
            db,
            served_config(tmp_path, merchant.id, psp),
            port,
            log,
            DEPOSITD_PROVIDERS__CUSTODY__SECRETS="",
            DEPOSITD_PROVIDERS__LOCALPSP__SECRETS=psp.webhook_secret,
            DEPOSITD_PROVIDERS__LOCALPSP__PAYMENTS__TOKEN=psp.api_token,
        )
        try:
            await wait_until_serving(port, server)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                headers={"authorization": f"Bearer {key.secret}"},
            ) as api:
                await _card_declined(api, psp)
                await _bank_transfer_paid(api, psp)
                events = (await api.get("/v1/events")).json()["data"]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
    types = [event["type"] for event in events]
    assert types.count("deposit.failed") == 1, types
    assert types.count("deposit.credited") == 1, types
    async with db.reader.connect() as conn:
        # one credit: the user's side and the merchant's external side
        assert await conn.scalar(select(func.count()).select_from(ledger_entries)) == 2


async def _place(api: httpx.AsyncClient, method: str, amount: str) -> Any:
    body = {"user": "alice", "asset": "USD", "amount": amount, "method": method}
    answer = await api.post("/v1/deposit-orders", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _card_declined(api: httpx.AsyncClient, psp: LocalPsp) -> None:
    order = await _place(api, "card", "25.00")
    # the user pays on the provider's checkout page with a card that has no funds
    async with httpx.AsyncClient() as payer:
        paid = await payer.post(
            order["payment"]["redirect_url"], json={"card_number": "4000000000009995"}
        )
    assert paid.json() == {"status": "failed"}
    progress = await wait_for(api, order["id"], "failed")
    assert "insufficient funds" in progress["hint"]
    assert progress["deposits"][0]["status"] == "failed"
    await psp.delivered(1)


async def _bank_transfer_paid(api: httpx.AsyncClient, psp: LocalPsp) -> None:
    order = await _place(api, "bank_transfer", "100.00")
    reference = order["payment"]["instructions"]["reference"]
    # the user's bank transfer reaches the provider's account, quoting the reference
    async with httpx.AsyncClient() as bank:
        arrived = await bank.post(
            f"{psp.base_url}/bank/incoming", json={"reference": reference, "amount": 10000}
        )
    assert arrived.json() == {"status": "succeeded"}
    progress = await wait_for(api, order["id"], "paid")
    assert (progress["credited"], progress["credited_base_units"]) == ("100", "10000")
    assert progress["deposits"][0]["status"] == "credited"
    balances = (await api.get("/v1/users/alice/balances")).json()["balances"]
    assert [(b["asset"], b["available"], b["locked"]) for b in balances] == [("USD", "100", "0")]
    await psp.delivered(3)


async def test_reconcile_asks_the_provider_about_a_payment_it_never_called_back_about(
    db: Database, config: Config
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    key = await merchants.create_api_key(db, merchant.id)
    async with running_psp() as psp:
        with_status = psp_config(config, merchant.id, psp)
        provider = with_status.providers["localpsp"]
        status = StatusApiConfig(
            url=f"{psp.payments_url}/{{deposit_id}}",
            token_header="authorization",
            token=psp.api_token,
        )
        with_status.providers["localpsp"] = provider.model_copy(update={"status": status})
        async with client_for(db, with_status) as client:
            client.headers["authorization"] = f"Bearer {key.secret}"
            paid = (await client.post("/v1/deposit-orders", json=card_order("40"))).json()
            open_ = (await client.post("/v1/deposit-orders", json=card_order("15"))).json()
            # the card payment succeeded, and the webhook never came (psp.webhook_url unset)
            psp.payments[paid["payment"]["reference"]].status = "succeeded"

            report = await reconcile(db, with_status, with_status.asset_book(), sla=timedelta(0))

            recovered = {(r.provider_deposit_id, r.before, r.after) for r in report.recovered}
            assert recovered == {
                (paid["payment"]["reference"], "no_callback", "credited"),
                (open_["payment"]["reference"], "no_callback", "not_paid_yet"),
            }
            shop = Shop(client, psp, db)
            assert (await shop.progress(paid["id"]))["status"] == "paid"
            assert (await shop.progress(open_["id"]))["status"] == "awaiting_payment"
            # next time only the unpaid one is asked about again
            again = await reconcile(db, with_status, with_status.asset_book(), sla=timedelta(0))
            assert [(r.provider_deposit_id, r.after) for r in again.recovered] == [
                (open_["payment"]["reference"], "not_paid_yet")
            ]


def card_order(amount: str) -> dict[str, str]:
    return {"user": "alice", "asset": "USD", "amount": amount, "method": "card"}
