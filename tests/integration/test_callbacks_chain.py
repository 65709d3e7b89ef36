"""Trust, but verify: a provider's claim of a deposit on a chain we watch is credited only when
our own node (anvil) shows the same transfer with enough confirmations; otherwise it is held
for review, and a reviewer's decision settles it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from depositd.config import Config
from depositd.db.engine import Database
from depositd.services import merchants
from depositd.services.callbacks import CallbackLog, ClaimVerifier, process_callbacks
from depositd.services.group_commit import Recorder

from .chain import ETH, USDT, LiveChain, live_chain, user_with_address
from .evm import send_eth
from .test_callbacks import Setup, client_for, provider_config, signed

CONFIRMATIONS = 3  # of ETH and USDT in the embedded defaults


def claim(tx_hash: str, amount: str, coin: str = "ETH", **data: Any) -> bytes:
    """A custody provider's callback saying ``amount`` ``coin`` arrived in ``tx_hash``."""
    return json.dumps(
        {
            "event_id": f"evt-{tx_hash}-{coin}",
            "data": {
                "id": f"dep-{tx_hash}-{coin}",
                "customer": "alice",
                "coin": coin,
                "amount": amount,
                "state": "CONFIRMED",
                "txid": tx_hash,
                **data,
            },
        }
    ).encode()


@dataclass
class Claims:
    setup: Setup
    chain: LiveChain
    config: Config
    #: alice's deposit address on the chain
    address: str

    async def post(self, body: bytes) -> None:
        answer = await self.setup.post(body, signed(body))
        assert answer.status_code == 200, answer.text

    async def deposit(self) -> dict[str, Any]:
        (deposit,) = await self.setup.deposits()
        return deposit

    async def hint(self, deposit_id: str) -> str:
        found = await self.setup.client.get(f"/v1/deposits/{deposit_id}")
        text: str = found.json()["reason"]["hint"]
        return text

    async def sweep(self) -> list[str]:
        """What a sweep of the queued callbacks makes of them."""
        verifier = ClaimVerifier(self.config, self.config.asset_book())
        try:
            recorder = Recorder(self.setup.db, self.config.asset_book())
            done = await process_callbacks(CallbackLog(self.setup.db), recorder, verifier=verifier)
        finally:
            await verifier.close()
        return [processed.result for processed in done]


@pytest.fixture
async def claims(db: Database, config: Config, anvil_url: str) -> AsyncIterator[Claims]:
    async with live_chain(anvil_url) as chain:
        merchant_id, address = await user_with_address(db)
        key = await merchants.create_api_key(db, merchant_id, "tests")
        watched = config.chains["anvil"].model_copy(update={"rpc_url": anvil_url, "ws_url": None})
        token = chain.token.address.lower()
        assets = [
            a.model_copy(update={"contract": token}) if a.code == "USDT" else a
            for a in config.assets
        ]
        custody = provider_config(merchant_id)
        mapping = custody.mapping.model_copy(update={"address": "/data/to", "assets": {}})
        changed = config.model_copy(
            update={
                "chains": {"anvil": watched},
                "assets": assets,
                "providers": {"custody": custody.model_copy(update={"mapping": mapping})},
            }
        )
        async with client_for(db, changed) as client:
            client.headers["Authorization"] = f"Bearer {key.secret}"
            yield Claims(Setup(db, merchant_id, client), chain, changed, address)


async def test_a_claim_our_node_shows_is_credited(claims: Claims) -> None:
    receipt = await send_eth(claims.chain.rpc, claims.address, 2 * ETH)
    await claims.chain.mine(CONFIRMATIONS)
    await claims.post(claim(receipt["transactionHash"], "2", to=claims.address))
    deposit = await claims.deposit()
    assert (deposit["status"], deposit["amount"]) == ("credited", 2 * ETH)
    assert [row["result"] for row in await claims.setup.callbacks()] == ["credited"]


async def test_a_token_claim_is_checked_against_the_users_deposit_address(claims: Claims) -> None:
    receipt = await claims.chain.token.transact(
        "transfer(address,uint256)", ["address", "uint256"], [claims.address, 25 * USDT]
    )
    await claims.chain.mine(CONFIRMATIONS)
    # no address in the callback: the user's deposit address on the chain is the recipient
    await claims.post(claim(receipt["transactionHash"], "25", coin="USDT"))
    assert (await claims.deposit())["status"] == "credited"


async def test_a_claim_waits_for_our_node_to_show_enough_confirmations(claims: Claims) -> None:
    receipt = await send_eth(claims.chain.rpc, claims.address, ETH)
    await claims.post(claim(receipt["transactionHash"], "1", to=claims.address))
    deposit = await claims.deposit()
    assert (deposit["status"], deposit["confirmations"]) == ("confirming", 0)
    (stored,) = await claims.setup.callbacks()
    assert stored["processed_at"] is None  # queued: the sweep looks again
    assert "0 confirmations" in stored["last_error"]

    await claims.chain.mine(1)
    assert await claims.sweep() == []  # 1 of 3: still waiting
    assert (await claims.deposit())["confirmations"] == 1
    await claims.chain.mine(CONFIRMATIONS)
    assert await claims.sweep() == ["credited"]
    assert (await claims.deposit())["status"] == "credited"
    assert await claims.sweep() == []


async def test_a_claim_our_node_contradicts_is_held_until_a_reviewer_credits_it(
    claims: Claims,
) -> None:
    receipt = await send_eth(claims.chain.rpc, claims.address, ETH)
    await claims.chain.mine(CONFIRMATIONS)
    # the provider says 5 ETH; the chain shows 1
    await claims.post(claim(receipt["transactionHash"], "5", to=claims.address))
    deposit = await claims.deposit()
    assert deposit["status"] == "held"
    assert deposit["reason_code"] == "held_claim_not_on_chain"
    assert "does not show the transfer" in await claims.hint(deposit["id"])
    assert await claims.setup.ledger_rows() == 0

    client = claims.setup.client
    approved = await client.post(f"/v1/deposits/{deposit['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "credited"
    assert await claims.setup.ledger_rows() == 2
    again = await client.post(f"/v1/deposits/{deposit['id']}/reject")
    assert again.status_code == 409
    assert again.json()["type"] == "urn:depositd:problem:deposit-not-held"


async def test_a_claimed_transaction_our_node_never_saw_is_held_and_can_be_rejected(
    claims: Claims,
) -> None:
    await claims.post(claim("0x" + "12" * 32, "3", to=claims.address))
    deposit = await claims.deposit()
    assert (deposit["status"], deposit["reason_code"]) == ("held", "held_claim_not_on_chain")
    rejected = await claims.setup.client.post(f"/v1/deposits/{deposit['id']}/reject")
    assert rejected.json()["status"] == "rejected"
    assert await claims.setup.ledger_rows() == 0
    assert await claims.setup.balance() is None


async def test_a_claimed_transaction_that_failed_on_chain_is_held(claims: Claims) -> None:
    # the token contract takes no ether: the transfer reverts, mined with status 0
    receipt = await send_eth(claims.chain.rpc, claims.chain.token.address, ETH, gas=100_000)
    assert receipt["status"] == "0x0"
    await claims.chain.mine(CONFIRMATIONS)
    await claims.post(claim(receipt["transactionHash"], "1", to=claims.chain.token.address))
    deposit = await claims.deposit()
    assert (deposit["status"], deposit["reason_code"]) == ("held", "held_claim_failed_on_chain")


async def test_another_merchant_cannot_review_the_deposit(claims: Claims, db: Database) -> None:
    await claims.post(claim("0x" + "34" * 32, "3", to=claims.address))
    deposit = await claims.deposit()
    rival = await merchants.create_merchant(db, "rival")
    key = await merchants.create_api_key(db, rival.id, "tests")
    answer = await claims.setup.client.post(
        f"/v1/deposits/{deposit['id']}/approve", headers={"Authorization": f"Bearer {key.secret}"}
    )
    assert answer.status_code == 404
    assert (await claims.deposit())["status"] == "held"
