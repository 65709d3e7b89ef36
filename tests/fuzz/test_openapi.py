"""API fuzzing: schemathesis generates requests from /openapi.json for every operation and
checks the answers of a real ``depositd serve`` — never a 5xx, and status codes, content types
and bodies as the schema documents them."""

from __future__ import annotations

import asyncio
import email
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from depositd.app import create_app
from depositd.config import load_config
from depositd.db.engine import Database
from depositd.db.migrate import upgrade
from depositd.devchain import DEMO_XPUB
from depositd.sealing import Sealer
from depositd.services import addresses, merchants, users

from ..conftest import depositd_serving

PASSWORD = "a long generated passphrase"


class Server:
    def __init__(self, base_url: str, api_key: str, session: str) -> None:
        self.base_url, self.api_key, self.session = base_url, api_key, session

    def headers_for(self, path: str) -> dict[str, str]:
        token = self.session if path.startswith("/v1/me") else self.api_key
        return {"Authorization": f"Bearer {token}"}


async def _seed(url: str) -> tuple[str, str]:
    db = Database(url)
    try:
        await upgrade(db)
        merchant = await merchants.create_merchant(db, "fuzz")
        await addresses.set_xpub(db, merchant.id, DEMO_XPUB)
        await users.ensure_user(db, merchant.id, "alice")
        key = await merchants.create_api_key(db, merchant.id)
    finally:
        await db.dispose()
    return merchant.id, key.secret


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    where = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{where}/depositd.db"
    merchant_id, api_key = asyncio.run(_seed(url))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
    environ.update(
        DEPOSITD_DATABASE__URL=url,
        DEPOSITD_LOG_LEVEL="error",
        DEPOSITD_END_USERS__KYC_KEY=Sealer.new_key_text(),
        DEPOSITD_END_USERS__AUTH_REQUESTS_PER_MINUTE="100000",
        DEPOSITD_EMAIL__OUTBOX_DIR=str(where / "outbox"),
        # no chain node: the fuzzer exercises the API, not a watcher
        DEPOSITD_CHAINS__ANVIL__RPC_URL="",
        DEPOSITD_CHAINS__ANVIL__WS_URL="",
    )
    environ = {k: v for k, v in environ.items() if v}
    with depositd_serving(environ, where / "server.log", "--no-workers") as base:
        yield Server(base, api_key, _session(base, merchant_id, where / "outbox"))


def _session(base: str, merchant_id: str, outbox: Path) -> str:
    account = {"merchant": merchant_id, "email": "fuzz@example.com", "password": PASSWORD}
    assert httpx.post(f"{base}/v1/auth/register", json=account).status_code == 202
    [mail] = [email.message_from_bytes(p.read_bytes()) for p in outbox.glob("*.eml")]
    body = mail.get_payload(decode=True)
    assert isinstance(body, bytes)
    token = re.search(r"token is: (\S+)", body.decode())
    assert token
    assert httpx.post(f"{base}/v1/auth/verify-email", json={"token": token[1]}).is_success
    return str(httpx.post(f"{base}/v1/auth/login", json=account).json()["token"])


#: the document /openapi.json serves (routes do not depend on the configuration); loaded at
#: import, as schemathesis parametrizes at collection (its lazy fixture loader does not work
#: with pytest 9)
schema = schemathesis.openapi.from_dict(create_app(load_config(environ={})).openapi())


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("DEPOSITD_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_every_generated_request_as_documented(case: Any, server: Server) -> None:
    # every check but "a schema-valid request is accepted": a well-formed request for an
    # asset or user we do not have is rightly a 4xx
    case.call_and_validate(
        base_url=server.base_url,
        headers=server.headers_for(case.path),
        excluded_checks=[positive_data_acceptance],
    )
