"""Signed provider callbacks per second through `depositd serve` on PostgreSQL, against the
same server answering a bare 200, and latency at a steady rate.

A fresh PostgreSQL database gets one merchant with --users users; `depositd serve` runs in a
process of its own on 127.0.0.1 with a provider "bench" (Standard Webhooks, one secret), and
its workers (the callback sweep among them). Every callback is unique (its own event id and
deposit id, a random user, an amount, status "succeeded") and signed beforehand with the
`standardwebhooks` library, so the load generator only sends. Then:

  floor     wrk (-t --threads, -c --connections, -d --seconds) on GET /healthz: the same
            server answering a bare 200 on another route
  ingest    wrk with a Lua script posting the pre-signed callbacks, each once, to
            /v1/callbacks/bench for as long; each is verified, stored and acknowledged, and
            its deposit credited right after (group commit). The rate that counts is the
            credited one: callbacks whose deposit was credited, over the time from the first
            request to the last credit
  steady    a Python client (aiohttp) posting --rate fresh callbacks per second on a fixed
            schedule for --steady-seconds: latency from send to acknowledgement, p50 / p99,
            and errors
  check     every callback acknowledged in the steady phase is stored, accepted and credited
            (by event id); in all, rows stored >= requests acknowledged (wrk cannot say which
            of its requests were in flight when it stopped), and deposits credited == unique
            callbacks accepted; no accepted callback is left unprocessed

wrk comes from Debian's package (`apt-get install wrk`). CPU seconds per phase are counted
for the server and PostgreSQL. Ratios compare figures of the same run; the machine is shared
and noisy.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 64] [--threads 2]
        [--rate 1000] [--steady-seconds 15] [--users 1000] [--processes 1] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import aiohttp
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from _common import CpuMeter, free_port, fresh_database, percentile, wait_for_port
from depositd.db.engine import Database
from depositd.db.tables import users as users_table
from depositd.ids import new_id
from depositd.services import merchants

SECRET = "whsec_" + base64.b64encode(b"bench-secret-0123456789abcdef").decode()
PATH = "/v1/callbacks/bench"
PROVIDER = """
[providers.bench]
merchant = "{merchant}"
scheme = "standard_webhooks"
ack = {{ status = 200, body = '{{"ok":true}}', content_type = "application/json" }}

[providers.bench.mapping]
event_id = "/id"
deposit_id = "/data/deposit"
user = "/data/user"
asset = "/data/asset"
amount = "/data/amount"
status = "/data/status"
statuses = {{ succeeded = "succeeded" }}
"""

#: wrk posts the pre-signed requests in a file, four lines each (id, timestamp, signature,
#: body), each thread every threads-th one, each once; past the end it says so and repeats
WRK_SCRIPT = """
local requests, next_index, step = {}, 1, 1
function setup(thread)
  thread:set("first", #THREADS + 1)
  table.insert(THREADS, thread)
end
THREADS = {}
function init(args)
  local lines = {}
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  for i = 1, #lines, 4 do
    requests[#requests + 1] = wrk.format("POST", args[2], {
      ["content-type"] = "application/json",
      ["webhook-id"] = lines[i],
      ["webhook-timestamp"] = lines[i + 1],
      ["webhook-signature"] = lines[i + 2],
    }, lines[i + 3])
  end
  next_index, step = first, tonumber(args[3])
end
function request()
  local r = requests[next_index]
  if r == nil then
    r = requests[1]
    wrapped = (wrapped or 0) + 1
  end
  next_index = next_index + step
  return r
end
"""


@dataclass
class Load:
    """Pre-signed callbacks."""

    merchant_id: str
    users: list[str]
    secret: Webhook

    def callback(self) -> tuple[str, str, str, str]:
        """(event id, timestamp, signature, body) of a fresh, unique callback."""
        event_id = f"evt_{uuid.uuid4().hex}"
        body = json.dumps(
            {
                "id": event_id,
                "data": {
                    "deposit": f"dep-{uuid.uuid4().hex}",
                    "user": random.choice(self.users),
                    "asset": "USDT",
                    "amount": f"{random.randint(1, 5000)}.{random.randint(0, 99):02d}",
                    "status": "succeeded",
                },
            },
            separators=(",", ":"),
        )
        now = datetime.now(UTC)
        return event_id, str(int(now.timestamp())), self.secret.sign(event_id, now, body), body


def config_file(directory: Path, merchant_id: str) -> Path:
    """The embedded defaults without a chain node to watch, plus the bench provider."""
    defaults = resources.files("depositd").joinpath("defaults.toml").read_text()
    defaults = re.sub(r"^(rpc_url|ws_url) = .*$", "", defaults, flags=re.MULTILINE)
    path = directory / "depositd.toml"
    path.write_text(defaults + PROVIDER.format(merchant=merchant_id))
    return path


def start_server(
    db: Database, config: Path, port: int, log: Path, processes: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DEPOSITD_DATABASE__URL": db.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        ),
        "DEPOSITD_PROVIDERS__BENCH__SECRETS": SECRET,
        "DEPOSITD_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "depositd.cli", "--config", str(config), "serve"]
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own command line
            [*command, "--port", str(port), "--processes", str(processes)],
            env=env,
            stdout=out,
            stderr=out,
        )


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    args: argparse.Namespace, url: str, script: Path | None = None, *script_args: str
) -> WrkResult:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s",
               "--latency"]  # fmt: skip
    if script is not None:
        command += ["-s", str(script), url, "--", *script_args]
    else:
        command.append(url)
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    out = done.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    assert total is not None, out
    seconds = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=seconds,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        p50_ms=_wrk_ms(out, "50%"),
        p99_ms=_wrk_ms(out, "99%"),
    )


def _wrk_ms(out: str, label: str) -> float:
    found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
    assert found is not None, out
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]


@dataclass
class Steady:
    sent: int
    acknowledged: list[str]
    errors: int
    latencies_ms: list[float]


async def steady_rate(port: int, load: Load, rate: int, seconds: float) -> Steady:
    """``rate`` fresh callbacks per second on a fixed schedule; latency of each answer."""
    total = int(rate * seconds)
    requests = [load.callback() for _ in range(total)]
    result = Steady(total, [], 0, [])
    url = f"http://127.0.0.1:{port}{PATH}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(at: float, event_id: str, stamp: str, signature: str, body: str) -> None:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            started = time.perf_counter()
            headers = {"content-type": "application/json", "webhook-id": event_id,
                       "webhook-timestamp": stamp, "webhook-signature": signature}  # fmt: skip
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok = False
            if ok:
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                result.acknowledged.append(event_id)
            else:
                result.errors += 1

        begin = time.perf_counter() + 0.5
        await asyncio.gather(
            *(one(begin + i / rate, *request) for i, request in enumerate(requests))
        )
    return result


async def wait_processed(db: Database, within_seconds: float = 120) -> None:
    deadline = time.monotonic() + within_seconds
    async with db.reader.connect() as conn:
        while True:
            left = await conn.scalar(
                text(
                    "SELECT count(*) FROM inbound_callbacks"
                    " WHERE outcome = 'accepted' AND processed_at IS NULL"
                )
            )
            if not left:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{left} accepted callbacks still unprocessed")
            await asyncio.sleep(0.2)
            await conn.rollback()


async def bench(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install wrk")
    async with fresh_database("postgresql") as db:
        merchant = await merchants.create_merchant(db, "bench")
        user_ids = [f"u{n}" for n in range(args.users)]
        async with db.writer.begin() as conn:
            await conn.execute(
                users_table.insert(),
                [
                    {
                        "id": new_id("usr"),
                        "merchant_id": merchant.id,
                        "external_id": user,
                        "created_at": datetime.now(UTC) - timedelta(hours=1),
                    }
                    for user in user_ids
                ],
            )
        load = Load(merchant.id, user_ids, Webhook(SECRET))
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            port = free_port()
            log = directory / "server.log"
            config = config_file(directory, merchant.id)
            server = start_server(db, config, port, log, args.processes)
            try:
                wait_for_port(port, server, "depositd serve")
                await asyncio.sleep(1.0)  # workers and pools up
                await measure(args, db, load, port, directory, server.pid)
            except Exception:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)


async def measure(
    args: argparse.Namespace, db: Database, load: Load, port: int, directory: Path, pid: int
) -> None:
    base = f"http://127.0.0.1:{port}"
    # enough unique callbacks for the whole ingest phase at up to 8,000/s
    count = int(8000 * args.seconds)
    print(f"signing {count:,} callbacks ...", flush=True)
    signed = [load.callback() for _ in range(count)]
    requests_file = directory / "requests.txt"
    requests_file.write_text("".join(f"{e}\n{t}\n{s}\n{b}\n" for e, t, s, b in signed))
    script = directory / "callbacks.lua"
    script.write_text(WRK_SCRIPT)
    cpu = CpuMeter({"server": pid})  # the server's processes are its children

    warm = run_wrk(argparse.Namespace(**{**vars(args), "seconds": 2}), f"{base}/healthz")
    assert warm.requests > 0
    cpu.lap(None)
    floor = run_wrk(args, f"{base}/healthz")
    cpu.lap("floor")
    async with db.reader.connect() as conn:
        first_request = await conn.scalar(text("SELECT now()"))
    ingest = run_wrk(args, f"{base}{PATH}", script, str(requests_file), PATH, str(args.threads))
    await wait_processed(db)
    cpu.lap("ingest")
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE outcome = 'accepted'),"
                    " count(*) FILTER (WHERE outcome = 'replayed'),"
                    " count(*) FILTER (WHERE result = 'credited'),"
                    " max(processed_at)"
                    " FROM inbound_callbacks"
                )
            )
        ).one()
    accepted, replayed, credited, last_credit = row
    credited_seconds = (last_credit - first_request).total_seconds()
    print(f"steady: {args.rate}/s for {args.steady_seconds} s (signing first) ...", flush=True)
    steady = await steady_rate(port, load, args.rate, args.steady_seconds)
    await wait_processed(db)
    cpu.lap("steady")
    async with db.reader.connect() as conn:
        totals = (
            await conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE outcome = 'accepted'),"
                    " count(*) FILTER (WHERE result = 'credited')"
                    " FROM inbound_callbacks"
                )
            )
        ).one()
        deposits_credited = await conn.scalar(
            text("SELECT count(*) FROM deposits WHERE status = 'credited'")
        )
        steady_rows = await conn.execute(
            text(
                "SELECT event_id, outcome, result FROM inbound_callbacks WHERE event_id = ANY(:ids)"
            ),
            {"ids": steady.acknowledged},
        )
        steady_found = {r.event_id: (r.outcome, r.result) for r in steady_rows}
    lost = sum(1 for e in steady.acknowledged if steady_found.get(e) != ("accepted", "credited"))
    ingest_acked = ingest.requests - ingest.non_2xx
    report(args, floor, ingest, accepted, replayed, credited, credited_seconds, steady,
           totals, deposits_credited, lost, ingest_acked, cpu)  # fmt: skip


def report(
    args: argparse.Namespace,
    floor: WrkResult,
    ingest: WrkResult,
    accepted: int,
    replayed: int,
    credited: int,
    credited_seconds: float,
    steady: Steady,
    totals: tuple[int, int, int],
    deposits_credited: int,
    lost: int,
    ingest_acked: int,
    cpu: CpuMeter,
) -> None:
    credited_rate = credited / credited_seconds
    stored, all_accepted, all_credited = totals
    acknowledged = ingest_acked + len(steady.acknowledged)
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, PostgreSQL, 2 cores,"
          f" depositd serve --processes {args.processes}")  # fmt: skip
    print(f"floor  GET /healthz            {floor.per_second:9,.0f} req/s  "
          f"p50 {floor.p50_ms:.2f} ms  p99 {floor.p99_ms:.2f} ms  errors {floor.non_2xx + floor.socket_errors}")  # fmt: skip  # noqa: E501
    print(f"ingest POST {PATH}  {ingest.per_second:9,.0f} acknowledged/s  "
          f"p50 {ingest.p50_ms:.2f} ms  p99 {ingest.p99_ms:.2f} ms  non-2xx {ingest.non_2xx}"
          f"  socket errors {ingest.socket_errors}")  # fmt: skip
    print(f"       accepted {accepted:,}, replayed {replayed:,} (requests past the signed set),"
          f" credited {credited:,} in {credited_seconds:.2f} s from the first request:"
          f" {credited_rate:,.0f} credited/s")  # fmt: skip
    print(f"       credited / floor: {credited_rate / floor.per_second:.1%}   "
          f"acknowledged / floor: {ingest.per_second / floor.per_second:.1%}")  # fmt: skip
    lat = steady.latencies_ms
    print(f"steady {args.rate}/s x {args.steady_seconds} s: sent {steady.sent:,},"
          f" acknowledged {len(steady.acknowledged):,}, errors {steady.errors};"
          f" latency p50 {percentile(lat, 50):.1f} ms  p99 {percentile(lat, 99):.1f} ms"
          f"  max {max(lat):.1f} ms")  # fmt: skip
    print(f"check  rows stored {stored:,} >= requests acknowledged {acknowledged:,}:"
          f" {stored >= acknowledged};  accepted {all_accepted:,} == credited callbacks"
          f" {all_credited:,} == deposits credited {deposits_credited:,}:"
          f" {all_accepted == all_credited == deposits_credited};"
          f"  steady acknowledged but not stored+credited (lost): {lost}")  # fmt: skip
    for phase in ("floor", "ingest", "steady"):
        lap = cpu.laps[phase]
        print(f"cpu    {phase:7s} wall {lap['wall']:6.2f} s  server {lap['server']:6.2f} s"
              f"  postgres {lap['postgres']:6.2f} s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="each wrk phase")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=int, default=1000, help="steady phase, callbacks/s")
    parser.add_argument("--steady-seconds", type=float, default=15)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=1, help="depositd serve --processes")
    parser.add_argument("--quick", action="store_true", help="a ~15 s smoke run")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.steady_seconds, args.rate = 3, 3, 200
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
