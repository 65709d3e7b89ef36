"""Missed-callback recovery (补单): overdue deposits are settled from the provider's status API
through the same entry point as callbacks, and the report names the sums that disagree."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import update

from depositd.config import CallbacksConfig, Config, StatusApiConfig
from depositd.db.engine import Database
from depositd.db.tables import accounts
from depositd.services.reconcile import Mismatch, Recovered, reconcile

from ..conftest import free_port
from .test_callbacks import SECRET, Setup, app_config, client_for, merchant_id, payload, signed
from .test_callbacks_crash import config_file
from .test_cli import depositd

__all__ = ["merchant_id"]  # the fixture, shared with test_callbacks


@dataclass
class StatusApi:
    """A provider's status API: answers what ``answers`` holds for each deposit id."""

    port: int
    answers: dict[str, object]
    asked: list[str]
    down: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/deposits/{{deposit_id}}"


@pytest.fixture
async def status_api() -> AsyncIterator[StatusApi]:
    api = StatusApi(free_port(), {}, [])

    async def answer(request: web.Request) -> web.Response:
        deposit_id = request.match_info["deposit_id"]
        api.asked.append(deposit_id)
        if api.down:
            return web.Response(status=503)
        if request.headers.get("x-api-key") != "status-token":
            return web.Response(status=401)
        if deposit_id not in api.answers:
            return web.Response(status=404)
        return web.json_response(api.answers[deposit_id])

    app = web.Application()
    app.router.add_get("/deposits/{deposit_id}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", api.port).start()
    try:
        yield api
    finally:
        await runner.cleanup()


def with_status_api(config: Config, merchant_id: str, api: StatusApi) -> Config:
    changed = app_config(config, merchant_id)
    custody = changed.providers["custody"]
    status = StatusApiConfig(url=api.url, token_header="x-api-key", token="status-token")
    return changed.model_copy(
        update={"providers": {"custody": custody.model_copy(update={"status": status})}}
    )


@pytest.fixture
async def setup(
    db: Database, config: Config, merchant_id: str, status_api: StatusApi
) -> AsyncIterator[tuple[Setup, Config]]:
    changed = with_status_api(config, merchant_id, status_api)
    async with client_for(db, changed) as client:
        yield Setup(db, merchant_id, client), changed


def confirmed(deposit: str = "dep-77", **data: object) -> object:
    """The status API's answer: the same shape as the provider's callbacks."""
    return json.loads(payload("evt-status", "CONFIRMED", id=deposit, **data))


async def test_an_overdue_deposit_is_settled_from_the_status_api(
    setup: tuple[Setup, Config], status_api: StatusApi
) -> None:
    callbacks, config = setup
    pending = payload("evt-1", "PENDING")
    assert (await callbacks.post(pending, signed(pending))).status_code == 200
    # the provider's "confirmed" callback never arrives; its status API knows
    status_api.answers["dep-77"] = confirmed()

    not_yet = await reconcile(callbacks.db, config, config.asset_book())
    assert not_yet.recovered == []  # not overdue under the 10-minute SLA
    report = await reconcile(callbacks.db, config, config.asset_book(), sla=timedelta(0))
    assert report.recovered == [Recovered("custody", "dep-77", "pending", "credited")]
    assert report.mismatches == []
    assert status_api.asked == ["dep-77"]
    (deposit,) = await callbacks.deposits()
    assert deposit["status"] == "credited"
    assert await callbacks.balance() == 25_500_000

    again = await reconcile(callbacks.db, config, config.asset_book(), sla=timedelta(0))
    assert again.recovered == []  # credited: nothing overdue, nothing credited twice
    assert await callbacks.ledger_rows() == 2


async def test_a_status_api_that_does_not_answer_is_reported(
    setup: tuple[Setup, Config], status_api: StatusApi
) -> None:
    callbacks, config = setup
    pending = payload("evt-1", "PENDING")
    await callbacks.post(pending, signed(pending))
    status_api.down = True
    report = await reconcile(callbacks.db, config, config.asset_book(), sla=timedelta(0))
    assert report.unanswered == ["custody:dep-77"]
    assert (await callbacks.deposits())[0]["status"] == "pending"


async def test_sums_that_disagree_are_reported(setup: tuple[Setup, Config]) -> None:
    callbacks, config = setup
    credited = payload("evt-1", "CONFIRMED")
    await callbacks.post(credited, signed(credited))
    # the provider says a deposit for a user we do not know succeeded: never credited here
    stranger = payload("evt-2", "CONFIRMED", id="dep-88", customer="mallory", amount="7")
    await callbacks.post(stranger, signed(stranger))
    # and a cached balance no longer matches its entries
    async with callbacks.db.writer.begin() as conn:
        await conn.execute(
            update(accounts).where(accounts.c.key.like("user:%:USDT:available")).values(balance=1)
        )

    report = await reconcile(callbacks.db, config, config.asset_book(), sla=timedelta(0))
    kinds = sorted((m.kind, m.subject) for m in report.mismatches)
    assert [kind for kind, _ in kinds] == ["account_balance", "provider_claim", "provider_sum"]
    assert Mismatch("provider_claim", "custody:dep-88", "credited", "missing") in report.mismatches
    assert Mismatch("provider_sum", "custody:USDT", "32500000", "25500000") in report.mismatches


async def test_the_reconcile_command_exits_1_when_something_disagrees(
    db: Database, merchant_id: str, tmp_path: Path
) -> None:
    path = str(config_file(tmp_path, merchant_id))
    env = {
        "DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)
        .replace("+aiosqlite", "")
        .replace("+asyncpg", ""),
        "DEPOSITD_PROVIDERS__CUSTODY__SECRETS": SECRET,
        "DEPOSITD_LOG_LEVEL": "warning",
    }
    agreed = depositd("--config", path, "reconcile", "--sla-seconds", "0", cwd=tmp_path, env=env)
    assert (agreed.returncode, agreed.stdout.splitlines()[-1]) == (0, "mismatches: 0")
    async with db.writer.begin() as conn:
        await conn.execute(
            accounts.insert().values(key="user:x:USDT:available", merchant_id=merchant_id,
                                     user_id=None, asset="USDT", side="available", balance=5)
        )  # fmt: skip
    found = depositd("--config", path, "reconcile", "--sla-seconds", "0", cwd=tmp_path, env=env)
    assert found.returncode == 1, found.stderr
    assert "MISMATCH account_balance user:x:USDT:available: expected 0, found 5" in found.stdout
    negative = depositd("--config", path, "reconcile", "--sla-seconds", "-1", cwd=tmp_path,
                        env=env)  # fmt: skip
    assert (negative.returncode, negative.stderr.strip()) == (
        1, "depositd: --sla-seconds '-1': must not be negative"
    )  # fmt: skip


async def test_a_claim_still_settling_is_not_a_mismatch_until_the_sla_passes(
    db: Database, config: Config, merchant_id: str, status_api: StatusApi
) -> None:
    # acknowledged and stored, its recording not done yet (no inline processing here): the
    # workers' sweep or the reconciler will record it; until the SLA it is not a disagreement
    changed = with_status_api(config, merchant_id, status_api).model_copy(
        update={"callbacks": CallbacksConfig(process_inline=False)}
    )
    async with client_for(db, changed) as client:
        stranger = payload("evt-2", "CONFIRMED", id="dep-88", customer="mallory", amount="7")
        answer = await Setup(db, merchant_id, client, inline=False).post(stranger, signed(stranger))
        assert answer.status_code == 200
    assets = changed.asset_book()
    now = datetime.now(UTC)
    settling = await reconcile(db, changed, assets, clock=lambda: now)
    assert settling.mismatches == []
    # past the SLA it still is not credited (an unknown user): now it is reported
    overdue = await reconcile(db, changed, assets, clock=lambda: now + timedelta(minutes=11))
    assert Mismatch("provider_claim", "custody:dep-88", "credited", "missing") in (
        overdue.mismatches
    )
