"""Helpers the benchmarks share: a throw-away database, CPU seconds per process, percentiles."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from depositd.db.engine import Database
from depositd.db.migrate import upgrade

#: an admin database on the PostgreSQL server: bench databases are created and dropped from
#: it, nothing is ever created in it
PG_URL = os.environ.get("DEPOSITD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.asynccontextmanager
async def fresh_database(engine: str, pool_size: int = 10) -> AsyncIterator[Database]:
    """An empty, migrated database on ``engine``, removed afterwards."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                await upgrade(db)
                yield db
            finally:
                await db.dispose()
        return
    admin = make_url(PG_URL)
    name = f"depositd_bench_{uuid.uuid4().hex[:8]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    db = Database(admin.set(database=name), pool_size=pool_size)
    try:
        await upgrade(db)
        yield db
    finally:
        await db.dispose()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Return once ``process`` accepts connections on 127.0.0.1:``port``; raise if it exits
    first or takes more than 20 s."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], p: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


class CpuMeter:
    """CPU seconds between laps of this process, of each peer process (with its children) and
    of PostgreSQL (every ``postgres`` process on the machine): who kept the cores busy."""

    def __init__(self, peers: Mapping[str, int]) -> None:
        """``peers``: name -> process id, for example ``{"anvil": pid}``."""
        self._peers = dict(peers)
        self.laps: dict[str, dict[str, float]] = {}
        self._last = self._now()

    def lap(self, name: str | None) -> None:
        """Close the current lap as ``name`` (None: not reported)."""
        now = self._now()
        if name is not None:
            self.laps[name] = {key: now[key] - self._last[key] for key in now}
        self._last = now

    def _now(self) -> dict[str, float]:
        # a peer may be a launcher running the real server as its child (the npm package's
        # anvil is node running the anvil binary): each peer counts with its descendants
        processes = {}  # pid: (parent pid, command, CPU seconds)
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                text = stat.read_text()
                command = text.split(" (", 1)[1].rsplit(") ", 1)[0]
                fields = text.rsplit(") ", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                processes[int(stat.parent.name)] = (int(fields[1]), command, cpu)
        now = {"wall": time.perf_counter(), "ours": time.process_time()}
        for name, root in self._peers.items():
            used, frontier = 0.0, {root}
            while frontier:
                used += sum(processes[pid][2] for pid in frontier if pid in processes)
                frontier = {pid for pid, (parent, _, _) in processes.items() if parent in frontier}
            now[name] = used
        postgres = [cpu for _, command, cpu in processes.values() if command == "postgres"]
        now["postgres"] = sum(postgres)
        return now
