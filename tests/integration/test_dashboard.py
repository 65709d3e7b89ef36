"""The operators' dashboard and the order status page, through the app (no browser): sign-in,
one merchant's data only, CSRF, and status links that cannot be guessed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import pytest

from depositd.app import create_app
from depositd.cli import DEV_XPUB
from depositd.config import Config, DashboardConfig
from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.services import addresses, merchants, operators, queries
from depositd.services.observations import record_observation

from .helpers import merchant_with_users, paid

PASSWORD = "a long operator passphrase"
USDT = 10**6


@dataclass(frozen=True)
class Dashboard:
    client: httpx.AsyncClient
    merchant_id: str
    other_merchant_id: str
    email: str


@pytest.fixture
async def dash(db: Database, config: Config) -> AsyncIterator[Dashboard]:
    """The app with a dashboard key, two merchants, and an operator of the first."""
    keyed = config.model_copy(update={"dashboard": DashboardConfig(secret_key="k" * 40)})
    merchant_id = await merchant_with_users(db, "alice")
    other = await merchant_with_users(db, "alice")
    await operators.add_operator(db, merchant_id, "ops@acme.example", PASSWORD)
    transport = httpx.ASGITransport(app=create_app(keyed, db))
    async with httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client:
        yield Dashboard(client, merchant_id, other, "ops@acme.example")


async def log_in(dash: Dashboard) -> str:
    """Sign the client in; the page's CSRF token."""
    answer = await dash.client.post(
        "/dashboard/login", data={"email": dash.email, "password": PASSWORD}
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    overview = await dash.client.get("/dashboard")
    assert overview.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', overview.text)
    assert found is not None
    return found.group(1)


async def test_pages_need_a_session(dash: Dashboard) -> None:
    for path in ("/dashboard", "/dashboard/holds", "/dashboard/deposits/dep_x"):
        answer = await dash.client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/dashboard/login?next=")
    assert (await dash.client.get("/dashboard/api/feed")).status_code == 401
    # a forged cookie is no session either
    dash.client.cookies.set("depositd_session", "made-up.signature", path="/dashboard")
    assert (await dash.client.get("/dashboard")).status_code == 303


async def test_a_wrong_password_is_told_and_signs_nobody_in(dash: Dashboard) -> None:
    for email, password in ((dash.email, "not the password"), ("nobody@acme.example", PASSWORD)):
        answer = await dash.client.post(
            "/dashboard/login", data={"email": email, "password": password}
        )
        assert answer.status_code == 401
        assert "The email or the password is wrong." in answer.text
        assert "set-cookie" not in answer.headers
    assert (await dash.client.get("/dashboard")).status_code == 303


async def test_the_operator_sees_their_merchants_deposits_only(
    dash: Dashboard, db: Database, assets: AssetBook
) -> None:
    ours = await record_observation(db, assets, paid(dash.merchant_id, 5 * USDT))
    theirs = await record_observation(db, assets, paid(dash.other_merchant_id, 7 * USDT))
    assert ours.deposit is not None
    assert theirs.deposit is not None
    await log_in(dash)

    feed = (await dash.client.get("/dashboard/api/feed")).json()
    assert ours.deposit.id in feed["rows"]
    assert theirs.deposit.id not in feed["rows"]
    timeline = await dash.client.get(f"/dashboard/deposits/{ours.deposit.id}")
    assert timeline.status_code == 200
    assert "credited" in timeline.text
    assert "5 USDT" in timeline.text  # the ledger entries
    assert (await dash.client.get(f"/dashboard/deposits/{theirs.deposit.id}")).status_code == 404
    for path in ("/dashboard/endpoints", "/dashboard/deliveries", "/dashboard/holds",
                 "/dashboard/alerts", "/dashboard/reconciliation"):  # fmt: skip
        assert (await dash.client.get(path)).status_code == 200, path


async def test_an_action_without_the_csrf_token_is_refused(
    dash: Dashboard, db: Database, assets: AssetBook
) -> None:
    usdt = replace(assets["USDT"], kyc_limits=((0, 10 * USDT),))
    limited = AssetBook([*(a for a in assets.values() if a.code != "USDT"), usdt])
    held = (await record_observation(db, limited, paid(dash.merchant_id, 50 * USDT))).deposit
    assert held is not None
    assert held.status.value == "held"
    csrf = await log_in(dash)
    approve = f"/dashboard/deposits/{held.id}/approve"

    for form in ({}, {"csrf": "forged"}):
        assert (await dash.client.post(approve, data=form)).status_code == 403
    still = await queries.get_deposit(db, dash.merchant_id, held.id)
    assert still.deposit.status.value == "held"

    done = await dash.client.post(approve, data={"csrf": csrf, "back": "/dashboard/holds"})
    assert done.status_code == 303
    assert done.headers["location"] == "/dashboard/holds?notice=approved"
    credited = await queries.get_deposit(db, dash.merchant_id, held.id)
    assert credited.deposit.status.value == "credited"


async def test_logging_out_ends_the_session(dash: Dashboard) -> None:
    csrf = await log_in(dash)
    cookie = dash.client.cookies.get("depositd_session")
    assert (await dash.client.post("/dashboard/logout", data={"csrf": csrf})).status_code == 303
    dash.client.cookies.set("depositd_session", cookie or "", path="/dashboard")
    assert (await dash.client.get("/dashboard")).status_code == 303


async def test_the_status_page_needs_its_signed_link(dash: Dashboard, db: Database) -> None:
    await addresses.set_xpub(db, dash.merchant_id, DEV_XPUB)
    key = await merchants.create_api_key(db, dash.merchant_id)
    made = await dash.client.post(
        "/v1/deposit-orders",
        json={"user": "alice", "asset": "ETH", "amount": "0.25"},
        headers={"authorization": f"Bearer {key.secret}"},
    )
    assert made.status_code == 201, made.text
    order = made.json()
    url = order["status_url"]
    assert url.startswith(f"/pay/{order['id']}?t=")

    page = await dash.client.get(url)
    assert page.status_code == 200
    assert order["address"] in page.text  # EIP-55, as the API gives it
    assert "<svg" in page.text
    assert "0.25" in page.text
    progress = await dash.client.get(url.replace("?t=", "/progress?t="))
    assert progress.json()["status"] == "awaiting_payment"

    for wrong in (
        f"/pay/{order['id']}",
        f"/pay/{order['id']}?t=guess",
        f"/pay/ord_x?t={url[-43:]}",
    ):
        assert (await dash.client.get(wrong)).status_code == 404, wrong
    answer = await dash.client.get(f"/pay/{order['id']}/progress?t=guess")
    assert answer.status_code == 404


async def test_pages_speak_simplified_chinese(dash: Dashboard) -> None:
    page = await dash.client.get("/dashboard/login", headers={"accept-language": "zh-CN,zh;q=0.9"})
    assert "登录" in page.text
    switched = await dash.client.get("/dashboard/login?lang=en")
    assert "Log in" in switched.text
    # the pick is remembered over the header
    again = await dash.client.get("/dashboard/login", headers={"accept-language": "zh-CN"})
    assert "Log in" in again.text
