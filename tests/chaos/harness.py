"""Chaos soak: depositd behind nginx on PostgreSQL under load while its processes are SIGKILLed
at random, then every book checked — deposits credited once, totals, webhooks, streams, errors.

Used by ``tests/chaos/test_chaos.py`` (a minute, in ``make test``) and ``bench/chaos.py`` (ten
minutes, figures). Everything runs on 127.0.0.1 and stops by itself:

* a private anvil mining a block a second, with the demo USDT token;
* ``depositd serve --no-workers`` replicas behind nginx (rendered from ``deploy/nginx.conf``)
  and ``depositd worker`` processes, on a fresh PostgreSQL database;
* a payer sending ETH and USDT deposits to users' addresses (derived through the API);
* a provider posting signed Standard Webhooks callbacks (USD, a fiat asset) through nginx,
  retrying until acknowledged, replaying some on purpose;
* three webhook receivers (normal, flapping with 500s in bursts, slow) and two WebSocket
  clients resuming with ``after=<last seq>``;
* the chaos: every few seconds one running depositd process is SIGKILLed and restarted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import pwd
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from depositd.chain.rpc import EvmRpc, RpcError
from depositd.config import load_config
from depositd.db.engine import Database
from depositd.db.tables import accounts, deliveries, deposits, events, ledger_entries
from depositd.devchain import DEMO_XPUB, ensure_demo_token, pay
from depositd.domain.assets import Asset
from tests.conftest import anvil_command, free_port, fresh_pg_database

REPO = Path(__file__).resolve().parents[2]
NGINX = os.environ.get("DEPOSITD_NGINX", "/usr/sbin/nginx")
PROVIDER_SECRET = "whsec_" + base64.b64encode(b"chaos-provider-secret-0123456789").decode()
#: an API replica's window ends this long after it answers again: nginx keeps a replica it
#: failed to reach out of rotation for ``fail_timeout`` (5 s in deploy/nginx.conf), so while
#: the other replica dies in that time, nginx has none
WINDOW_GRACE_SECONDS = 5.0

CONFIG = """
log_level = "info"

[server]
host = "127.0.0.1"
trusted_proxies = ["127.0.0.1/32"]

[delivery]
allow_http = true
allow_networks = ["127.0.0.1/32"]
# a killed sender's claimed deliveries go back to the others after the lease
lease_seconds = 15
batch_size = 50
circuit_open_seconds = 5

[callbacks]
sweep_interval_seconds = 1
sweep_after_seconds = 3

[chains.anvil]
chain_id = 31337
block_time_seconds = 1.0
rpc_url = "http://127.0.0.1:{anvil_port}"
ws_url = "ws://127.0.0.1:{anvil_port}"
poll_interval_seconds = 0.5
start_block = 0
reorg_window = 64

[[assets]]
code = "ETH"
chain = "anvil"
symbol = "ETH"
decimals = 18
min_deposit = "0.001"
confirmations = 3

[[assets]]
code = "USDT"
chain = "anvil"
symbol = "USDT"
decimals = 6
contract = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
min_deposit = "1"
confirmations = 3

[[assets]]
code = "USD"
symbol = "USD"
decimals = 2
min_deposit = "1"

[providers.custody]
merchant = "{merchant}"
scheme = "standard_webhooks"
ack = {{ status = 200, body = '{{"ok":true}}', content_type = "application/json" }}

[providers.custody.mapping]
event_id = "/event_id"
deposit_id = "/data/id"
user = "/data/customer"
asset = "/data/currency"
amount = "/data/amount"
amount_unit = "base"
status = "/data/state"
statuses = {{ PENDING = "pending", CONFIRMED = "succeeded" }}
"""


class ChaosError(RuntimeError):
    """The soak itself could not run (a process that does not start, a tool missing)."""


@dataclass(frozen=True)
class Load:
    """How hard the soak pushes."""

    #: ETH and USDT deposits sent per second (on average)
    deposits_per_second: float = 2.0
    #: provider deposits per second, each one or two callbacks
    callbacks_per_second: float = 5.0
    #: share of acknowledged callbacks posted again with the same event id
    replay_share: float = 0.1
    users: int = 20


@dataclass(frozen=True)
class Settings:
    seconds: float = 600
    #: mean seconds between kills (each wait drawn from 0.5x to 1.5x)
    kill_every: float = 4.0
    #: a killed process is started again after this long
    restart_after: float = 1.0
    seed: int = 1
    api_replicas: int = 2
    workers: int = 2
    load: Load = Load()
    #: after the chaos, how long everything may take to settle (bounded)
    drain_seconds: float = 180


# -- kill windows and errors --------------------------------------------------------------


@dataclass
class Window:
    kind: str
    member: str
    start: float
    end: float | None = None

    def holds(self, moment: float) -> bool:
        return self.start <= moment <= (self.end if self.end is not None else float("inf"))


@dataclass
class Timeline:
    """Kill windows and the errors clients saw, on the wall clock (logs use it too)."""

    windows: list[Window] = field(default_factory=list)
    #: (when, source, what)
    errors: list[tuple[float, str, str]] = field(default_factory=list)

    def error(self, source: str, what: str) -> None:
        self.errors.append((time.time(), source, what))

    def in_window(self, moment: float, kind: str | None = None) -> bool:
        return any(w.holds(moment) for w in self.windows if kind is None or w.kind == kind)

    def outside(self, kind: str) -> list[tuple[float, str, str]]:
        """Errors at no moment of a ``kind`` window: clients see only API replicas die."""
        return [e for e in self.errors if not self.in_window(e[0], kind)]

    def describe(self) -> str:
        """Every window and error in time order, one a line (for reading after a run)."""
        lines = [(w.start, f"kill {w.member} until {_clock(w.end) if w.end else '-'}")
                 for w in self.windows]  # fmt: skip
        lines += [(moment, f"{source}: {what[:120]!r}") for moment, source, what in self.errors]
        return "".join(f"{_clock(moment)} {line}\n" for moment, line in sorted(lines))

    def covered(self, kind: str, begin: float, end: float) -> float:
        """Seconds of [begin, end] inside some ``kind`` window."""
        spans = sorted(
            (max(w.start, begin), min(w.end or end, end))
            for w in self.windows
            if w.kind == kind and w.start < end
        )
        total, reach = 0.0, begin
        for start, stop in spans:
            if stop > reach:
                total += stop - max(start, reach)
                reach = stop
        return total


# -- processes ----------------------------------------------------------------------------


@dataclass
class Member:
    """One depositd process of the cluster: an API replica (with a port) or a worker."""

    name: str
    kind: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    ready: bool = False

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own handle
            self.process = subprocess.Popen(  # noqa: S603 - our own command line
                self.argv, env=self.env, stdout=out, stderr=out
            )
        self.starts += 1
        self.ready = False

    def kill(self) -> None:
        assert self.process is not None
        self.ready = False
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    async def until_ready(self, session: aiohttp.ClientSession, within: float = 90) -> None:
        """Return once it serves (an API replica) or its sender runs (a worker)."""
        deadline = time.monotonic() + within
        while not await self._answers(session):
            assert self.process is not None
            if self.process.poll() is not None:
                raise ChaosError(f"{self.name} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise ChaosError(f"{self.name} not ready within {within:.0f} s: {self.tail()}")
            await asyncio.sleep(0.1)
        self.ready = True

    async def _answers(self, session: aiohttp.ClientSession) -> bool:
        if self.port is None:
            return self.log_text().count('"sender started"') >= self.starts
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                return answer.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def nginx_site(listen_port: int, replica_ports: Iterable[int]) -> str:
    """``deploy/nginx.conf`` listening on ``listen_port``, balancing these replicas."""
    site = (REPO / "deploy" / "nginx.conf").read_text()
    found = re.search(r"^(\s*)server 127\.0\.0\.1:\d+( [^;\n]*)?;\n", site, re.MULTILINE)
    assert found is not None, "deploy/nginx.conf names no upstream server"
    indent, options = found.group(1), found.group(2) or ""
    servers = "".join(f"{indent}server 127.0.0.1:{p}{options};\n" for p in replica_ports)
    site = re.sub(r"(^\s*server 127\.0\.0\.1:\d+[^\n]*\n)+", servers, site, flags=re.MULTILINE)
    return site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")


def nginx_main(directory: Path) -> str:
    """The main nginx.conf around the site: everything kept inside ``directory``."""
    temp = "\n".join(
        f"    {what}_temp_path {directory}/{what};"
        for what in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    log_format chaos '$msec $status $upstream_status "$request"';
    access_log {directory}/access.log chaos;
{temp}
    include {directory}/depositd.conf;
}}
"""


async def _until_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ChaosError(f"{what} did not start on port {port}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


@dataclass
class Cluster:
    workdir: Path
    db: Database
    merchant_id: str
    api_key: str
    base_url: str
    anvil_url: str
    members: list[Member]
    assets: dict[str, Asset]
    session: aiohttp.ClientSession

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def api(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(
            method, self.base_url + path, json=body, headers=self.auth
        ) as answer:
            found = await answer.json(content_type=None)
            if answer.status >= 300:
                raise ChaosError(f"{method} {path}: {answer.status} {found}")
            return found

    def nginx_lines(self) -> list[tuple[float, int, str]]:
        """(when, status, request) of each request nginx answered."""
        log = self.workdir / "nginx" / "access.log"
        found = []
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            moment, status, _upstream, request = line.split(" ", 3)
            found.append((float(moment), int(status), request))
        return found


@contextlib.asynccontextmanager
async def cluster(
    workdir: Path, *, api_replicas: int, workers: int, say: Callable[[str], None] = print
) -> AsyncIterator[Cluster]:
    """A fresh database, anvil, nginx, ``api_replicas`` replicas and ``workers`` workers."""
    _prepare(workdir)
    started: list[subprocess.Popen[bytes]] = []
    members: list[Member] = []
    async with (
        fresh_pg_database("depositd_chaos") as url,
        aiohttp.ClientSession() as session,
    ):
        db = Database(url)
        try:
            anvil_port = free_port()
            anvil = _spawn(anvil_command(anvil_port, "--block-time", "1"), workdir / "anvil.log")
            started.append(anvil)
            await _until_port(anvil_port, anvil, "anvil")
            merchant_id, api_key = await _merchant(db)
            path = workdir / "depositd.toml"
            path.write_text(CONFIG.format(anvil_port=anvil_port, merchant=merchant_id))
            config = load_config(path, {"DEPOSITD_PROVIDERS__CUSTODY__SECRETS": PROVIDER_SECRET})
            book = config.asset_book()
            async with EvmRpc(f"http://127.0.0.1:{anvil_port}") as rpc:
                await ensure_demo_token(rpc, book["USDT"])
            environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPOSITD_")}
            environ.update(
                DEPOSITD_DATABASE__URL=url,
                DEPOSITD_PROVIDERS__CUSTODY__SECRETS=PROVIDER_SECRET,
            )
            command = [sys.executable, "-m", "depositd.cli", "--config", str(path)]
            for n in range(api_replicas):
                port = free_port()
                members.append(
                    Member(
                        f"api-{n + 1}",
                        "api",
                        [*command, "serve", "--no-workers", "--port", str(port)],
                        environ,
                        workdir / f"api-{n + 1}.log",
                        port,
                    )
                )
            for n in range(workers):
                members.append(
                    Member(
                        f"worker-{n + 1}",
                        "worker",
                        [*command, "worker"],
                        environ,
                        workdir / f"worker-{n + 1}.log",
                    )
                )
            for member in members:
                member.start()
            await asyncio.gather(*(m.until_ready(session) for m in members))

            where = workdir / "nginx"
            nginx_port = free_port()
            replicas = [m.port for m in members if m.port is not None]
            (where / "depositd.conf").write_text(nginx_site(nginx_port, replicas))
            (where / "nginx.conf").write_text(nginx_main(where))
            nginx = _spawn(
                [NGINX, "-p", str(where), "-c", str(where / "nginx.conf"), "-g", "daemon off;"],
                where / "stderr.log",
            )
            started.append(nginx)
            await _until_port(nginx_port, nginx, "nginx")
            say(
                f"cluster: nginx :{nginx_port}, {api_replicas} API replica(s)"
                f" {replicas}, {workers} worker(s), anvil :{anvil_port}, database {db.url.database}"
            )
            yield Cluster(
                workdir, db, merchant_id, api_key, f"http://127.0.0.1:{nginx_port}",
                f"http://127.0.0.1:{anvil_port}", members, dict(book.items()), session,
            )  # fmt: skip
        finally:
            for member in members:
                member.stop()
            for process in reversed(started):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            await db.dispose()


def _prepare(workdir: Path) -> None:
    if not Path(NGINX).exists():
        raise ChaosError(f"{NGINX} is missing: 'make test' installs nginx")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "nginx" / sub).mkdir(parents=True, exist_ok=True)


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out)  # noqa: S603 - our own tools


async def _merchant(db: Database) -> tuple[str, str]:
    from depositd.services import addresses, merchants

    merchant = await merchants.create_merchant(db, "chaos")
    await addresses.set_xpub(db, merchant.id, DEMO_XPUB)
    key = await merchants.create_api_key(db, merchant.id, "chaos")
    return merchant.id, key.secret


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))


# -- load: deposits on chain ----------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    tx_hash: str
    asset: str
    amount: int
    address: str


@dataclass
class Payer:
    """Sends ETH and USDT deposits to users' addresses at a steady average rate."""

    cluster: Cluster
    addresses: list[str]
    rng: random.Random
    timeline: Timeline
    per_second: float
    sent: list[Sent] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        async with EvmRpc(self.cluster.anvil_url) as rpc:
            while not stop.is_set():
                code = self.rng.choice(("ETH", "USDT"))
                asset = self.cluster.assets[code]
                # 0.002-0.05 ETH, 1-100 USDT, with ragged digits
                low, high = (2 * 10**15, 5 * 10**16) if code == "ETH" else (10**6, 10**8)
                amount = self.rng.randint(low, high)
                to = self.rng.choice(self.addresses)
                try:
                    tx_hash = await pay(rpc, asset, to, amount)
                except RpcError as exc:
                    self.timeline.error("payer", f"{type(exc).__name__}: {exc}")
                else:
                    self.sent.append(Sent(tx_hash.lower(), code, amount, to))
                await sleep_unless(stop, self.rng.expovariate(self.per_second))

    async def failed_on_chain(self) -> list[Sent]:
        """Deposits whose transaction is not mined with status 1."""
        failed = []
        async with EvmRpc(self.cluster.anvil_url) as rpc:
            for sent in self.sent:
                receipt = await rpc.call("eth_getTransactionReceipt", sent.tx_hash)
                if receipt is None or receipt.get("status") != "0x1":
                    failed.append(sent)
        return failed


# -- load: provider callbacks ---------------------------------------------------------------


def signed_headers(event_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers, signed now by the ``standardwebhooks`` library."""
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(PROVIDER_SECRET).sign(event_id, now, body),
    }


@dataclass
class Provider:
    """A custody provider posting deposit callbacks through nginx: unique event ids, a
    pending one first for some deposits, some replayed; each retried until acknowledged."""

    cluster: Cluster
    users: list[str]
    rng: random.Random
    timeline: Timeline
    per_second: float
    replay_share: float
    #: share of deposits reported pending before they succeed
    pending_share: float = 0.3
    #: deposit id -> cents, for deposits whose "succeeded" callback was acknowledged
    succeeded: dict[str, int] = field(default_factory=dict)
    posted: int = 0
    acknowledged: int = 0
    retries: int = 0
    replays: int = 0
    #: answered 4xx: the callback itself was wrong (never expected)
    refused: list[str] = field(default_factory=list)
    #: deposits given up on at the deadline without an acknowledgement
    unacknowledged: int = 0
    acked_bodies: list[tuple[str, str]] = field(default_factory=list)
    give_up_at: float = float("inf")
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        """Start a deposit's callbacks at the rate until ``stop``; the started ones go on
        (retrying) until acknowledged or ``give_up_at``."""
        number = 0
        while not stop.is_set():
            number += 1
            self._spawn(self.deposit(f"pdep-{number}"))
            if self.acked_bodies and self.rng.random() < self.replay_share:
                self._spawn(self._replay(self.rng.choice(self.acked_bodies)))
            await sleep_unless(stop, self.rng.expovariate(self.per_second))
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def deposit(self, deposit_id: str) -> None:
        """Report one deposit (pending first, sometimes), each callback until acknowledged."""
        user, cents = self.rng.choice(self.users), self.rng.randint(100, 100_000)
        pending = self.rng.random() < self.pending_share
        states = ["PENDING", "CONFIRMED"] if pending else ["CONFIRMED"]
        for state in states:
            body = json.dumps(
                {
                    "event_id": f"evt-{uuid.uuid4().hex}",
                    "data": {
                        "id": deposit_id,
                        "customer": user,
                        "currency": "USD",
                        "amount": cents,
                        "state": state,
                    },
                },
                separators=(",", ":"),
            )
            event_id = json.loads(body)["event_id"]
            if not await self.post(event_id, body):
                return
            self.acked_bodies.append((event_id, body))
        self.succeeded[deposit_id] = cents

    async def _replay(self, callback: tuple[str, str]) -> None:
        self.replays += 1
        await self.post(*callback)

    async def post(self, event_id: str, body: str) -> bool:
        """Post until acknowledged (True); False if refused or given up."""
        url = f"{self.cluster.base_url}/v1/callbacks/custody"
        wait = 0.2
        self.posted += 1
        while True:
            try:
                async with self.cluster.session.post(
                    url,
                    data=body,
                    headers=signed_headers(event_id, body),
                    timeout=aiohttp.ClientTimeout(total=15),
                ) as answer:
                    text = await answer.text()
                    if answer.status == 200:
                        self.acknowledged += 1
                        return True
                    problem = f"callback answered {answer.status}: {text[:200]}"
                    if answer.status < 500:
                        self.refused.append(problem)
                        self.timeline.error("provider", problem)
                        return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"callback {type(exc).__name__}: {exc}"
            self.timeline.error("provider", problem)
            if time.monotonic() > self.give_up_at:
                self.unacknowledged += 1
                return False
            self.retries += 1
            await asyncio.sleep(wait)
            wait = min(2.0, wait * 2)


# -- webhook receivers and WebSocket clients ------------------------------------------------


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that drops repeats by ``webhook-id``."""

    name: str
    #: "normal", "flapping" (500 with Retry-After: 1 for 2 s of every 10 s) or "slow"
    behaviour: str
    rng: random.Random
    secret: str = ""
    url: str = ""
    endpoint_id: str = ""
    #: webhook-id -> 2xx answers given
    delivered: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    bad_signatures: int = 0
    last_at: float = 0.0
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400, text="bad signature")
        if self.behaviour == "flapping" and time.time() % 10 < 2:
            self.refused += 1
            return web.Response(status=500, headers={"Retry-After": "1"}, text="flapping")
        if self.behaviour == "slow":
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))
        self.delivered[request.headers["webhook-id"]] += 1
        self.last_at = time.monotonic()
        return web.Response(text="ok")

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.delivered.values())

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Listener:
    """A WebSocket client on /v1/ws through nginx, resuming with ``after=<last seq>``."""

    name: str
    cluster: Cluster
    timeline: Timeline
    seqs: list[int] = field(default_factory=list)
    last: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    connects: int = 0

    async def run(self) -> None:
        url = self.cluster.base_url.replace("http://", "ws://") + "/v1/ws"
        while True:
            try:
                async with self.cluster.session.ws_connect(
                    url, params={"after": str(self.last)}, headers=self.cluster.auth
                ) as ws:
                    self.connects += 1
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.TEXT:
                            self._take(json.loads(message.data))
                    self.timeline.error("websocket", f"{self.name} closed: {ws.close_code}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.timeline.error("websocket", f"{self.name}: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.3)

    def _take(self, message: dict[str, Any]) -> None:
        if message.get("type") in ("ready", "heartbeat"):
            return
        seq = int(message["seq"])
        if seq <= self.last:
            if seq in set(self.seqs[-1000:]):
                self.duplicates += 1
            else:
                self.out_of_order += 1
            return
        self.seqs.append(seq)
        self.last = seq


# -- the chaos ------------------------------------------------------------------------------


@dataclass
class Chaos:
    """SIGKILLs one running depositd process every few seconds and starts it again after
    ``restart_after``; its window lasts until it serves again, plus a grace."""

    cluster: Cluster
    timeline: Timeline
    rng: random.Random
    every: float
    restart_after: float
    kills: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    restarts: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self, stop: asyncio.Event) -> None:
        while True:
            await sleep_unless(stop, self.every * self.rng.uniform(0.5, 1.5))
            if stop.is_set():
                break
            candidates = self.candidates()
            if not candidates:
                continue
            victim = self.rng.choice(candidates)
            window = Window(victim.kind, victim.name, time.time())
            self.timeline.windows.append(window)
            victim.kill()
            self.kills[victim.kind] += 1
            task = asyncio.ensure_future(self._restart(victim, window))
            self.restarts.add(task)
            task.add_done_callback(self.restarts.discard)
        while self.restarts:
            await asyncio.gather(*list(self.restarts))

    def candidates(self) -> list[Member]:
        """The running processes, but never the last one of its kind still running: the
        soak tests failover between replicas and between workers, not a total outage. A
        process counts as running once its window is over: nginx keeps a restarted replica
        out of rotation for a few seconds after it failed to reach it."""
        now = time.time()
        down = {w.member for w in self.timeline.windows if w.end is None or w.end > now}
        members = [m for m in self.cluster.members if m.ready and m.name not in down]
        running = Counter(m.kind for m in members)
        size = Counter(m.kind for m in self.cluster.members)
        return [m for m in members if running[m.kind] > 1 or size[m.kind] == 1]

    async def _restart(self, victim: Member, window: Window) -> None:
        await asyncio.sleep(self.restart_after)
        victim.start()
        try:
            await victim.until_ready(self.cluster.session)
        except ChaosError as exc:
            self.failures.append(str(exc))
        window.end = time.time() + WINDOW_GRACE_SECONDS


# -- the soak and its checks ----------------------------------------------------------------


@dataclass
class Report:
    """What the soak did and what its final checks found."""

    figures: dict[str, Any] = field(default_factory=dict)
    #: check -> problems found (empty: it passed)
    checks: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(self.checks.values())

    def lines(self) -> list[str]:
        out = [f"  {name:<34} {value}" for name, value in self.figures.items()]
        for name, problems in self.checks.items():
            out.append(f"  {'ok  ' if not problems else 'FAIL'} {name}")
            out.extend(f"         {p}" for p in problems[:10])
            if len(problems) > 10:
                out.append(f"         … and {len(problems) - 10} more")
        return out


async def users_with_addresses(cluster: Cluster, count: int) -> dict[str, str]:
    """``count`` users made through the API, each with a deposit address on anvil."""
    found = {}
    for n in range(count):
        user = f"user-{n + 1}"
        await cluster.api("POST", "/v1/users", {"external_id": user})
        address = await cluster.api("POST", f"/v1/users/{user}/addresses", {"chain": "anvil"})
        found[user] = address["address"]
    return found


async def subscribe(cluster: Cluster, receiver: Receiver) -> None:
    created = await cluster.api("POST", "/v1/endpoints", {"url": receiver.url})
    receiver.secret, receiver.endpoint_id = created["secret"], created["id"]


async def soak(settings: Settings, workdir: Path, say: Callable[[str], None] = print) -> Report:
    """Run the soak for ``settings.seconds`` and check the books; the report says it all."""
    rng = random.Random(settings.seed)
    timeline = Timeline()
    report = Report()
    async with cluster(
        workdir, api_replicas=settings.api_replicas, workers=settings.workers, say=say
    ) as c:
        owners = await users_with_addresses(c, settings.load.users)
        receivers = [Receiver(n, n, random.Random(rng.random())) for n in
                     ("normal", "flapping", "slow")]  # fmt: skip
        listeners = [Listener(f"ws-{n}", c, timeline) for n in (1, 2)]
        for receiver in receivers:
            await receiver.start()
            await subscribe(c, receiver)
        listening = [asyncio.ensure_future(listener.run()) for listener in listeners]
        try:
            payer = Payer(c, list(owners.values()), random.Random(rng.random()), timeline,
                          settings.load.deposits_per_second)  # fmt: skip
            provider = Provider(c, list(owners), random.Random(rng.random()), timeline,
                                settings.load.callbacks_per_second,
                                settings.load.replay_share)  # fmt: skip
            chaos = Chaos(c, timeline, random.Random(rng.random()), settings.kill_every,
                          settings.restart_after)  # fmt: skip
            stop_load, stop_chaos = asyncio.Event(), asyncio.Event()
            began = time.time()
            say(f"soak: {settings.seconds:.0f} s, a kill every ~{settings.kill_every:g} s")
            paying = asyncio.ensure_future(payer.run(stop_load))
            posting = asyncio.ensure_future(provider.run(stop_load))
            killing = asyncio.ensure_future(chaos.run(stop_chaos))
            await progress(settings.seconds, payer, provider, chaos, say)
            stop_chaos.set()
            stop_load.set()
            ended = time.time()
            await killing
            await paying
            drain_started = time.monotonic()
            provider.give_up_at = drain_started + settings.drain_seconds / 2
            await posting
            say("chaos over; draining")
            settled = await drain(c, payer, provider, receivers, listeners,
                                  drain_started + settings.drain_seconds)  # fmt: skip
            drained_in = time.monotonic() - drain_started
        finally:
            for task in listening:
                task.cancel()
            await asyncio.gather(*listening, return_exceptions=True)
            for receiver in receivers:
                await receiver.stop()
        await check(report, c, timeline, payer, provider, receivers, listeners, chaos)
        if not settled:
            report.checks["drained within the bound"] = [
                f"not settled {settings.drain_seconds:.0f} s after the chaos"
            ]
        nginx = c.nginx_lines()
        window_seconds = timeline.covered("api", began, ended)
        report.figures = {
            "seconds of chaos": f"{ended - began:.0f}",
            "kills survived": f"{sum(chaos.kills.values())} (API {chaos.kills['api']},"
            f" worker {chaos.kills['worker']})",
            "API kill windows": f"{window_seconds:.0f} s of {ended - began:.0f} s",
            "deposits sent on chain": len(payer.sent),
            "provider deposits acknowledged": len(provider.succeeded),
            "callbacks in (posted / acked)": f"{provider.posted} / {provider.acknowledged}",
            "callback retries / replays": f"{provider.retries} / {provider.replays}",
            "webhooks out (2xx answers)": sum(sum(r.delivered.values()) for r in receivers),
            "webhook duplicates": ", ".join(f"{r.name} {r.duplicates}" for r in receivers),
            "flapping 500s answered": receivers[1].refused,
            "WebSocket events / connects": ", ".join(
                f"{w.name} {len(w.seqs)}/{w.connects}" for w in listeners
            ),
            "client errors (in / out windows)": f"{len(timeline.errors)} /"
            f" {len(timeline.outside('api'))}",
            "nginx 5xx (all)": sum(1 for _, status, _ in nginx if status >= 500),
            "callbacks recovered by the sweep": sum(
                m.log_text().count('"queued callbacks processed"') for m in c.members
            ),
            "error log lines (by event)": _log_errors(c.members),
            "drained in": f"{drained_in:.0f} s",
        }
        report.figures.update(await _figures(c))
    return report


async def progress(
    seconds: float, payer: Payer, provider: Provider, chaos: Chaos, say: Callable[[str], None]
) -> None:
    """Wait ``seconds``, saying how far it got every half minute."""
    began = time.monotonic()
    while (left := seconds - (time.monotonic() - began)) > 0:
        await asyncio.sleep(min(30.0, left))
        say(
            f"  {time.monotonic() - began:4.0f} s: {len(payer.sent)} sent,"
            f" {len(provider.succeeded)} callbacks acked, {sum(chaos.kills.values())} kills"
        )


async def drain(
    c: Cluster,
    payer: Payer,
    provider: Provider,
    receivers: list[Receiver],
    listeners: list[Listener],
    deadline: float,
) -> bool:
    """Wait (until ``deadline``) for every deposit credited, the outbox empty, every event
    at every receiver and WebSocket client; whether it all settled."""
    wanted_chain = {s.tx_hash for s in payer.sent}
    wanted_provider = set(provider.succeeded)
    while time.monotonic() < deadline:
        async with c.db.reader.connect() as conn:
            credited = (
                await conn.execute(
                    select(deposits.c.tx_hash, deposits.c.provider_deposit_id).where(
                        deposits.c.status == "credited"
                    )
                )
            ).all()
            pending = await conn.scalar(
                select(func.count()).select_from(deliveries).where(deliveries.c.status == "pending")
            )
            ids = set((await conn.execute(select(events.c.id))).scalars())
            last_seq = await conn.scalar(select(func.max(events.c.seq))) or 0
        chain_done = wanted_chain <= {(t or "").lower() for t, _ in credited}
        provider_done = wanted_provider <= {p for _, p in credited}
        delivered = all(ids <= set(r.delivered) for r in receivers)
        streamed = all(w.last >= last_seq for w in listeners)
        if chain_done and provider_done and not pending and delivered and streamed:
            return True
        await asyncio.sleep(0.5)
    return False


async def check(
    report: Report,
    c: Cluster,
    timeline: Timeline,
    payer: Payer,
    provider: Provider,
    receivers: list[Receiver],
    listeners: list[Listener],
    chaos: Chaos,
) -> None:
    """The final checks, straight from the tables."""
    async with c.db.reader.connect() as conn:
        rows = (await conn.execute(select(deposits))).mappings().all()
        posted = (
            await conn.execute(
                select(
                    ledger_entries.c.deposit_id,
                    func.count().filter(ledger_entries.c.amount > 0),
                    func.sum(ledger_entries.c.amount),
                )
                .join(accounts, accounts.c.id == ledger_entries.c.account_id)
                .where(accounts.c.user_id.is_not(None))
                .group_by(ledger_entries.c.deposit_id)
            )
        ).all()
        balances = dict(
            (
                await conn.execute(
                    select(accounts.c.asset, func.sum(accounts.c.balance))
                    .where(accounts.c.user_id.is_not(None))
                    .group_by(accounts.c.asset)
                )
            ).all()
        )
        seqs = list((await conn.execute(select(events.c.seq).order_by(events.c.seq))).scalars())
        ids = set((await conn.execute(select(events.c.id))).scalars())
        undelivered = (
            await conn.execute(
                select(deliveries.c.endpoint_id, deliveries.c.status, func.count())
                .where(deliveries.c.status != "delivered")
                .group_by(deliveries.c.endpoint_id, deliveries.c.status)
            )
        ).all()
    credits = {deposit: (int(count), int(total)) for deposit, count, total in posted}

    def credited_once(row: Any, amount: int, what: str) -> list[str]:
        count, total = credits.get(row["id"], (0, 0))
        if row["status"] != "credited" or count != 1 or total != amount:
            return [f"{what}: {row['status']}, credited {count} time(s), {total} of {amount}"]
        return []

    by_tx = {(r["tx_hash"] or "").lower(): r for r in rows if r["provider"] is None}
    by_provider = {r["provider_deposit_id"]: r for r in rows if r["provider"] is not None}
    chain_problems = [f"tx {s.tx_hash} ({s.asset} {s.amount}) not recorded"
                      for s in payer.sent if s.tx_hash not in by_tx]  # fmt: skip
    for sent in payer.sent:
        if sent.tx_hash in by_tx:
            chain_problems += credited_once(by_tx[sent.tx_hash], sent.amount, f"tx {sent.tx_hash}")
    chain_problems += [f"tx {s.tx_hash} failed on chain" for s in await payer.failed_on_chain()]
    unexpected = set(by_tx) - {s.tx_hash for s in payer.sent}
    chain_problems += [f"deposit of unknown tx {tx}" for tx in sorted(unexpected)]
    report.checks["chain deposits credited exactly once"] = chain_problems

    provider_problems = [f"{d} acknowledged, not recorded"
                         for d in provider.succeeded if d not in by_provider]  # fmt: skip
    for deposit_id, cents in provider.succeeded.items():
        if deposit_id in by_provider:
            provider_problems += credited_once(by_provider[deposit_id], cents, deposit_id)
    provider_problems += [
        f"{d} credited without an acknowledged success"
        for d, r in by_provider.items()
        if d not in provider.succeeded and r["status"] == "credited"
    ]
    provider_problems += provider.refused
    if provider.unacknowledged:
        provider_problems.append(f"{provider.unacknowledged} callbacks never acknowledged")
    report.checks["acknowledged callbacks credited exactly once"] = provider_problems

    expected = Counter[str]()
    for sent in payer.sent:
        expected[sent.asset] += sent.amount
    expected["USD"] += sum(provider.succeeded.values())
    report.checks["ledger totals = chain + provider totals"] = [
        f"{asset}: ledger {int(balances.get(asset) or 0)}, sent {expected[asset]}"
        for asset in sorted(set(expected) | set(balances))
        if int(balances.get(asset) or 0) != expected[asset]
    ]

    webhook_problems = [f"{r.name}: {len(ids - set(r.delivered))} event(s) never delivered"
                        for r in receivers if ids - set(r.delivered)]  # fmt: skip
    webhook_problems += [f"{r.name}: {r.bad_signatures} bad signature(s)"
                         for r in receivers if r.bad_signatures]  # fmt: skip
    webhook_problems += [f"endpoint {e}: {n} delivery(ies) {s}" for e, s, n in undelivered]
    report.checks["every event delivered to every endpoint"] = webhook_problems

    stream_problems = []
    for listener in listeners:
        if listener.seqs != seqs:
            missing = len(set(seqs) - set(listener.seqs))
            stream_problems.append(f"{listener.name}: {missing} missing of {len(seqs)}")
        if listener.duplicates or listener.out_of_order:
            stream_problems.append(f"{listener.name}: {listener.duplicates} duplicate(s),"
                                   f" {listener.out_of_order} out of order")  # fmt: skip
    report.checks["WebSocket clients complete, once, in order"] = stream_problems

    outside = timeline.outside("api")
    outside += [
        (moment, "nginx", f"{status} {request}")
        for moment, status, request in c.nginx_lines()
        if status >= 500 and not timeline.in_window(moment, "api")
    ]
    report.checks["no errors outside kill windows"] = [
        f"{_clock(moment)} {source}: {what[:160]!r}" for moment, source, what in sorted(outside)
    ]
    report.checks["every killed process came back"] = chaos.failures
    (c.workdir / "timeline.txt").write_text(timeline.describe())


def _clock(moment: float) -> str:
    return f"{datetime.fromtimestamp(moment, UTC):%H:%M:%S.%f}"[:-3]


def _log_errors(members: list[Member]) -> str:
    """Error-level log lines of every process, by event (alerts fire at error level)."""
    found: Counter[str] = Counter()
    for member in members:
        for line in member.log_text().splitlines():
            if '"level": "error"' in line or '"level": "critical"' in line:
                try:
                    found[str(json.loads(line).get("event"))[:60]] += 1
                except ValueError:
                    found["(not JSON)"] += 1
    return ", ".join(f"{event} {n}" for event, n in found.most_common()) or "none"


async def _figures(c: Cluster) -> dict[str, Any]:
    async with c.db.reader.connect() as conn:
        statuses = dict(
            (
                await conn.execute(
                    select(deposits.c.status, func.count()).group_by(deposits.c.status)
                )
            ).all()
        )
        event_count = await conn.scalar(select(func.count()).select_from(events))
    return {
        "deposits by status": ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())),
        "events": event_count,
    }


# -- throughput without kills ---------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    api_replicas: int
    workers: int
    #: callbacks acknowledged, and per second while the clients posted
    acknowledged: int
    acknowledged_per_second: float
    #: deposits credited per second, from the first request to the last credit
    credited_per_second: float
    #: events delivered to a webhook receiver per second, from the first request to the last
    delivered_per_second: float
    #: client errors (none expected without kills)
    errors: int


async def _until(ready: Callable[[], Any], deadline: float) -> float | None:
    """Poll ``ready`` (an async predicate) until true; the monotonic time it was, or None."""
    while time.monotonic() < deadline:
        if await ready():
            return time.monotonic()
        await asyncio.sleep(0.2)
    return None


async def throughput(
    workdir: Path,
    *,
    api_replicas: int,
    workers: int,
    seconds: float,
    clients: int = 32,
    say: Callable[[str], None] = print,
) -> Throughput:
    """``clients`` providers posting succeeded callbacks back to back for ``seconds``
    through nginx, no kills; one webhook receiver."""
    async with cluster(workdir, api_replicas=api_replicas, workers=workers, say=say) as c:
        owners = await users_with_addresses(c, 20)
        receiver = Receiver("normal", "normal", random.Random(1))
        await receiver.start()
        try:
            await subscribe(c, receiver)
            timeline = Timeline()
            provider = Provider(c, list(owners), random.Random(2), timeline, 1.0, 0.0, 0.0)
            began = time.monotonic()
            provider.give_up_at = began + seconds + 30

            async def client(number: int) -> None:
                sent = 0
                while time.monotonic() - began < seconds:
                    sent += 1
                    await provider.deposit(f"tdep-{number}-{sent}")

            await asyncio.gather(*(client(n) for n in range(clients)))
            posted_for = time.monotonic() - began
            wanted = len(provider.succeeded)

            async def all_credited() -> bool:
                async with c.db.reader.connect() as conn:
                    done = await conn.scalar(
                        select(func.count())
                        .select_from(deposits)
                        .where(deposits.c.status == "credited")
                    )
                return int(done or 0) >= wanted

            async def all_delivered() -> bool:
                async with c.db.reader.connect() as conn:
                    ids = set((await conn.execute(select(events.c.id))).scalars())
                return len(ids) >= wanted and ids <= set(receiver.delivered)

            deadline = time.monotonic() + 120
            credited_at = await _until(all_credited, deadline)
            delivered_at = await _until(all_delivered, deadline)
        finally:
            await receiver.stop()
    if credited_at is None or delivered_at is None:
        raise ChaosError("callbacks not credited or delivered within 120 s of the load")
    return Throughput(
        api_replicas,
        workers,
        provider.acknowledged,
        provider.acknowledged / posted_for,
        wanted / (credited_at - began),
        len(receiver.delivered) / (delivered_at - began),
        len(timeline.errors),
    )
