"""Inbound provider callbacks: stored before anything else, acknowledged once durable, recorded
once through the engine; every refused request stored with its reason and without effect."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from depositd.app import create_app
from depositd.config import CallbacksConfig, Config, PayloadMapping, ProviderConfig, ServerConfig
from depositd.db.engine import Database
from depositd.db.tables import accounts, deposits, inbound_callbacks, ledger_entries
from depositd.providers.schemes import SignatureScheme
from depositd.services import merchants, users
from depositd.services.callbacks import CallbackLog, process_callbacks
from depositd.services.group_commit import Recorder

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
ACK = {"status": 200, "body": '{"returnCode":"SUCCESS"}', "content_type": "application/json"}
PROBLEM = "urn:depositd:problem:"


def provider_config(merchant_id: str, **changes: Any) -> ProviderConfig:
    settings: dict[str, Any] = {
        "merchant": merchant_id,
        "scheme": SignatureScheme.STANDARD_WEBHOOKS,
        "secrets": [SECRET, OLD_SECRET],
        "ack": ACK,
        "max_body_bytes": 2048,
        "mapping": PayloadMapping(
            event_id="/event_id",
            deposit_id="/data/id",
            user="/data/customer",
            asset="/data/coin",
            amount="/data/amount",
            status="/data/state",
            tx_hash="/data/txid",
            assets={"usdt-erc20": "USDT"},
            statuses={
                "PENDING": "pending",
                "CONFIRMED": "succeeded",
                "FAILED": "failed",
            },
        ),
    }
    settings.update(changes)
    return ProviderConfig(**settings)


def payload(event_id: str = "evt-1", state: str = "CONFIRMED", **data: Any) -> bytes:
    body = {
        "event_id": event_id,
        "data": {
            "id": "dep-77",
            "customer": "alice",
            "coin": "usdt-erc20",
            "amount": "25.50",
            "state": state,
            "txid": "0x" + "ab" * 32,
            **data,
        },
    }
    return json.dumps(body).encode()


def signed(body: bytes, secret: str = SECRET, *, at: datetime | None = None) -> dict[str, str]:
    """Headers signed by the standardwebhooks library (not our code)."""
    when = at or datetime.now(UTC)
    msg_id = "msg_" + str(abs(hash(body)))
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


class Setup:
    def __init__(
        self, db: Database, merchant_id: str, client: httpx.AsyncClient, *, inline: bool = True
    ) -> None:
        self.db, self.merchant_id, self.client = db, merchant_id, client
        #: the app processes accepted callbacks itself, right after acknowledging them
        self.inline = inline

    async def post(self, body: bytes, headers: dict[str, str], provider: str = "custody") -> Any:
        """Post a callback; with inline processing, return once it has been processed (or
        has failed to be, and waits for the sweep)."""
        answer = await self.client.post(f"/v1/callbacks/{provider}", content=body, headers=headers)
        if self.inline:
            await self.settled()
        return answer

    async def settled(self) -> None:
        """Wait until no accepted callback awaits its first processing attempt."""
        waiting = (
            select(func.count())
            .select_from(inbound_callbacks)
            .where(
                inbound_callbacks.c.outcome == "accepted",
                inbound_callbacks.c.processed_at.is_(None),
                inbound_callbacks.c.attempts == 0,
            )
        )
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            async with self.db.reader.connect() as conn:
                if not await conn.scalar(waiting):
                    return
            assert asyncio.get_running_loop().time() < deadline, "callbacks not processed"
            await asyncio.sleep(0.01)

    async def callbacks(self) -> list[dict[str, Any]]:
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(
                select(inbound_callbacks).order_by(inbound_callbacks.c.received_at)
            )
            return [dict(row) for row in rows.mappings()]

    async def deposits(self) -> list[dict[str, Any]]:
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(select(deposits))
            return [dict(row) for row in rows.mappings()]

    async def ledger_rows(self) -> int:
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(ledger_entries)) or 0)

    async def balance(self) -> Any:
        async with self.db.reader.connect() as conn:
            return await conn.scalar(
                select(accounts.c.balance).where(accounts.c.key.like("user:%:USDT:available"))
            )


@pytest.fixture
async def merchant_id(db: Database) -> str:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    return merchant.id


def app_config(config: Config, merchant_id: str, **changes: Any) -> Config:
    """The test config with the custody provider, and no node for the chain: claims are not
    checked on chain here (test_callbacks_chain does that, on anvil)."""
    unwatched = config.chains["anvil"].model_copy(update={"rpc_url": None, "ws_url": None})
    update: dict[str, Any] = {
        "providers": {"custody": provider_config(merchant_id)},
        "chains": {"anvil": unwatched},
    }
    update.update(changes)
    return config.model_copy(update=update)


@contextlib.asynccontextmanager
async def client_for(db: Database, config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app made from ``config``, with the app started and stopped around it
    (its lifespan closes the connections to chain nodes)."""
    app = create_app(config, db)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client,
    ):
        yield client


@pytest.fixture
async def setup(db: Database, config: Config, merchant_id: str) -> AsyncIterator[Setup]:
    async with client_for(db, app_config(config, merchant_id)) as client:
        yield Setup(db, merchant_id, client)


async def test_a_signed_callback_is_stored_acknowledged_and_credited(setup: Setup) -> None:
    body = payload()
    response = await setup.post(body, signed(body))

    assert response.status_code == 200
    assert response.text == ACK["body"]
    assert response.headers["content-type"] == "application/json"
    (stored,) = await setup.callbacks()
    assert stored["outcome"] == "accepted"
    assert stored["body"] == body  # byte for byte
    assert stored["event_id"] == "evt-1"
    assert stored["merchant_id"] == setup.merchant_id
    assert stored["processed_at"] is not None
    assert stored["result"] == "credited"
    (deposit,) = await setup.deposits()
    assert (deposit["status"], deposit["amount"], deposit["provider_deposit_id"]) == (
        "credited",
        25_500_000,
        "dep-77",
    )
    assert stored["deposit_id"] == deposit["id"]
    assert await setup.balance() == 25_500_000


async def test_a_secret_being_rotated_out_still_verifies(setup: Setup) -> None:
    body = payload()
    response = await setup.post(body, signed(body, OLD_SECRET))
    assert response.status_code == 200


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == PROBLEM + code.replace("_", "-")
    assert problem["code"] == code
    assert problem["detail"]
    return problem


async def assert_stored_without_effect(setup: Setup, code: str, problem: dict[str, Any]) -> None:
    (stored,) = await setup.callbacks()
    assert stored["id"] == problem["callback_id"]
    assert (stored["outcome"], stored["rejection_code"]) == ("rejected", code)
    assert stored["rejection"] == problem["detail"]
    assert stored["processed_at"] is None
    assert await setup.deposits() == []
    assert await setup.ledger_rows() == 0


async def test_a_tampered_body_is_refused_and_kept(setup: Setup) -> None:
    body = payload()
    tampered = body.replace(b"25.50", b"2550.00")
    problem = refused(await setup.post(tampered, signed(body)), 401, "signature_mismatch")
    await assert_stored_without_effect(setup, "signature_mismatch", problem)
    assert (await setup.callbacks())[0]["body"] == tampered


async def test_a_wrong_secret_is_refused(setup: Setup) -> None:
    body = payload()
    wrong = "whsec_" + base64.b64encode(b"w" * 32).decode()
    problem = refused(await setup.post(body, signed(body, wrong)), 401, "signature_mismatch")
    await assert_stored_without_effect(setup, "signature_mismatch", problem)
    assert SECRET not in problem["detail"]


async def test_a_missing_signature_is_refused(setup: Setup) -> None:
    body = payload()
    problem = refused(await setup.post(body, {}), 401, "signature_missing")
    await assert_stored_without_effect(setup, "signature_missing", problem)


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
async def test_a_timestamp_outside_the_window_is_refused(setup: Setup, skew: timedelta) -> None:
    body = payload()
    headers = signed(body, at=datetime.now(UTC) + skew)
    problem = refused(await setup.post(body, headers), 401, "timestamp_outside_window")
    await assert_stored_without_effect(setup, "timestamp_outside_window", problem)


async def test_malformed_json_is_refused(setup: Setup) -> None:
    body = b'{"event_id": "evt-1", "data": {'
    problem = refused(await setup.post(body, signed(body)), 400, "malformed_json")
    await assert_stored_without_effect(setup, "malformed_json", problem)


async def test_a_payload_without_what_the_mapping_needs_is_refused(setup: Setup) -> None:
    body = json.dumps({"event_id": "evt-1", "data": {"id": "dep-77"}}).encode()
    problem = refused(await setup.post(body, signed(body)), 422, "field_missing")
    await assert_stored_without_effect(setup, "field_missing", problem)
    unknown_status = payload(state="MAYBE")
    refused(await setup.post(unknown_status, signed(unknown_status)), 422, "status_unknown")


async def test_an_oversized_body_is_refused_and_kept_cut_to_the_limit(setup: Setup) -> None:
    body = payload(note="x" * 5000)
    problem = refused(await setup.post(body, signed(body)), 413, "body_too_large")
    await assert_stored_without_effect(setup, "body_too_large", problem)
    (stored,) = await setup.callbacks()
    assert stored["body_bytes"] == len(body)
    assert stored["body"] == body[:2048]


async def test_an_unknown_provider_is_refused_and_kept(setup: Setup) -> None:
    body = payload()
    problem = refused(await setup.post(body, signed(body), "nobody"), 404, "unknown_provider")
    await assert_stored_without_effect(setup, "unknown_provider", problem)
    assert (await setup.callbacks())[0]["merchant_id"] is None


async def test_a_source_address_not_allowed_is_refused(
    db: Database, config: Config, merchant_id: str
) -> None:
    provider = provider_config(merchant_id, allowed_ips=["203.0.113.0/24"])
    async with client_for(
        db, app_config(config, merchant_id, providers={"custody": provider})
    ) as client:
        setup = Setup(db, merchant_id, client)
        body = payload()
        problem = refused(await setup.post(body, signed(body)), 403, "source_ip_not_allowed")
        await assert_stored_without_effect(setup, "source_ip_not_allowed", problem)
        # a forwarded-for header is not believed from a peer that is not a trusted proxy
        forged = {**signed(body), "x-forwarded-for": "203.0.113.9"}
        refused(await setup.post(body, forged), 403, "source_ip_not_allowed")


async def test_behind_a_trusted_proxy_the_forwarded_source_is_checked(
    db: Database, config: Config, merchant_id: str
) -> None:
    provider = provider_config(merchant_id, allowed_ips=["203.0.113.0/24"])
    changed = app_config(
        config,
        merchant_id,
        providers={"custody": provider},
        server=ServerConfig(trusted_proxies=["127.0.0.1/32"]),
    )
    async with client_for(db, changed) as client:
        setup = Setup(db, merchant_id, client)
        body = payload()
        headers = {**signed(body), "x-forwarded-for": "198.51.100.1, 203.0.113.9"}
        assert (await setup.post(body, headers)).status_code == 200
        outside = {**signed(body), "x-forwarded-for": "198.51.100.1"}
        refused(await setup.post(body, outside), 403, "source_ip_not_allowed")
        sources = [row["source_ip"] for row in await setup.callbacks()]
        assert sources == ["203.0.113.9", "198.51.100.1"]


async def test_a_replayed_event_gets_the_same_answer_and_no_second_effect(setup: Setup) -> None:
    body = payload()
    first = await setup.post(body, signed(body))
    again = await setup.post(body, signed(body))
    # a provider re-sending the same event with a fresh signature is a replay too
    assert first.status_code == again.status_code == 200
    assert first.text == again.text == ACK["body"]
    original, replay = await setup.callbacks()
    assert (original["outcome"], replay["outcome"]) == ("accepted", "replayed")
    assert replay["replay_of"] == original["id"]
    assert replay["processed_at"] is None
    assert len(await setup.deposits()) == 1
    assert await setup.ledger_rows() == 2  # one credit: user and merchant sides
    assert await setup.balance() == 25_500_000


async def test_concurrent_copies_of_one_event_are_accepted_once(setup: Setup) -> None:
    body = payload()
    answers = await asyncio.gather(*(setup.post(body, signed(body)) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    outcomes = sorted(row["outcome"] for row in await setup.callbacks())
    assert outcomes == ["accepted"] + ["replayed"] * 4
    assert await setup.balance() == 25_500_000


async def test_callbacks_out_of_order_end_in_the_right_state(setup: Setup) -> None:
    confirmed = payload("evt-2", "CONFIRMED")
    pending = payload("evt-1", "PENDING")
    assert (await setup.post(confirmed, signed(confirmed))).status_code == 200
    assert (await setup.post(pending, signed(pending))).status_code == 200
    (deposit,) = await setup.deposits()
    assert deposit["status"] == "credited"
    results = [row["result"] for row in await setup.callbacks()]
    assert results == ["credited", "unchanged"]
    assert await setup.balance() == 25_500_000


async def test_a_claim_for_an_unknown_user_is_kept_with_the_reason(setup: Setup) -> None:
    body = payload(customer="mallory")
    assert (await setup.post(body, signed(body))).status_code == 200
    (stored,) = await setup.callbacks()
    assert (stored["outcome"], stored["result"]) == ("accepted", "unknown-owner")
    assert stored["processed_at"] is not None
    assert await setup.deposits() == []


async def test_stored_callbacks_left_unprocessed_are_recorded_by_the_sweep_once(
    db: Database, config: Config, merchant_id: str
) -> None:
    ingest_only = app_config(config, merchant_id, callbacks=CallbacksConfig(process_inline=False))
    async with client_for(db, ingest_only) as client:
        setup = Setup(db, merchant_id, client, inline=False)
        body = payload()
        assert (await setup.post(body, signed(body))).status_code == 200
        (stored,) = await setup.callbacks()
        assert stored["processed_at"] is None
        assert await setup.deposits() == []

        recorder = Recorder(db, config.asset_book())
        done = await process_callbacks(CallbackLog(db), recorder)
        assert [(p.callback_id, p.result) for p in done] == [(stored["id"], "credited")]
        assert await process_callbacks(CallbackLog(db), recorder) == []  # nothing left queued
        # processed again anyway (a crash between recording and marking it): no second effect
        async with db.writer.begin() as conn:
            await conn.execute(inbound_callbacks.update().values(processed_at=None))
        again = await process_callbacks(CallbackLog(db), recorder)
        assert [p.result for p in again] == ["unchanged"]
        assert await setup.ledger_rows() == 2
        assert await setup.balance() == 25_500_000


async def test_the_route_is_documented_and_answers_other_methods_with_a_problem(
    setup: Setup,
) -> None:
    schema = (await setup.client.get("/openapi.json")).json()
    route = schema["paths"]["/v1/callbacks/{provider}"]["post"]
    assert set(route["responses"]) >= {"200", "401", "404", "413"}
    wrong_method = await setup.client.get("/v1/callbacks/custody")
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.json()["type"] == PROBLEM + "method-not-allowed"
    nested = await setup.client.post("/v1/callbacks/custody/extra", content=b"{}")
    assert nested.status_code == 404
    assert await setup.callbacks() == []


async def test_one_refused_claim_among_concurrent_callbacks_affects_only_itself(
    setup: Setup,
) -> None:
    first = payload("evt-0")
    assert (await setup.post(first, signed(first))).status_code == 200
    # the same deposit with another amount, among five good callbacks sharing its commit
    conflicting = payload("evt-x", amount="99")
    good = [payload(f"evt-{n}", id=f"dep-{n}") for n in range(1, 6)]
    answers = await asyncio.gather(
        *(setup.post(body, signed(body)) for body in [*good[:2], conflicting, *good[2:]])
    )
    assert [a.status_code for a in answers] == [200] * 6
    results = {row["event_id"]: row["result"] for row in await setup.callbacks()}
    assert results["evt-x"] == "observation-conflict"
    assert [results[f"evt-{n}"] for n in range(6)] == ["credited"] * 6
    assert await setup.balance() == 6 * 25_500_000
