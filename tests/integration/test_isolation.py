"""Tenant isolation, route by route: merchant B can neither read nor act on merchant A's
users, orders, deposits, balances, endpoints, deliveries, events or KYC submissions, and an
end user sees only their own data. The routes come from the OpenAPI route table, so a new
route cannot be forgotten: one this matrix does not know how to probe fails the test."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import deliveries, deposits, endpoints, kyc_submissions
from depositd.devchain import DEMO_XPUB
from depositd.services import addresses, merchants

from .test_end_users import Site, end_user_config, open_site

#: routes anyone may call (no merchant's or user's data behind them), with why
PUBLIC = {
    "/healthz": "process liveness",
    "/readyz": "readiness: database and watchers, no tenant data",
    "/metrics": "aggregate counters and gauges, no ids (keep it behind the proxy: nginx.conf)",
    "/v1/auth/register": "sign-up names its merchant; answers the same for taken addresses",
    "/v1/auth/resend-verification": "answers the same for every address",
    "/v1/auth/verify-email": "needs the emailed token",
    "/v1/auth/login": "needs the password",
    "/v1/auth/logout": "ends only the session whose token is sent",
    "/v1/callbacks/{provider}": "authenticated by the provider's signature; the provider's"
    " config names its one merchant (test_callbacks)",
}

#: bodies that are valid for each (method, path) taking one, so an answer reflects
#: authorisation, not validation
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/users"): {"external_id": "b-own"},
    ("post", "/v1/users/{external_id}/addresses"): {"chain": "anvil"},
    ("post", "/v1/deposits/{deposit_id}/approve"): {},
    ("post", "/v1/deposits/{deposit_id}/reject"): {},
    ("post", "/v1/observations"): {
        "provider": "custody",
        "provider_deposit_id": "b-1",
        "user": "alice",
        "asset": "USDT",
        "amount": "5",
        "status": "succeeded",
    },
    ("post", "/v1/deposit-orders"): {"user": "alice", "asset": "USDT", "amount": "5"},
    ("post", "/v1/endpoints"): {"url": "http://127.0.0.1:9/b-hook"},
    ("patch", "/v1/endpoints/{endpoint_id}"): {"description": "taken over"},
    ("post", "/v1/endpoints/{endpoint_id}/disable"): {},
    ("post", "/v1/endpoints/{endpoint_id}/enable"): {},
    ("post", "/v1/endpoints/{endpoint_id}/rotate-secret"): {},
    ("post", "/v1/endpoints/{endpoint_id}/test"): {},
    ("post", "/v1/endpoints/{endpoint_id}/replay"): {"after_seq": 0},
    ("post", "/v1/deliveries/{delivery_id}/retry"): {},
    ("post", "/v1/me/deposit-orders"): {"asset": "USDT", "amount": "5"},
    ("post", "/v1/me/kyc"): {
        "level": 1,
        "full_name": "B",
        "date_of_birth": "1990-01-01",
        "country": "DE",
        "document_type": "passport",
        "document_number": "B1",
    },
    ("post", "/v1/kyc-submissions/{submission_id}/approve"): {},
    ("post", "/v1/kyc-submissions/{submission_id}/reject"): {"reason": "no"},
}

#: routes without a path parameter that create something of the caller's own; A's state is
#: checked untouched after the whole matrix ran
OWN_CREATIONS = {
    ("post", "/v1/users"),  # B's own user
    ("post", "/v1/observations"),  # for A's user name: B has no such user → 4xx
    ("post", "/v1/deposit-orders"),  # ditto
    ("post", "/v1/endpoints"),  # B's own endpoint
    ("post", "/v1/me/deposit-orders"),  # the caller's own order
    ("post", "/v1/me/kyc"),  # the caller's own submission
}


@dataclass
class Tenants:
    site: Site
    a_key: dict[str, str]
    b_key: dict[str, str]
    a_user: dict[str, str]
    b_user: dict[str, str]
    #: A's resources, by the path parameter that names them
    a_ids: dict[str, str]


@pytest.fixture
async def tenants(db: Database, config: Config, tmp_path: Path) -> AsyncIterator[Tenants]:
    async for site in open_site(db, end_user_config(config, tmp_path), tmp_path):
        a = site.merchant_id
        a_key = dict(site.operator.headers)
        rival = await merchants.create_merchant(db, "rival")
        b_key = {"Authorization": f"Bearer {(await merchants.create_api_key(db, rival.id)).secret}"}
        for merchant_id in (a, rival.id):
            await addresses.set_xpub(db, merchant_id, DEMO_XPUB)
        api = site.client
        alice = await api.post("/v1/users", json={"external_id": "alice"}, headers=a_key)
        endpoint = await api.post(
            "/v1/endpoints", json={"url": "http://127.0.0.1:9/a-hook"}, headers=a_key
        )
        observed = await api.post(
            "/v1/observations",
            json={**BODIES[("post", "/v1/observations")], "provider_deposit_id": "a-1",
                  "amount": "500"},  # over alice's level-0 limit of 100: held
            headers=a_key,
        )  # fmt: skip
        deposit = observed.json()["deposit"]
        assert deposit["status"] == "held"
        order = await api.post("/v1/deposit-orders", json=BODIES[("post", "/v1/deposit-orders")],
                               headers=a_key)  # fmt: skip
        a_user = await site.signed_up("a-user@example.com")
        b_site = Site(api, site.operator, rival.id, site.outbox, db)
        b_user = await b_site.signed_up("b-user@example.com")
        kyc = await api.post("/v1/me/kyc", json=BODIES[("post", "/v1/me/kyc")], headers=a_user)
        async with db.reader.connect() as conn:
            delivery_id = (await conn.execute(select(deliveries.c.id))).scalars().first()
        yield Tenants(
            site,
            a_key,
            b_key,
            a_user,
            b_user,
            {
                "external_id": "alice",
                "deposit_id": deposit["id"],
                "order_id": order.json()["id"],
                "endpoint_id": endpoint.json()["id"],
                "delivery_id": str(delivery_id),
                "submission_id": kyc.json()["id"],
                "user_id": alice.json()["id"],  # not a path parameter: must not leak either
            },
        )


def _probe(path: str, ids: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in ids, f"{path}: no resource of A for {{{name}}}; add it to the matrix"
        return ids[name]

    return re.sub(r"\{(\w+)\}", fill, path)


async def test_no_route_lets_one_tenant_reach_anothers_data(tenants: Tenants) -> None:
    site, ids = tenants.site, tenants.a_ids
    api = site.client
    before = await _a_state(site.db, site.merchant_id)
    # A's ids that would stand out in an answer (a delivery's number would not)
    secrets_of_a = {value for value in ids.values() if "_" in value}
    probed = 0
    for path, operations in api_paths(site).items():
        if path in PUBLIC:
            continue
        for method in operations:
            # as merchant B, or as end user B for /v1/me
            caller = tenants.b_user if path.startswith("/v1/me") else tenants.b_key
            url = _probe(path, ids)
            body = BODIES.get((method, path))
            if method in ("post", "patch") and body is None:
                pytest.fail(f"{method.upper()} {path}: add a valid body to BODIES")
            answer = await api.request(method.upper(), url, json=body, headers=caller)
            probed += 1
            text = answer.text
            if "{" in path:
                # naming A's resource: it does not exist for B
                assert answer.status_code == 404, (method, path, answer.status_code, text)
            elif method == "get":
                assert answer.status_code == 200, (method, path, answer.status_code, text)
            else:
                assert (method, path) in OWN_CREATIONS, f"{method.upper()} {path}: classify it"
            # the id the caller sent may be echoed ("no deposit dep_…"); nothing else of A's
            leaked = [value for value in secrets_of_a if value in text and value not in url]
            assert not leaked, (method, path, leaked)
    assert probed >= 35, probed
    assert await _a_state(site.db, site.merchant_id) == before  # nothing of A's changed


async def test_end_users_reach_only_their_own_data_and_no_merchant_route(
    tenants: Tenants,
) -> None:
    api, ids = tenants.site.client, tenants.a_ids
    # an end user of the same merchant: A's other user's deposit and order are not theirs
    for path in ("/v1/me/deposits/{deposit_id}", "/v1/me/deposit-orders/{order_id}"):
        answer = await api.get(_probe(path, ids), headers=tenants.a_user)
        assert answer.status_code == 404, (path, answer.text)
    mine = (await api.get("/v1/me/deposits", headers=tenants.a_user)).json()["data"]
    assert ids["deposit_id"] not in [d["id"] for d in mine]
    # a session token is not an API key, on any merchant route
    for path, operations in api_paths(tenants.site).items():
        if path in PUBLIC or path.startswith("/v1/me"):
            continue
        for method in operations:
            body = BODIES.get((method, path))
            url = _probe(path, ids)
            answer = await api.request(method.upper(), url, json=body, headers=tenants.a_user)
            assert answer.status_code == 401, (method, path, answer.status_code)


def api_paths(site: Site) -> dict[str, list[str]]:
    app = site.client._transport.app  # type: ignore[attr-defined]
    return {path: sorted(ops) for path, ops in app.openapi()["paths"].items()}


async def _a_state(db: Database, merchant_id: str) -> list[Any]:
    """What merchant A has: none of it may change while B probes."""
    async with db.reader.connect() as conn:
        own_endpoints = select(endpoints.c.id).where(endpoints.c.merchant_id == merchant_id)
        queries = [
            select(deposits.c.id, deposits.c.status, deposits.c.version).where(
                deposits.c.merchant_id == merchant_id
            ),
            select(
                endpoints.c.id,
                endpoints.c.url,
                endpoints.c.secret,
                endpoints.c.disabled_at,
                endpoints.c.description,
            ).where(endpoints.c.merchant_id == merchant_id),
            select(
                deliveries.c.id,
                deliveries.c.status,
                deliveries.c.attempts,
                deliveries.c.next_attempt_at,
            ).where(deliveries.c.endpoint_id.in_(own_endpoints)),
            select(kyc_submissions.c.id, kyc_submissions.c.status).where(
                kyc_submissions.c.merchant_id == merchant_id
            ),
        ]
        return [(await conn.execute(query.order_by(query.selected_columns[0]))).all()
                for query in queries]  # fmt: skip
