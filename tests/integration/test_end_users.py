"""End users' own accounts through the API: sign-up, email verification, login, sessions,
lockout and rate limits, KYC submission and review, and reading only their own data."""

from __future__ import annotations

import email
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from depositd.app import create_app
from depositd.config import Config
from depositd.db.engine import Database
from depositd.db.tables import end_users, kyc_submissions
from depositd.sealing import Sealer
from depositd.services import merchants

PASSWORD = "correct horse battery staple"


@dataclass
class Site:
    """The app with end-user accounts set up, a merchant and its operator client."""

    client: httpx.AsyncClient
    operator: httpx.AsyncClient
    merchant_id: str
    outbox: Path
    db: Database

    def mails_to(self, address: str) -> list[email.message.Message]:
        found = []
        for path in sorted(self.outbox.glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes())
            if message["To"] == address:
                found.append(message)
        return found

    def token_for(self, address: str) -> str:
        body = self.mails_to(address)[-1].get_payload(decode=True)
        assert isinstance(body, bytes)
        match = re.search(r"Your verification token is: (\S+)", body.decode())
        assert match, body
        return match.group(1)

    async def register(self, address: str, password: str = PASSWORD) -> httpx.Response:
        body = {"merchant": self.merchant_id, "email": address, "password": password}
        return await self.client.post("/v1/auth/register", json=body)

    async def login(self, address: str, password: str = PASSWORD) -> httpx.Response:
        body = {"merchant": self.merchant_id, "email": address, "password": password}
        return await self.client.post("/v1/auth/login", json=body)

    async def signed_up(self, address: str) -> dict[str, str]:
        """Register, verify and log in: the session's Authorization header."""
        assert (await self.register(address)).status_code == 202
        verified = await self.client.post(
            "/v1/auth/verify-email", json={"token": self.token_for(address)}
        )
        assert verified.status_code == 200, verified.text
        session = await self.login(address)
        assert session.status_code == 200, session.text
        return {"Authorization": f"Bearer {session.json()['token']}"}


def end_user_config(config: Config, tmp_path: Path, **end_users_settings: object) -> Config:
    """The test config with an outbox, a KYC key and USDT limited to 100 a day at level 0."""
    settings = {"kyc_key": Sealer.new_key_text(), **end_users_settings}
    assets = [
        a.model_copy(update={"kyc_limits": {0: "100", 1: "1000"}}) if a.code == "USDT" else a
        for a in config.assets
    ]
    return config.model_copy(
        update={
            "end_users": config.end_users.model_copy(update=settings),
            "email": config.email.model_copy(update={"outbox_dir": tmp_path / "outbox"}),
            "assets": assets,
        }
    )


async def open_site(db: Database, config: Config, tmp_path: Path) -> AsyncIterator[Site]:
    app = create_app(config, db)
    merchant = await merchants.create_merchant(db, "acme")
    key = await merchants.create_api_key(db, merchant.id)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client,
        httpx.AsyncClient(
            transport=transport,
            base_url="http://depositd.test",
            headers={"Authorization": f"Bearer {key.secret}"},
        ) as operator,
    ):
        yield Site(client, operator, merchant.id, tmp_path / "outbox", db)


@pytest.fixture
async def site(db: Database, config: Config, tmp_path: Path) -> AsyncIterator[Site]:
    async for found in open_site(db, end_user_config(config, tmp_path), tmp_path):
        yield found


async def test_register_verify_login_and_read_my_account(site: Site) -> None:
    registered = await site.register("Alice@Example.com")
    assert registered.status_code == 202
    assert registered.json()["email"] == "alice@example.com"
    [mail] = site.mails_to("alice@example.com")
    assert mail["Subject"] == "Verify your email address"
    # not verified yet: login is refused with a reason the user can act on
    early = await site.login("alice@example.com")
    assert early.status_code == 403
    assert early.json()["type"] == "urn:depositd:problem:email-not-verified"
    token = site.token_for("alice@example.com")
    verified = await site.client.post("/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200
    assert verified.json()["email_verified"] is True
    again = await site.client.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 422
    assert again.json()["type"] == "urn:depositd:problem:invalid-token"

    session = await site.login("ALICE@example.com ")
    assert session.status_code == 200
    assert session.json()["token"].startswith("dus_")
    auth = {"Authorization": f"Bearer {session.json()['token']}"}
    me = (await site.client.get("/v1/me", headers=auth)).json()
    assert me["email"] == "alice@example.com"
    assert me["kyc_level"] == 0
    # the account is one of the merchant's users, known by the account id
    user = await site.operator.get(f"/v1/users/{me['id']}")
    assert user.status_code == 200
    assert user.json()["id"] == me["user"]["id"]

    assert (await site.client.post("/v1/auth/logout", headers=auth)).status_code == 204
    gone = await site.client.get("/v1/me", headers=auth)
    assert gone.status_code == 401


async def test_a_taken_address_is_not_revealed_and_its_owner_is_told(site: Site) -> None:
    await site.signed_up("bob@example.com")
    again = await site.register("bob@example.com", "another good passphrase")
    assert again.status_code == 202  # the same answer as for a new address
    assert site.mails_to("bob@example.com")[-1]["Subject"] == (
        "Someone tried to register with your address"
    )
    async with site.db.reader.connect() as conn:
        rows = (await conn.execute(select(end_users.c.email))).all()
    assert [r.email for r in rows] == ["bob@example.com"]
    # the old password still works, the new one does not
    assert (await site.login("bob@example.com")).status_code == 200
    assert (await site.login("bob@example.com", "another good passphrase")).status_code == 401


@pytest.mark.parametrize(
    ("address", "password", "slug", "detail"),
    [
        ("carol@example.com", "short", "weak-password", "at least 10"),
        ("carol@example.com", "password123", "weak-password", "leaked"),
        ("carol@example.com", "aaaaaaaaaaaa", "weak-password", "repeated"),
        ("carol@example.com", "my carol password", "weak-password", "email address"),
        ("carol.example.com", PASSWORD, "invalid-email", "not an email"),
    ],
)
async def test_bad_sign_ups_are_refused_with_the_reason(
    site: Site, address: str, password: str, slug: str, detail: str
) -> None:
    refused = await site.register(address, password)
    assert refused.status_code == 422
    assert refused.json()["type"] == f"urn:depositd:problem:{slug}"
    assert detail in refused.json()["detail"]
    assert site.mails_to(address) == []


async def test_unknown_merchant_and_unknown_account(site: Site) -> None:
    body = {"merchant": "mer_nope", "email": "dan@example.com", "password": PASSWORD}
    unknown = await site.client.post("/v1/auth/register", json=body)
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "urn:depositd:problem:unknown-merchant"
    nobody = await site.login("nobody@example.com")
    assert nobody.status_code == 401
    assert nobody.json()["type"] == "urn:depositd:problem:invalid-credentials"
    resend = await site.client.post(
        "/v1/auth/resend-verification",
        json={"merchant": site.merchant_id, "email": "nobody@example.com"},
    )
    assert resend.status_code == 202
    assert site.mails_to("nobody@example.com") == []


async def test_resent_token_verifies(site: Site) -> None:
    await site.register("erin@example.com")
    first = site.token_for("erin@example.com")
    resent = await site.client.post(
        "/v1/auth/resend-verification",
        json={"merchant": site.merchant_id, "email": "erin@example.com"},
    )
    assert resent.status_code == 202
    second = site.token_for("erin@example.com")
    assert second != first
    ok = await site.client.post("/v1/auth/verify-email", json={"token": second})
    assert ok.status_code == 200


async def test_failed_logins_lock_the_account(site: Site) -> None:
    await site.signed_up("frank@example.com")
    for _ in range(4):
        wrong = await site.login("frank@example.com", "not the password at all")
        assert wrong.status_code == 401
    locked = await site.login("frank@example.com", "not the password at all")
    assert locked.status_code == 429
    assert locked.json()["type"] == "urn:depositd:problem:account-locked"
    assert 800 <= int(locked.headers["Retry-After"]) <= 900
    # locked means locked: the right password waits too
    right = await site.login("frank@example.com")
    assert right.status_code == 429


async def test_auth_requests_are_rate_limited_per_address(
    db: Database, config: Config, tmp_path: Path
) -> None:
    limited = end_user_config(config, tmp_path, auth_requests_per_minute=3)
    async for site in open_site(db, limited, tmp_path):
        answers = [(await site.login("gina@example.com")).status_code for _ in range(4)]
        assert answers == [401, 401, 401, 429]
        refused = await site.login("gina@example.com")
        assert refused.json()["type"] == "urn:depositd:problem:too-many-requests"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        # the rest of the API is not counted
        assert (await site.operator.get("/v1/deposits")).status_code == 200


async def test_sessions_and_api_keys_are_not_interchangeable(site: Site) -> None:
    auth = await site.signed_up("hank@example.com")
    assert (await site.client.get("/v1/deposits", headers=auth)).status_code == 401
    assert (await site.operator.get("/v1/me")).status_code == 401
    assert (await site.client.get("/v1/me")).status_code == 401


async def test_kyc_is_sealed_at_rest_and_reviewed_by_the_operator(site: Site) -> None:
    auth = await site.signed_up("ivy@example.com")
    fields = {
        "level": 1,
        "full_name": "Ivy Quartermaine",
        "date_of_birth": "1990-04-01",
        "country": "DE",
        "document_type": "passport",
        "document_number": "C01X00T47",
    }
    submitted = await site.client.post("/v1/me/kyc", json=fields, headers=auth)
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["status"] == "pending"
    twice = await site.client.post("/v1/me/kyc", json=fields, headers=auth)
    assert twice.status_code == 409
    async with site.db.reader.connect() as conn:
        sealed = (await conn.execute(select(kyc_submissions.c.sealed))).scalar_one()
    assert b"Quartermaine" not in sealed
    assert b"C01X00T47" not in sealed

    pending = (await site.operator.get("/v1/kyc-submissions?status=pending")).json()["data"]
    assert [p["fields"]["full_name"] for p in pending] == ["Ivy Quartermaine"]
    assert pending[0]["user"]["email"] == "ivy@example.com"
    rejected = await site.operator.post(
        f"/v1/kyc-submissions/{pending[0]['id']}/reject",
        json={"reason": "the passport photo is unreadable; upload a sharper one"},
    )
    assert rejected.status_code == 200
    mine = (await site.client.get("/v1/me/kyc", headers=auth)).json()
    assert mine["kyc_level"] == 0
    assert mine["submissions"][0]["status"] == "rejected"
    assert "unreadable" in mine["submissions"][0]["reason"]
    decided = await site.operator.post(f"/v1/kyc-submissions/{pending[0]['id']}/approve", json={})
    assert decided.status_code == 409

    retry = await site.client.post("/v1/me/kyc", json={**fields, "level": 2}, headers=auth)
    approved = await site.operator.post(
        f"/v1/kyc-submissions/{retry.json()['id']}/approve", json={"level": 1}
    )
    assert approved.json()["granted_level"] == 1
    assert (await site.client.get("/v1/me", headers=auth)).json()["kyc_level"] == 1
    lower = await site.client.post("/v1/me/kyc", json=fields, headers=auth)
    assert lower.status_code == 422
    assert lower.json()["type"] == "urn:depositd:problem:invalid-kyc-level"


async def test_another_merchant_cannot_see_or_decide_kyc(site: Site, db: Database) -> None:
    auth = await site.signed_up("jack@example.com")
    fields = {
        "level": 1,
        "full_name": "Jack",
        "date_of_birth": "1985-01-01",
        "country": "FR",
        "document_type": "national_id",
        "document_number": "X1",
    }
    submitted = (await site.client.post("/v1/me/kyc", json=fields, headers=auth)).json()
    rival = await merchants.create_merchant(db, "rival")
    key = await merchants.create_api_key(db, rival.id)
    other = {"Authorization": f"Bearer {key.secret}"}
    assert (await site.client.get("/v1/kyc-submissions", headers=other)).json()["data"] == []
    seen = await site.client.get(f"/v1/kyc-submissions/{submitted['id']}", headers=other)
    assert seen.status_code == 404
    act = await site.client.post(
        f"/v1/kyc-submissions/{submitted['id']}/approve", json={}, headers=other
    )
    assert act.status_code == 404


async def test_kyc_without_a_key_is_refused(db: Database, config: Config, tmp_path: Path) -> None:
    keyless = end_user_config(config, tmp_path, kyc_key=None)
    async for site in open_site(db, keyless, tmp_path):
        auth = await site.signed_up("kim@example.com")
        refused = await site.client.post(
            "/v1/me/kyc",
            json={
                "level": 1,
                "full_name": "Kim",
                "date_of_birth": "1970-01-01",
                "country": "KR",
                "document_type": "passport",
                "document_number": "M1",
            },
            headers=auth,
        )
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:depositd:problem:kyc-not-configured"


async def test_end_users_read_only_their_own_records(site: Site) -> None:
    lee = await site.signed_up("lee@example.com")
    max_ = await site.signed_up("max@example.com")
    lee_id = (await site.client.get("/v1/me", headers=lee)).json()["id"]
    observed = await site.operator.post(
        "/v1/observations",
        json={
            "provider": "custody",
            "provider_deposit_id": "lee-1",
            "user": lee_id,
            "asset": "USDT",
            "amount": "25",
            "status": "succeeded",
        },
    )
    assert observed.status_code == 200, observed.text
    deposit_id = observed.json()["deposit"]["id"]
    assert [
        d["id"] for d in (await site.client.get("/v1/me/deposits", headers=lee)).json()["data"]
    ] == [deposit_id]
    assert (await site.client.get(f"/v1/me/deposits/{deposit_id}", headers=lee)).status_code == 200
    assert (await site.client.get("/v1/me/deposits", headers=max_)).json()["data"] == []
    theirs = await site.client.get(f"/v1/me/deposits/{deposit_id}", headers=max_)
    assert theirs.status_code == 404
    balances = (await site.client.get("/v1/me/balances", headers=lee)).json()["balances"]
    assert [(b["asset"], b["available"]) for b in balances] == [("USDT", "25")]
    assert (await site.client.get("/v1/me/balances", headers=max_)).json()["balances"] == []
    records = (await site.client.get("/v1/me/transactions", headers=lee)).json()["data"]
    assert [r["deposit_id"] for r in records] == [deposit_id]
    assert (await site.client.get("/v1/me/transactions", headers=max_)).json()["data"] == []
