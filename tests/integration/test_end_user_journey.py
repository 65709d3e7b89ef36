"""An end user's whole way to a credited deposit, end to end through ``depositd serve`` and
the local payment provider: sign-up, email verification (the token read from the outbox),
login, KYC submission, a card deposit over the level-0 limit held for review, the operator
approving the KYC and the held deposit, and the credit on the user's own balance."""

from __future__ import annotations

import asyncio
import email
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from depositd.db.engine import Database
from depositd.sealing import Sealer
from depositd.services import merchants

from ..conftest import free_port
from .psp import running_psp
from .test_callbacks_crash import start_server, wait_until_serving
from .test_fiat_orders import served_config

PASSWORD = "a long and private passphrase"


async def test_registration_to_credit_through_a_kyc_limit_hold(
    db: Database, tmp_path: Path
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    key = await merchants.create_api_key(db, merchant.id)
    outbox = tmp_path / "outbox"
    port = free_port()
    async with running_psp() as psp:
        psp.webhook_url = f"http://127.0.0.1:{port}/v1/callbacks/localpsp"
        config = served_config(tmp_path, merchant.id, psp)
        # USD deposits: 100 a day at KYC level 0, 10,000 at level 1
        config.write_text(
            config.read_text().replace(
                'code = "USD"', 'code = "USD"\nkyc_limits = { 0 = "100", 1 = "10000" }'
            )
        )
        server = start_server(
            db,
            config,
            port,
            tmp_path / "server.log",
            DEPOSITD_PROVIDERS__CUSTODY__SECRETS="",
            DEPOSITD_PROVIDERS__LOCALPSP__SECRETS=psp.webhook_secret,
            DEPOSITD_PROVIDERS__LOCALPSP__PAYMENTS__TOKEN=psp.api_token,
            DEPOSITD_END_USERS__KYC_KEY=Sealer.new_key_text(),
            DEPOSITD_EMAIL__OUTBOX_DIR=str(outbox),
        )
        try:
            await wait_until_serving(port, server)
            base = f"http://127.0.0.1:{port}"
            async with (
                httpx.AsyncClient(base_url=base) as user,
                httpx.AsyncClient(
                    base_url=base, headers={"authorization": f"Bearer {key.secret}"}
                ) as operator,
            ):
                await _journey(user, operator, merchant.id, outbox)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)


async def _journey(
    user: httpx.AsyncClient, operator: httpx.AsyncClient, merchant_id: str, outbox: Path
) -> None:
    account = {"merchant": merchant_id, "email": "mei@example.com", "password": PASSWORD}
    # 1. sign up, and verify the address with the token the email carries
    assert (await user.post("/v1/auth/register", json=account)).status_code == 202
    verified = await user.post("/v1/auth/verify-email", json={"token": _token(outbox)})
    assert verified.status_code == 200, verified.text
    # 2. log in
    session = await user.post("/v1/auth/login", json=account)
    assert session.status_code == 200, session.text
    user.headers["authorization"] = f"Bearer {session.json()['token']}"
    me = (await user.get("/v1/me")).json()
    assert (me["email_verified"], me["kyc_level"]) == (True, 0)
    # 3. submit KYC for level 1
    kyc = await user.post(
        "/v1/me/kyc",
        json={
            "level": 1,
            "full_name": "Mei Lin",
            "date_of_birth": "1992-08-15",
            "country": "SG",
            "document_type": "passport",
            "document_number": "K1234567Z",
        },
    )
    assert kyc.status_code == 201, kyc.text
    # 4. deposit 250 USD by card: over the level-0 limit of 100, so it is held
    order = await user.post(
        "/v1/me/deposit-orders", json={"asset": "USD", "amount": "250.00", "method": "card"}
    )
    assert order.status_code == 201, order.text
    async with httpx.AsyncClient() as payer:
        paid = await payer.post(
            order.json()["payment"]["redirect_url"], json={"card_number": "4242424242424242"}
        )
    assert paid.json() == {"status": "succeeded"}
    held = await _deposit_of(user, order.json()["id"], "held")
    assert "limit of 100 USD per 24 h at verification level 0" in held["hint"]
    assert (await user.get("/v1/me/balances")).json()["balances"] == []
    # 5. the operator approves the KYC at level 1, then the held deposit
    pending = (await operator.get("/v1/kyc-submissions?status=pending")).json()["data"]
    assert [(p["user"]["email"], p["fields"]["full_name"]) for p in pending] == [
        ("mei@example.com", "Mei Lin")
    ]
    approved = await operator.post(f"/v1/kyc-submissions/{pending[0]['id']}/approve", json={})
    assert approved.json()["granted_level"] == 1
    assert (await user.get("/v1/me")).json()["kyc_level"] == 1
    decided = await operator.post(f"/v1/deposits/{held['id']}/approve")
    assert decided.status_code == 200, decided.text
    # 6. credited, on the user's own balance and records
    await _deposit_of(user, order.json()["id"], "credited")
    balances = (await user.get("/v1/me/balances")).json()["balances"]
    assert [(b["asset"], b["available"]) for b in balances] == [("USD", "250")]
    records = (await user.get("/v1/me/transactions")).json()["data"]
    assert [(r["deposit_id"], r["amount"]) for r in records] == [(held["id"], "250")]
    events = [e["type"] for e in (await operator.get("/v1/events")).json()["data"]]
    assert events.count("deposit.held") == 1, events
    assert events.count("deposit.credited") == 1, events


def _token(outbox: Path) -> str:
    [mail] = [email.message_from_bytes(p.read_bytes()) for p in outbox.glob("*.eml")]
    assert mail["To"] == "mei@example.com"
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    match = re.search(r"Your verification token is: (\S+)", body.decode())
    assert match, body
    return match.group(1)


async def _deposit_of(
    user: httpx.AsyncClient, order_id: str, status: str, within: float = 20
) -> Any:
    """The order's deposit once it has ``status``, as the user sees it."""
    deadline = time.monotonic() + within
    while True:
        progress = (await user.get(f"/v1/me/deposit-orders/{order_id}")).json()["progress"]
        found = [d for d in progress["deposits"] if d["status"] == status]
        if found:
            return found[0]
        assert time.monotonic() < deadline, progress
        await asyncio.sleep(0.1)
