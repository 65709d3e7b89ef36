"""A server SIGKILLed after acknowledging a callback, before recording it: recorded once after
the restart, and a replay of the callback afterwards changes nothing."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx

from depositd.config import Config
from depositd.db.engine import Database
from depositd.services import merchants, users

from ..conftest import free_port
from .test_callbacks import ACK, SECRET, Setup, payload, signed

PROVIDER_SECTION = """
[providers.custody]
merchant = "{merchant}"
scheme = "standard_webhooks"
ack = {{ status = 200, body = '{ack}', content_type = "application/json" }}

[providers.custody.mapping]
event_id = "/event_id"
deposit_id = "/data/id"
user = "/data/customer"
asset = "/data/coin"
amount = "/data/amount"
status = "/data/state"
assets = {{ "usdt-erc20" = "USDT" }}
statuses = {{ PENDING = "pending", CONFIRMED = "succeeded", FAILED = "failed" }}
"""


def config_file(tmp_path: Path, merchant_id: str) -> Path:
    """The embedded defaults without a chain node to watch, plus the provider."""
    defaults = resources.files("depositd").joinpath("defaults.toml").read_text()
    defaults = re.sub(r"^(rpc_url|ws_url) = .*$", "", defaults, flags=re.MULTILINE)
    path = tmp_path / "depositd.toml"
    path.write_text(defaults + PROVIDER_SECTION.format(merchant=merchant_id, ack=ACK["body"]))
    return path


def start_server(
    db: Database, config: Path, port: int, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """``depositd serve`` on ``db`` with ``config``; an empty value in ``env`` unsets that
    variable (the custody provider's secret, for a config without it)."""
    environ = {
        **os.environ,
        "DEPOSITD_DATABASE__URL": db.url.render_as_string(hide_password=False)
        .replace("+aiosqlite", "")
        .replace("+asyncpg", ""),
        "DEPOSITD_PROVIDERS__CUSTODY__SECRETS": SECRET,
        "DEPOSITD_LOG_LEVEL": "warning",
        **env,
    }
    environ = {name: value for name, value in environ.items() if value}
    with log.open("ab") as out:  # the child keeps its own handle
        command = [sys.executable, "-m", "depositd.cli", "--config", str(config)]
        return subprocess.Popen(  # noqa: S603 - our own command line
            [*command, "serve", "--port", str(port)], env=environ, stdout=out, stderr=out
        )


async def wait_until_serving(
    port: int,
    server: subprocess.Popen[bytes],
    *,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = True,
) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(verify=verify) as client:
        while True:
            try:
                if (await client.get(f"{scheme}://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            await asyncio.sleep(0.1)


async def test_an_acknowledged_callback_survives_a_sigkill_and_is_recorded_once(
    db: Database, config: Config, tmp_path: Path
) -> None:
    merchant = await merchants.create_merchant(db, "acme")
    await users.ensure_user(db, merchant.id, "alice")
    path = config_file(tmp_path, merchant.id)
    port = free_port()
    log = tmp_path / "server.log"
    # the first server acknowledges but records nothing yet: processing only by a sweep that
    # waits a minute, so the kill lands between acknowledgement and processing
    first = start_server(
        db,
        path,
        port,
        log,
        DEPOSITD_CALLBACKS__PROCESS_INLINE="false",
        DEPOSITD_CALLBACKS__SWEEP_AFTER_SECONDS="60",
    )
    body = payload()
    try:
        await wait_until_serving(port, first)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.post("/v1/callbacks/custody", content=body, headers=signed(body))
        assert (answer.status_code, answer.text) == (200, ACK["body"]), log.read_text()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    setup = Setup(db, merchant.id, httpx.AsyncClient())
    (stored,) = await setup.callbacks()
    assert (stored["outcome"], stored["processed_at"]) == ("accepted", None)
    assert await setup.deposits() == []

    sweep_at_once = {
        "DEPOSITD_CALLBACKS__SWEEP_INTERVAL_SECONDS": "0.2",
        "DEPOSITD_CALLBACKS__SWEEP_AFTER_SECONDS": "0",
    }
    second = start_server(db, path, port, log, **sweep_at_once)
    try:
        await wait_until_serving(port, second)
        deadline = time.monotonic() + 20
        while (await setup.callbacks())[0]["processed_at"] is None:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            replay = await client.post("/v1/callbacks/custody", content=body, headers=signed(body))
        assert (replay.status_code, replay.text) == (200, ACK["body"])
        await asyncio.sleep(0.5)  # two more sweeps
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)

    rows = await setup.callbacks()
    assert [(r["outcome"], r["result"]) for r in rows] == [
        ("accepted", "credited"),
        ("replayed", None),
    ]
    (deposit,) = await setup.deposits()
    assert deposit["status"] == "credited"
    assert await setup.ledger_rows() == 2
    assert await setup.balance() == 25_500_000
