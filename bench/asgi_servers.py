"""Compare uvicorn and granian serving the same tiny FastAPI app on 127.0.0.1.

Each server runs as a subprocess with one worker on a free local port. After a warm-up, a load
generator (wrk if installed, else an aiohttp client) drives GET /healthz and POST /echo for a
fixed time. The figures to trust are the ratios within one run: the load generator shares the
machine with the server, so absolute numbers move with whatever else the host is doing.

    .venv/bin/python bench/asgi_servers.py [--duration 8] [--warmup 2] [--connections 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

BENCH_DIR = Path(__file__).resolve().parent
HOST = "127.0.0.1"
APP_TARGET = "_asgi_app:app"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

ECHO_BODY = json.dumps(
    {
        "event_id": "evt_7f3a9c21",
        "deposit_id": "dep_5b8e0d44",
        "chain": "ethereum",
        "tx_hash": "0x" + "9f" * 32,
        "address": "0x" + "3c" * 20,
        "amount": "1250.000000",
        "confirmations": 12,
        "status": "confirmed",
        "occurred_at": "2025-01-01T12:34:56Z",
    },
    separators=(",", ":"),
).encode()


@dataclass(frozen=True)
class Endpoint:
    label: str
    method: str
    path: str
    body: bytes | None = None


ENDPOINTS = (
    Endpoint("GET", "GET", "/healthz"),
    Endpoint("POST", "POST", "/echo", ECHO_BODY),
)


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    #: responses that were not 200, plus connection errors and timeouts
    errors: int


@dataclass(frozen=True)
class ServerSpec:
    name: str
    #: arguments after ``python -m``, with ``{port}`` standing for the port chosen at start
    args: tuple[str, ...]

    def command(self, port: int) -> list[str]:
        return [sys.executable, "-m", *(arg.format(port=port) for arg in self.args)]


class LoadGenerator(Protocol):
    name: str

    def run(self, port: int, endpoint: Endpoint, seconds: int) -> LoadResult: ...


# --- servers -------------------------------------------------------------------------------


def granian_auto_loop() -> str:
    """The loop granian's ``--loop auto`` picks: the first importable of rloop, uvloop, winloop.

    Mirrors ``build_auto_loop`` in granian 2.x ``granian/_loops.py``.
    """
    for module in ("rloop", "uvloop", "winloop"):
        if importlib.util.find_spec(module) is not None:
            return module
    return "asyncio"


def server_specs() -> list[ServerSpec]:
    # fmt: off
    uvicorn = ServerSpec(
        "uvicorn (uvloop, httptools)",
        (
            "uvicorn", APP_TARGET,
            "--app-dir", str(BENCH_DIR),
            "--host", HOST,
            "--port", "{port}",
            "--workers", "1",
            "--loop", "uvloop",
            "--http", "httptools",
            "--log-level", "warning",
            "--no-access-log",
        ),
    )
    granian_args = (
        "granian",
        "--interface", "asgi",
        "--working-dir", str(BENCH_DIR),
        "--host", HOST,
        "--port", "{port}",
        "--workers", "1",
        "--log-level", "warning",
        "--no-access-log",
    )
    # fmt: on
    specs = [
        uvicorn,
        ServerSpec(f"granian (asgi, auto loop={granian_auto_loop()})", (*granian_args, APP_TARGET)),
    ]
    if importlib.util.find_spec("uvloop") is not None:
        specs.append(
            ServerSpec(
                "granian (asgi, --loop uvloop)", (*granian_args, "--loop", "uvloop", APP_TARGET)
            )
        )
    return specs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def request(port: int, endpoint: Endpoint, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if endpoint.body is not None else {}
        conn.request(endpoint.method, endpoint.path, body=endpoint.body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = request(port, ENDPOINTS[0], timeout=1.0)
            if status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"server not ready on port {port} after {READY_TIMEOUT_S:.0f} s")


def check_echo(port: int) -> None:
    """Fail before measuring if /echo does not return what it was sent."""
    status, body = request(port, ENDPOINTS[1])
    if status != 200 or json.loads(body) != json.loads(ECHO_BODY):
        raise RuntimeError(f"POST /echo answered {status}: {body[:200]!r}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    # The server leads its own process group (start_new_session), so signalling the group also
    # reaches worker processes that granian spawns.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # A worker that outlived its parent would keep the group alive; it gets no second chance.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(log: IO[bytes], lines: int = 15) -> str:
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def measure_server(
    spec: ServerSpec, generator: LoadGenerator, warmup_s: int, duration_s: int
) -> dict[str, LoadResult]:
    port = free_port()
    results: dict[str, LoadResult] = {}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv built from this file, no shell
            spec.command(port),
            cwd=BENCH_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_ready(proc, port)
            check_echo(port)
            for endpoint in ENDPOINTS:
                if warmup_s > 0:
                    generator.run(port, endpoint, warmup_s)
                result = generator.run(port, endpoint, duration_s)
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with code {proc.returncode} under load")
                results[endpoint.label] = result
                print(f"  {endpoint.label:<4} {format_result(result)}", flush=True)
        except Exception:
            print(f"  server log (last lines):\n{log_tail(log)}", file=sys.stderr)
            raise
        finally:
            stop_server(proc)
    return results


# --- load generators -----------------------------------------------------------------------

_WRK_DURATION_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkGenerator:
    name = "wrk"

    def __init__(self, wrk: str, connections: int, script_dir: Path) -> None:
        self.wrk = wrk
        self.connections = connections
        self.post_script = script_dir / "post.lua"
        assert b"]]" not in ECHO_BODY  # the body is embedded in a Lua long string
        self.post_script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{ECHO_BODY.decode()}]]\n"
        )

    def run(self, port: int, endpoint: Endpoint, seconds: int) -> LoadResult:
        argv = [
            self.wrk,
            "--threads",
            "1",
            "--connections",
            str(self.connections),
            "--duration",
            f"{seconds}s",
            "--timeout",
            "5s",
            "--latency",
        ]
        if endpoint.method == "POST":
            argv += ["--script", str(self.post_script)]
        argv.append(f"http://{HOST}:{port}{endpoint.path}")
        completed = subprocess.run(  # noqa: S603 - fixed argv, wrk found by shutil.which
            argv, capture_output=True, text=True, check=True, timeout=seconds + 30
        )
        return parse_wrk(completed.stdout)


def parse_wrk(output: str) -> LoadResult:
    def latency_ms(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match[1]) * _WRK_DURATION_UNITS_MS[match[2]]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    errors = 0
    if socket_errors := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(count) for count in socket_errors.groups())
    if non_2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non_2xx[1])
    return LoadResult(float(rate[1]), latency_ms("50"), latency_ms("99"), errors)


class AiohttpGenerator:
    """A closed-loop client: each of ``connections`` tasks sends its next request on reply.

    It is Python on the same two cores, so it saturates before a fast server does; compare
    servers only within one run.
    """

    name = "aiohttp"

    def __init__(self, connections: int) -> None:
        self.connections = connections

    def run(self, port: int, endpoint: Endpoint, seconds: int) -> LoadResult:
        loop_factory = None
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(self._drive(port, endpoint, seconds))

    async def _drive(self, port: int, endpoint: Endpoint, seconds: int) -> LoadResult:
        import aiohttp

        url = f"http://{HOST}:{port}{endpoint.path}"
        headers = {"Content-Type": "application/json"} if endpoint.body is not None else {}
        latencies: list[float] = []
        errors = 0
        connector = aiohttp.TCPConnector(limit=self.connections)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.perf_counter()
            deadline = started + seconds

            async def client() -> None:
                nonlocal errors
                while (sent := time.perf_counter()) < deadline:
                    try:
                        async with session.request(
                            endpoint.method, url, data=endpoint.body, headers=headers
                        ) as response:
                            await response.read()
                            ok = response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        ok = False
                    if ok:
                        latencies.append(time.perf_counter() - sent)
                    else:
                        errors += 1

            await asyncio.gather(*(client() for _ in range(self.connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        return LoadResult(
            len(latencies) / elapsed,
            percentile(latencies, 0.50) * 1000,
            percentile(latencies, 0.99) * 1000,
            errors,
        )


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile; NaN when nothing was measured."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def choose_generator(wanted: str, connections: int, script_dir: Path) -> LoadGenerator:
    wrk = shutil.which("wrk")
    if wanted == "wrk" and wrk is None:
        raise SystemExit("wrk requested but not installed (apt-get install -y wrk)")
    if wanted in ("auto", "wrk") and wrk is not None:
        return WrkGenerator(wrk, connections, script_dir)
    return AiohttpGenerator(connections)


# --- report --------------------------------------------------------------------------------


def format_result(result: LoadResult) -> str:
    errors = f"  errors {result.errors}" if result.errors else ""
    return (
        f"{result.requests_per_s:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms{errors}"
    )


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def print_table(measured: dict[str, dict[str, LoadResult]]) -> None:
    name_width = max(len(name) for name in measured)
    header = f"{'server':<{name_width}}"
    for endpoint in ENDPOINTS:
        header += f" | {endpoint.label + ' req/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
    print(header)
    print("-" * len(header))
    for name, results in measured.items():
        row = f"{name:<{name_width}}"
        for endpoint in ENDPOINTS:
            result = results.get(endpoint.label)
            if result is None:
                row += f" | {'failed':>11} {'':>7} {'':>7}"
            else:
                row += (
                    f" | {result.requests_per_s:>11.0f} {result.p50_ms:>7.2f} {result.p99_ms:>7.2f}"
                )
        print(row)


def print_ratios(measured: dict[str, dict[str, LoadResult]], baseline: str) -> None:
    base = measured.get(baseline, {})
    print("\nratio granian / uvicorn (req/s: above 1 favours granian; latency: below 1 does)")
    for name, results in measured.items():
        if name == baseline:
            continue
        parts = []
        for endpoint in ENDPOINTS:
            ours, theirs = results.get(endpoint.label), base.get(endpoint.label)
            if ours is None or theirs is None:
                parts.append(f"{endpoint.label} n/a")
                continue
            parts.append(
                f"{endpoint.label} req/s x{ours.requests_per_s / theirs.requests_per_s:.2f}"
                f" p50 x{ours.p50_ms / theirs.p50_ms:.2f} p99 x{ours.p99_ms / theirs.p99_ms:.2f}"
            )
        print(f"  {name}: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="measured seconds per endpoint")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds per endpoint")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--generator", choices=("auto", "wrk", "aiohttp"), default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="asgi-bench-") as script_dir:
        generator = choose_generator(args.generator, args.connections, Path(script_dir))
        print(f"date       {datetime.now(UTC).isoformat(timespec='seconds')}")
        print(
            f"machine    {os.cpu_count()} CPUs, {platform.platform()}, load generator on the "
            "same machine"
        )
        print(
            f"versions   python {platform.python_version()}, uvicorn {version('uvicorn')}, "
            f"granian {version('granian')}, fastapi {version('fastapi')}, "
            f"uvloop {version('uvloop')}, httptools {version('httptools')}"
        )
        print(
            f"generator  {generator.name}, {args.connections} connections, "
            f"{args.warmup} s warm-up + {args.duration} s measured per endpoint"
        )
        print(f"endpoints  GET /healthz, POST /echo with a {len(ECHO_BODY)}-byte JSON body\n")

        specs = server_specs()
        measured: dict[str, dict[str, LoadResult]] = {}
        for spec in specs:
            print(f"{spec.name}: python -m {' '.join(spec.args)}", flush=True)
            try:
                measured[spec.name] = measure_server(spec, generator, args.warmup, args.duration)
            except Exception as exc:
                print(f"  FAILED: {exc!r}", file=sys.stderr)
                measured[spec.name] = {}

    print()
    print_table(measured)
    print_ratios(measured, baseline=specs[0].name)


if __name__ == "__main__":
    main()
