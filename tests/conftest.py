"""Fixtures shared by every suite: a migrated database on each engine, apps, merchants."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from depositd.app import create_app
from depositd.config import Config, load_config
from depositd.db.engine import Database
from depositd.db.migrate import upgrade
from depositd.db.tables import metadata
from depositd.domain.assets import AssetBook
from depositd.services import merchants

#: every integration test runs once per engine; the test id ends in [sqlite] or [postgresql]
ENGINES = ("sqlite", "postgresql")
PG_ADMIN_URL = os.environ.get("DEPOSITD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many integration tests ran on each engine, so a missing one shows."""
    tally: Counter[tuple[str, str]] = Counter()
    for outcome in ("passed", "failed", "error", "skipped", "xfailed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "integration/" not in nodeid:
                continue
            if getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if outcome == "passed" and getattr(report, "when", "call") != "call":
                continue
            for engine in ENGINES:
                marks = (f"[{engine}", f"-{engine}]", f"-{engine}-")
                if any(m in nodeid for m in marks) or nodeid.endswith(f"_{engine}"):
                    tally[(engine, outcome)] += 1
    if tally:
        terminalreporter.section("integration tests per database engine")
        for engine in ENGINES:
            parts = [
                f"{tally[(engine, o)]} {o}"
                for o in ("passed", "failed", "error", "skipped")
                if tally[(engine, o)]
            ]
            terminalreporter.write_line(f"{engine:>10}: {', '.join(parts) or 'none ran'}")


ANVIL = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "anvil"


def anvil_command(port: int, *options: str) -> list[str]:
    """anvil on 127.0.0.1:``port``, quiet, historical states kept in memory: on disk they
    pile up in ~/.foundry and stay there when anvil is killed."""
    return [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent",
            "--max-persisted-states", "0", *options]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def depositd_serving(env: dict[str, str], log: Path, *options: str) -> Iterator[str]:
    """``depositd serve`` on a free port with ``env`` (its output in ``log``) until the
    block ends; yields its base URL once it answers ``/healthz``."""
    port = free_port()
    with log.open("ab") as out:
        server = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, "-m", "depositd.cli", "serve", "--port", str(port), *options],
            env=env,
            stdout=out,
            stderr=out,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield base_url
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """A real anvil dev chain (from ./node_modules, installed by make) for this session."""
    if not ANVIL.exists():
        raise RuntimeError(f"{ANVIL} is missing: run 'make install' (npm ci) first")
    port = free_port()
    with subprocess.Popen(  # noqa: S603 - our own dev dependency
        anvil_command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as node:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or node.poll() is not None:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)
        try:
            yield url
        finally:
            node.terminate()
            node.wait(timeout=10)


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config(environ={})


@pytest.fixture(scope="session")
def assets(config: Config) -> AssetBook:
    return config.asset_book()


@contextlib.asynccontextmanager
async def fresh_pg_database(prefix: str = "depositd_test") -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database on ``PG_ADMIN_URL``'s server; its URL. Dropped
    afterwards, with any connection still open to it."""
    admin = make_url(PG_ADMIN_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        db = Database(url)
        await upgrade(db)
        await db.dispose()
        yield url
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (dropped afterwards)."""
    async with fresh_pg_database() as url:
        yield url


async def reset(db: Database) -> None:
    """Empty every table (keeping the schema), restart the event cursor and the audit chain."""
    async with db.writer.begin() as conn:
        if db.is_sqlite:
            for table in reversed(metadata.sorted_tables):
                await conn.execute(table.delete())
        else:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        await conn.execute(text("INSERT INTO event_counter (id, last_seq) VALUES (1, 0)"))
        await conn.execute(
            text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :hash)"), {"hash": "0" * 64}
        )


@pytest.fixture(params=ENGINES)
async def db(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> AsyncIterator[Database]:
    """A migrated, empty database on each engine."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path}/depositd.db")
        await upgrade(database)
    else:
        database = Database(pg_url, pool_size=25)
        await reset(database)
    yield database
    await database.dispose()


@dataclass(frozen=True)
class Tenant:
    merchant_id: str
    key: str
    client: httpx.AsyncClient


@pytest.fixture
async def app_client(db: Database, config: Config) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config, db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://depositd.test") as client:
        yield client


async def _tenant(db: Database, client: httpx.AsyncClient, name: str) -> Tenant:
    merchant = await merchants.create_merchant(db, name)
    key = await merchants.create_api_key(db, merchant.id, "tests")
    authed = httpx.AsyncClient(
        transport=client._transport,
        base_url=client.base_url,
        headers={"Authorization": f"Bearer {key.secret}"},
    )
    return Tenant(merchant.id, key.secret, authed)


@pytest.fixture
async def tenant(db: Database, app_client: httpx.AsyncClient) -> AsyncIterator[Tenant]:
    """A merchant with an API key, and a client that sends it."""
    found = await _tenant(db, app_client, "acme")
    async with found.client:
        yield found


@pytest.fixture
async def other_tenant(db: Database, app_client: httpx.AsyncClient) -> AsyncIterator[Tenant]:
    found = await _tenant(db, app_client, "rival")
    async with found.client:
        yield found
